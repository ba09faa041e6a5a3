"""GalleryManifest: a JSON round trip, strict parsing that names the file, threshold and model checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facegate.components.gallery import (
    FORMAT_VERSION,
    GalleryCorrupt,
    GalleryManifest,
    GalleryModelMismatch,
    InvalidGalleryInput,
)


def manifest() -> GalleryManifest:
    return GalleryManifest(embedder_name="dlib_resnet", embedder_version="3", dim=128, index_kind="ivf", tau=0.6)


def test_json_round_trip_is_exact_and_plain() -> None:
    m = manifest()
    text = m.to_json()
    assert GalleryManifest.from_json(text) == m
    data = json.loads(text)
    assert data["format_version"] == FORMAT_VERSION and data["index_kind_effective"] == "flat"
    assert list(data) == sorted(data)  # stable diffs between versions


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda d: d.update(surprise=1), "unknown manifest keys"),
        (lambda d: d.pop("dim"), "missing manifest keys"),
        (lambda d: d.update(dim=0), "dim must be a positive integer"),
        (lambda d: d.update(dim=True), "dim must be a positive integer"),
        (lambda d: d.update(format_version=FORMAT_VERSION + 1), "format_version"),
        (lambda d: d.update(index_kind="lsh"), "index_kind"),
        (lambda d: d.update(n_vectors=-1), "n_vectors must be a non-negative integer"),
        (lambda d: d.update(tau="0.6"), "tau must be a number or null"),
        (lambda d: d.update(embedder_version=3), "must be strings"),
    ],
)
def test_strict_parse_names_the_source_and_the_problem(change, problem: str) -> None:
    data = manifest().to_dict()
    change(data)
    with pytest.raises(GalleryCorrupt) as exc:
        GalleryManifest.from_dict(data, "g/v000001/manifest.json")
    assert exc.value.path == "g/v000001/manifest.json" and problem in str(exc.value)


def test_not_json_or_not_an_object() -> None:
    with pytest.raises(GalleryCorrupt, match="manifest.json: not valid JSON"):
        GalleryManifest.from_json("{not json")
    with pytest.raises(GalleryCorrupt, match="not a JSON object"):
        GalleryManifest.from_json("[1, 2]")


def test_threshold_is_checked_and_stored_as_plain_floats() -> None:
    m = manifest()
    m.set_threshold(np.float32(0.5), target_far=1e-3, achieved_far=np.float64(8e-4))
    assert (m.tau, m.target_far, m.achieved_far, m.achieved_tar) == (0.5, 1e-3, 8e-4, None)
    assert type(m.tau) is float and type(m.achieved_far) is float
    for bad in (-0.1, float("nan"), float("inf"), True, "0.5"):
        with pytest.raises(InvalidGalleryInput, match="^tau:"):
            m.set_threshold(bad)
    assert m.tau == 0.5


def test_check_model() -> None:
    m = manifest()
    m.check_model("dlib_resnet", "3")
    m.check_model("dlib_resnet")
    with pytest.raises(GalleryModelMismatch, match="built with dlib_resnet version 3.*mobilenet_v2 version 1"):
        m.check_model("mobilenet_v2", "1")
