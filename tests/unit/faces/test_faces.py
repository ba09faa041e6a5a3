"""Detection, alignment and the one-face rules on real LFW photos (and a blank image)."""

import numpy as np
import pytest

from facegate.components.core.errors import MultipleFaces, NoFaceFound
from facegate.components.core.images import load_image
from facegate.components.faces.align import FaceAligner
from facegate.components.faces.chips import cached_chips
from facegate.components.faces.detectors import DETECTORS, make_detector
from facegate.components.faces.pipeline import FaceFinder
from tests.conftest import requires_dataset, shared_dataset


@pytest.fixture(scope="module")
def finder():
    return FaceFinder(make_detector("dlib_hog", upsample=0), FaceAligner())


@pytest.fixture(scope="module")
def lfw_faces():
    root = shared_dataset("lfw")
    return [
        load_image(root / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"),
        load_image(root / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg"),
    ]


def test_registry_and_unknown_detector():
    assert {"dlib_hog", "dlib_mmod"} <= set(DETECTORS)
    with pytest.raises(ValueError, match="unknown face detector"):
        make_detector("nope")


@requires_dataset("lfw")
def test_single_face_gives_aligned_chip(finder, lfw_faces):
    crop = finder.single_face(lfw_faces[0], "a.jpg")
    assert crop.chip.shape == (150, 150, 3) and crop.chip.dtype == np.uint8
    assert 60 < crop.box.right - crop.box.left < 160 and not crop.fallback


def test_no_face_is_a_typed_error(finder):
    with pytest.raises(NoFaceFound, match="blank.jpg"):
        finder.single_face(np.full((200, 200, 3), 127, np.uint8), "blank.jpg")


@requires_dataset("lfw")
def test_two_faces_is_a_typed_error_but_all_faces_finds_both(finder, lfw_faces):
    pair = np.concatenate(lfw_faces, axis=1)  # two people side by side
    with pytest.raises(MultipleFaces, match="2 faces"):
        finder.single_face(pair, "pair.jpg")
    assert len(finder.all_faces(pair)) == 2


@requires_dataset("lfw")
def test_centre_face_falls_back_to_centred_box(finder, lfw_faces):
    crop = finder.centre_face(np.full((250, 250, 3), 90, np.uint8))
    assert crop.fallback and crop.chip.shape == (150, 150, 3)
    pair = np.concatenate(lfw_faces, axis=1)
    chosen = finder.centre_face(pair[:, 125:500])  # the nearer face to the centre wins
    assert not chosen.fallback


@requires_dataset("lfw")
def test_chip_cache_reuses_and_keeps_bad_files(tmp_path):
    root = shared_dataset("lfw")
    files = [root / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg", tmp_path / "broken.jpg"]
    files[1].write_bytes(b"not a jpeg")
    first = cached_chips(tmp_path / "cache", files, ["h1", "h2"], detector="dlib_hog", upsample=0, workers=1)
    assert len(first) == 2 and first.table["error"].iloc[1].startswith(str(files[1]))
    again = cached_chips(tmp_path / "cache", files, ["h1", "h2"], detector="dlib_hog", upsample=0, workers=1)
    np.testing.assert_array_equal(first.chips, again.chips)
    assert len(list((tmp_path / "cache").glob("chips-*.npy"))) == 1


@requires_dataset("lfw")
def test_cascade_uses_the_cnn_only_where_hog_misses(lfw_faces):
    hard = load_image(shared_dataset("lfw") / "Abdoulaye_Wade" / "Abdoulaye_Wade_0003.jpg")
    hog, cascade = make_detector("dlib_hog", upsample=0), make_detector("hog_then_mmod", upsample=0)
    assert hog.detect(hard) == [] and len(cascade.detect(hard)) == 1
    assert cascade.detect(lfw_faces[0]) == hog.detect(lfw_faces[0])  # HOG's answer when it has one
