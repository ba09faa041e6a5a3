import dataclasses

import pytest

from components import weights
from components.errors import WeightsError


def test_every_weight_file_found_and_verified():
    paths = weights.verify_all()
    assert set(paths) == set(weights.WEIGHTS)


def test_sha_mismatch_is_refused(monkeypatch):
    spec = weights.WEIGHTS["mtcnn_pnet"]
    monkeypatch.setitem(weights.WEIGHTS, "tampered", dataclasses.replace(spec, sha256="0" * 64))
    with pytest.raises(WeightsError, match="does not match"):
        weights.weight_path("tampered")


def test_unknown_name_and_package(monkeypatch):
    with pytest.raises(WeightsError, match="unknown weight file"):
        weights.weight_path("nope")
    monkeypatch.setitem(weights.WEIGHTS, "ghost", weights.WeightFile("no_such_pkg_xyz", "a", "0", "x"))
    with pytest.raises(WeightsError, match="not installed"):
        weights.weight_path("ghost")
