"""The GX suites on tiny generated manifests: each defect is caught and named by row."""

import json
from pathlib import Path

import pandas as pd
import pytest

from facegate.components.core.settings import load_settings
from facegate.components.lifecycle.ingest import ingest_source
from facegate.components.lifecycle.validation import validate_manifest
from tests import images_factory as f

CFG = load_settings(overrides={"images": {"min_side": 16}})  # validation reads images.min_side, detection.classes
NO_QUARANTINE = pd.DataFrame(columns=["path", "source", "code", "reason"])


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    root = tmp_path_factory.mktemp("people")
    for p in range(4):
        for i in range(3):
            f.write_jpeg(root / "src" / f"p{p}" / f"{i}.jpg", seed=p * 10 + i)
    res = ingest_source(
        "people", "image_folder", root / "src", root / "data", val_fraction=0.5, seed=2, max_pixels=10**8, min_side=16
    )
    return root / "data", res.manifest


def failures_by_type(report):
    return {(x.expectation, x.kwargs.get("column") or x.kwargs.get("column_A")): x for x in report.failures}


def test_clean_identity_manifest_passes(people, tmp_path):
    data, manifest = people
    report = validate_manifest("people", "image_folder", manifest, NO_QUARANTINE, data, CFG, tmp_path / "gx")
    assert report.success, report.describe()
    assert report.expectations >= 15
    assert report.data_docs and (tmp_path / "gx").exists()


def test_identity_defects_named_by_row(people, tmp_path):
    data, manifest = people
    m = manifest.copy()
    ident = m["identity"].iloc[0]
    rows = m.index[m["identity"] == ident]
    m.loc[rows[0], "split"] = "val" if m.loc[rows[0], "split"] == "train" else "train"  # identity in two splits
    train_rows = m.index[m["split"] == "train"]
    lonely = m.loc[train_rows[-1]].copy()
    lonely["identity"], lonely["path"] = "lonely", "people/lonely/0.jpg"
    m = pd.concat([m, lonely.to_frame().T], ignore_index=True)  # training identity with one image (file missing)
    m["width"] = m["width"].astype("int64")
    m["height"] = m["height"].astype("int64")
    m.loc[1, "width"] = 8  # too small
    report = validate_manifest("people", "image_folder", m, NO_QUARANTINE, data, CFG, tmp_path / "gx")
    assert not report.success
    fails = failures_by_type(report)
    two_splits = fails[("expect_column_values_to_be_between", "identity_split_count")]
    assert all(r.startswith(f"people/{ident}/") for r in two_splits.rows) and two_splits.unexpected_count == 3
    assert fails[("expect_column_values_to_be_between", "train_identity_images")].rows == ["people/lonely/0.jpg"]
    assert fails[("expect_column_values_to_be_in_set", "file_ok")].rows == ["people/lonely/0.jpg"]
    assert fails[("expect_column_values_to_be_between", "width")].rows == [m.loc[1, "path"]]
    assert "people/lonely/0.jpg" in report.describe()


def test_duplicate_bytes_across_splits(people, tmp_path):
    data, manifest = people
    m = manifest.copy()
    train = m.index[m["split"] == "train"][0]
    val = m.index[m["split"] == "val"][0]
    m.loc[val, "sha256"] = m.loc[train, "sha256"]
    report = validate_manifest("people", "image_folder", m, NO_QUARANTINE, data, CFG, tmp_path / "gx")
    fails = failures_by_type(report)
    assert set(fails[("expect_column_values_to_be_between", "sha256_split_count")].rows) == {
        m.loc[train, "path"],
        m.loc[val, "path"],
    }


def test_detection_defects_named_by_box(tmp_path):
    data = tmp_path / "data"
    for stem in "abc":
        f.write_jpeg(data / "masks" / "images" / f"{stem}.jpg", 64, 48)
    import hashlib

    def row(stem, boxes):
        p = data / "masks" / "images" / f"{stem}.jpg"
        return {
            "path": f"masks/images/{stem}.jpg",
            "source": "masks",
            "identity": None,
            "boxes": json.dumps(boxes),
            "split": "train",
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
            "width": 64,
            "height": 48,
            "format": "JPEG",
        }

    ok = {"label": "with_mask", "xmin": 1, "ymin": 1, "xmax": 20, "ymax": 20}
    m = pd.DataFrame(
        [
            row("a", [ok, {**ok, "xmax": 90}, {**ok, "label": "hat"}]),  # outside the image; unknown class
            row("b", [{**ok, "xmin": 30, "xmax": 30}]),  # zero area
            row("c", []),  # no box at all
        ]
    )
    report = validate_manifest("masks", "voc", m, NO_QUARANTINE, data, CFG, tmp_path / "gx")
    assert not report.success
    fails = failures_by_type(report)
    assert fails[("expect_column_pair_values_a_to_be_greater_than_b", "width")].rows == ["masks/images/a.jpg#1"]
    assert fails[("expect_column_values_to_be_in_set", "label")].rows == ["masks/images/a.jpg#2"]
    assert fails[("expect_column_pair_values_a_to_be_greater_than_b", "xmax")].rows == ["masks/images/b.jpg#0"]
    assert fails[("expect_column_values_to_be_between", "n_boxes")].rows == ["masks/images/c.jpg"]


def test_gx_project_folders_do_not_pile_up(people, tmp_path):
    """Each run's GX project is removed afterwards, whether the suite ran, failed, or raised."""
    from facegate.components.lifecycle.validation import gx_project

    data, manifest = people
    state = tmp_path / "state"
    for _ in range(2):
        with gx_project(state) as root:
            assert root.parent == state and not any(root.iterdir())
            report = validate_manifest("people", "image_folder", manifest, NO_QUARANTINE, data, CFG, root)
            assert report.data_docs and Path(report.data_docs).is_dir()
        assert not root.exists()
    with pytest.raises(RuntimeError), gx_project(state) as root:
        raise RuntimeError("a failing run")
    assert not root.exists() and list(state.iterdir()) == []
