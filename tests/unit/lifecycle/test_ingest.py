import json
import os

import pandas as pd
import pytest

from facegate.components.core.datasets import assign_identity_splits, parse_voc_boxes
from facegate.components.core.errors import DatasetError
from facegate.components.lifecycle.ingest import clip_boxes, ingest_source
from tests import images_factory as f

COMMON = dict(val_fraction=0.3, seed=7, max_pixels=50_000_000, min_side=16)


def make_folder(root, people=6, per_person=3):
    for p in range(people):
        for i in range(per_person):
            f.write_jpeg(root / f"person{p}" / f"{i}.jpg", seed=p * 100 + i)
    return root


def test_image_folder_manifest_and_links(tmp_path):
    src = make_folder(tmp_path / "src")
    res = ingest_source("people", "image_folder", src, tmp_path / "data", **COMMON)
    m = res.manifest
    assert len(m) == 18 and list(m.columns)[:4] == ["path", "source", "identity", "boxes"]
    assert set(m["split"]) <= {"train", "val"}
    assert (m.groupby("identity")["split"].nunique() == 1).all()  # identity-level split
    first = tmp_path / "data" / m["path"].iloc[0]
    assert first.is_file() and os.stat(first).st_ino == os.stat(src / "person0" / "0.jpg").st_ino
    assert (tmp_path / "data" / "people" / "manifest.parquet").is_file()


def test_bad_and_odd_files_quarantined_or_normalised(tmp_path):
    src = make_folder(tmp_path / "src", people=2, per_person=2)
    for name, (writer, _) in f.BAD_FILES.items():
        writer(src / "person0" / name)
    for name, writer in f.ODD_BUT_GOOD.items():
        writer(src / "person1" / name)
    res = ingest_source("people", "image_folder", src, tmp_path / "data", **COMMON)
    q = res.quarantine.set_index("path")
    expected = {f"people/_quarantine/person0/{n}": code for n, (_, code) in f.BAD_FILES.items()}
    assert q["code"].to_dict() == expected
    assert all((tmp_path / "data" / p).is_file() for p in expected)  # kept, not lost
    good = set(res.manifest["path"])
    assert {f"people/person1/{n}" for n in f.ODD_BUT_GOOD} <= good
    assert len(good) + len(q) == 4 + len(f.BAD_FILES) + len(f.ODD_BUT_GOOD)  # no row lost


def test_reingest_replaces_atomically(tmp_path):
    src = make_folder(tmp_path / "src", people=2, per_person=2)
    ingest_source("people", "image_folder", src, tmp_path / "data", **COMMON)
    res = ingest_source("people", "image_folder", src, tmp_path / "data", limit=2, **COMMON)
    assert len(res.manifest) == 2
    assert not any(p.name.startswith(".") for p in (tmp_path / "data").iterdir())


def test_duplicate_image_keeps_identities_in_one_split():
    m = pd.DataFrame(
        {
            "identity": [f"id{i}" for i in range(40) for _ in range(2)],
            "sha256": [f"h{i}_{j}" for i in range(40) for j in range(2)],
        }
    )
    m.loc[1, "sha256"] = "shared"
    m.loc[79, "sha256"] = "shared"  # id0 and id39 share one file
    split = assign_identity_splits(m, val_fraction=0.5, seed=3, min_train_images=2)
    assert split[m["identity"] == "id0"].iloc[0] == split[m["identity"] == "id39"].iloc[0]


def test_singletons_are_held_out():
    m = pd.DataFrame({"identity": ["a", "b", "b"], "sha256": ["1", "2", "3"]})
    split = assign_identity_splits(m, val_fraction=0.0001, seed=1, min_train_images=2)
    assert list(split) == ["val", "train", "train"]


def write_voc(root, stem, w, h, boxes):
    objs = "".join(
        f"<object><name>{lab}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
        f"<ymax>{d}</ymax></bndbox></object>"
        for lab, a, b, c, d in boxes
    )
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"{stem}.xml").write_text(
        f"<annotation><size><width>{w}</width><height>{h}</height></size>{objs}</annotation>"
    )
    f.write_jpeg(root / "images" / f"{stem}.jpg", w, h)


def test_voc_boxes_parsed_and_edge_overshoot_clipped(tmp_path):
    src = tmp_path / "voc"
    write_voc(src, "a", 64, 48, [("with_mask", 1, 2, 65, 30), ("without_mask", 10, 10, 20, 20)])
    write_voc(src, "b", 64, 48, [("with_mask", 1, 2, 80, 30)])
    (src / "annotations" / "c.xml").write_text("<annotation><object>")  # malformed
    f.write_jpeg(src / "images" / "c.jpg")
    res = ingest_source("masks", "voc", src, tmp_path / "data", **COMMON)
    m = res.manifest.set_index("path")
    a = json.loads(m.loc["masks/images/a.jpg", "boxes"])
    assert a[0]["xmax"] == 64.0 and a[1] == {
        "label": "without_mask",
        "xmin": 10.0,
        "ymin": 10.0,
        "xmax": 20.0,
        "ymax": 20.0,
    }
    assert json.loads(m.loc["masks/images/b.jpg", "boxes"])[0]["xmax"] == 80.0  # left for validation
    assert res.clipped_boxes == ["masks/images/a.jpg#0"]
    assert res.quarantine["code"].tolist() == ["bad_annotation"]


def test_clip_boxes_tolerance():
    out, clipped = clip_boxes([{"label": "x", "xmin": -0.5, "ymin": 0, "xmax": 10, "ymax": 11}], 10, 10, 1)
    assert out[0]["xmin"] == 0 and out[0]["ymax"] == 10 and clipped == [0]


def test_missing_sources_raise_named_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        ingest_source("x", "image_folder", tmp_path / "nope", tmp_path / "d", **COMMON)
    (tmp_path / "lfwish").mkdir()
    with pytest.raises(DatasetError, match="pairs.txt"):
        ingest_source("x", "lfw", tmp_path / "lfwish", tmp_path / "d", **COMMON)
    with pytest.raises(DatasetError, match="annotation missing"):
        parse_voc_boxes(tmp_path / "none.xml")
