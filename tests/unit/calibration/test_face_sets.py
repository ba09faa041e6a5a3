"""Face sets read straight from folders (calibration, its benchmark): the ingest's identity split,
VOC boxes as stranger crops, subsets and detected rows, ``--set`` specs."""

from __future__ import annotations

import numpy as np
import pytest

from facegate.components.calibration.face_sets import FaceSet, crop_box, image_folder_set, lfw_set, voc_face_set
from facegate.components.calibration.store import parse_set
from facegate.components.core.errors import DatasetError
from tests.images_factory import write_jpeg


def test_crop_box_keeps_context_and_scales_the_face():
    pixels = np.zeros((100, 200, 3), np.uint8)
    pixels[40:60, 90:110] = 255  # a 20 px "face"
    crop = crop_box(pixels, {"xmin": 90, "ymin": 40, "xmax": 110, "ymax": 60}, context=2.0, face_px=50)
    assert crop.shape == (100, 100, 3)
    assert crop[50, 50].min() == 255 and crop[5, 5].max() == 0  # the face in the middle, context around
    edge = crop_box(pixels, {"xmin": 0, "ymin": 0, "xmax": 20, "ymax": 20}, context=2.0, face_px=20)
    assert edge.shape == (40, 40, 3)  # past the image edge: replicated, same size


def test_lfw_split_is_the_ingest_rule(tmp_path):
    import pandas as pd

    from facegate.components.core.datasets import assign_identity_splits

    for person, n in (("Ann", 3), ("Bob", 1), ("Cid", 2), ("Dee", 4)):
        for i in range(n):
            write_jpeg(tmp_path / person / f"{person}_{i + 1:04d}.jpg", seed=10 * ord(person[0]) + i)
    (tmp_path / "pairs.txt").write_text("1 1\n")
    fs = lfw_set(tmp_path, seed=7, val_fraction=0.5)
    table = pd.DataFrame({"identity": fs.identities, "sha256": fs.hashes})
    assert list(fs.split) == list(assign_identity_splits(table, 0.5, 7, 2))
    assert fs.split[list(fs.identities).index("Bob")] == "val"  # one image: held out, as at ingest


def test_image_folder_voc_faces_rows_and_subset(tmp_path):
    for person in ("s1", "s2"):
        for i in range(2):
            write_jpeg(tmp_path / "orl" / person / f"{i}.jpg", seed=i)
    fs = image_folder_set(tmp_path / "orl")
    assert len(fs) == 4 and list(fs.identities) == ["s1", "s1", "s2", "s2"]
    fs.fallback = np.array([False, True, False, False])
    assert fs.rows().tolist() == [0, 2, 3] and fs.rows(fs.identities == "s2").tolist() == [2, 3]
    sub = fs.subset(np.array([2, 3]))
    assert len(sub) == 2 and sub.chips is None and list(sub.identities) == ["s2", "s2"]

    voc = tmp_path / "voc"
    write_jpeg(voc / "images" / "a.jpg", w=200, h=150)
    (voc / "annotations").mkdir(parents=True)
    (voc / "annotations" / "a.xml").write_text(
        "<annotation><object><name>with_mask</name><bndbox><xmin>10</xmin><ymin>10</ymin><xmax>70</xmax>"
        "<ymax>80</ymax></bndbox></object><object><name>without_mask</name><bndbox><xmin>100</xmin>"
        "<ymin>20</ymin><xmax>110</xmax><ymax>30</ymax></bndbox></object></annotation>"
    )
    faces = voc_face_set(voc, tmp_path / "cache", min_side=40)
    assert len(faces) == 1 and faces.meta["labels"] == ["with_mask"]  # the 10 px box is left out
    assert faces.paths[0].is_file() and len(set(faces.identities)) == 1
    with pytest.raises(DatasetError):
        voc_face_set(voc, tmp_path / "cache", min_side=500)


def test_set_specs():
    assert parse_set("orl=image_folder:orl") == ("orl", "image_folder", "orl")
    assert parse_set("more=lfw:/data/lfw") == ("more", "lfw", "/data/lfw")
    for bad in ("orl", "orl=folder:orl", "orl=image_folder:", "masks=voc_faces:facemask"):
        with pytest.raises(DatasetError):
            parse_set(bad)
    assert isinstance(FaceSet("x", [], [], np.array([])), FaceSet)
