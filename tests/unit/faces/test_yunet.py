"""YuNet on real faces (boxes, 5 landmarks, the size policy, the cascade) and the two chip geometries
from one set of landmarks, the ArcFace one checked against OpenCV's own ``alignCrop``."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facegate.components.core.images import load_image
from facegate.components.core.paths import datasets_root
from facegate.components.core.weights import weight_path
from facegate.components.faces.align import (
    ARCFACE_TEMPLATE,
    FaceAligner,
    apply_transform,
    arcface_chip,
    similarity_transform,
)
from facegate.components.faces.detectors import DETECTORS, YuNetDetector, make_detector
from facegate.components.faces.types import FaceBox

LFW_PEOPLE = ("AJ_Cook", "George_W_Bush", "Serena_Williams", "Jean_Chretien", "Colin_Powell", "Laura_Bush")


def _dataset(name: str):
    path = datasets_root() / name
    if not path.is_dir():
        pytest.skip(f"dataset {name!r} not found under {datasets_root()} (set FACEGATE_DATASETS)")
    return path


@pytest.fixture(scope="module")
def lfw_images() -> list[np.ndarray]:
    lfw = _dataset("lfw")
    files = [sorted((lfw / p).glob("*.jpg"))[0] for p in LFW_PEOPLE if (lfw / p).is_dir()]
    if len(files) < 4:
        pytest.skip(f"fewer than 4 of {LFW_PEOPLE} under {lfw}")
    return [load_image(f) for f in files]


@pytest.fixture(scope="module")
def yunet() -> YuNetDetector:
    return YuNetDetector(0, score_threshold=0.6, max_side=1280)  # explicit: independent of params.yaml


def _centre_face(boxes: list[FaceBox], image: np.ndarray) -> FaceBox:
    h, w = image.shape[:2]
    return min(boxes, key=lambda b: (b.centre[0] - w / 2) ** 2 + (b.centre[1] - h / 2) ** 2)


def _opencv_row(box: FaceBox) -> np.ndarray:
    """A box back in FaceDetectorYN's 1 x 15 row layout, as alignCrop takes it."""
    return np.concatenate(
        [[box.left, box.top, box.right - box.left, box.bottom - box.top], box.landmarks.ravel(), [box.score]]
    ).astype(np.float32)


def test_registry_has_yunet_and_the_cascade():
    assert {"yunet", "yunet_then_hog"} <= set(DETECTORS)


def test_yunet_finds_each_lfw_face_with_landmarks_inside_its_box(lfw_images, yunet):
    for image in lfw_images:
        boxes = yunet.detect(image)
        assert boxes, "YuNet found no face in an LFW image"
        assert [b.score for b in boxes] == sorted((b.score for b in boxes), reverse=True)
        face = _centre_face(boxes, image)
        assert face.score >= 0.6 and 60 <= face.right - face.left <= 200  # LFW faces are ~100 px
        marks = face.landmarks
        assert marks.shape == (5, 2) and marks.dtype == np.float32
        assert (marks[:, 0] >= face.left).all() and (marks[:, 0] <= face.right).all()
        assert (marks[:, 1] >= face.top).all() and (marks[:, 1] <= face.bottom).all()
        right_eye, left_eye, nose, right_mouth, left_mouth = marks
        assert right_eye[0] < left_eye[0] and right_mouth[0] < left_mouth[0]  # the person's right: image left
        assert max(right_eye[1], left_eye[1]) < nose[1] < min(right_mouth[1], left_mouth[1])


def test_size_policy_maps_boxes_and_landmarks_back(lfw_images, yunet):
    image = lfw_images[0]
    big = cv2.resize(image, None, fx=8, fy=8, interpolation=cv2.INTER_LINEAR)  # 2000 x 2000
    assert yunet.scale_for(*big.shape[:2]) == pytest.approx(1280 / 2000)
    large = _centre_face(yunet.detect(big), big)
    # exactly what the network saw, found at scale 1 and mapped by hand
    seen = cv2.resize(big, (1280, 1280), interpolation=cv2.INTER_AREA)
    direct = _centre_face(yunet.detect(seen), seen)
    k = 2000 / 1280
    np.testing.assert_allclose(large.landmarks, direct.landmarks * k, rtol=1e-5, atol=1e-3)
    assert abs(large.left - direct.left * k) <= 2 and abs(large.bottom - direct.bottom * k) <= 2
    # and it is the same face as in the original: landmarks agree within a tenth of the eye distance
    small = _centre_face(yunet.detect(image), image)
    eye_distance = float(np.linalg.norm(small.landmarks[0] - small.landmarks[1]))
    assert np.abs(large.landmarks / 8.0 - small.landmarks).max() < 0.1 * eye_distance


def test_threads_and_frame_sizes_each_get_their_own_network(lfw_images, yunet):
    """Concurrent calls on frames of several sizes find what one thread finds alone (no shared OpenCV
    object between threads), and an instance is kept per size (no re-planning between sizes)."""
    from concurrent.futures import ThreadPoolExecutor

    frames = [lfw_images[0], cv2.resize(lfw_images[1], (320, 240)), lfw_images[2][:200], lfw_images[3]] * 3
    alone = [[(b.as_list(), b.landmarks.tolist()) for b in yunet.detect(f)] for f in frames]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(lambda f: [(b.as_list(), b.landmarks.tolist()) for b in yunet.detect(f)], frames))
    assert together == alone and all(alone)
    sizes = list(yunet._local.nets)  # this thread's (width, height) instances, most recent last
    assert sizes[-1] == (250, 250)  # earlier tests on this module-scoped detector may have left other sizes
    assert {(320, 240), (250, 200)} <= set(sizes) and len(sizes) <= yunet.CACHED_SIZES


def test_yunet_finds_several_faces_in_a_group_photo(yunet):
    photo = _dataset("faceapi-examples") / "bbt1.jpg"
    if not photo.is_file():
        pytest.skip(f"{photo} not found")
    assert len(yunet.detect(load_image(photo))) >= 3


def test_cascade_uses_hog_only_where_yunet_finds_nothing(lfw_images, monkeypatch):
    cascade = make_detector("yunet_then_hog", upsample=0, score_threshold=0.6, max_side=1280)
    image = lfw_images[0]
    first = cascade.detect(image)
    assert first and first[0].landmarks is not None  # YuNet's answer
    monkeypatch.setattr(cascade.yunet, "detect", lambda img: [])
    fallback = cascade.detect(image)
    assert fallback and all(b.landmarks is None for b in fallback)  # HOG's answer


def test_similarity_transform_recovers_a_known_one():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, (5, 2))
    angle, scale, shift = 0.3, 0.7, np.array([12.0, -5.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = similarity_transform(src, src @ rot.T + shift)
    np.testing.assert_allclose(matrix, np.hstack([rot, shift[:, None]]), atol=1e-9)


def test_arcface_chip_matches_opencv_align_crop(lfw_images, yunet):
    recognizer = cv2.FaceRecognizerSF.create(str(weight_path("sface_2021dec")), "")
    for image in lfw_images:
        face = _centre_face(yunet.detect(image), image)
        mine = arcface_chip(image, face.landmarks)
        theirs = recognizer.alignCrop(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), _opencv_row(face))[..., ::-1]
        assert mine.shape == theirs.shape == (112, 112, 3)
        diff = np.abs(mine.astype(int) - theirs.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.01  # float rounding of the same matrix only
        # the landmarks land on the template
        placed = apply_transform(similarity_transform(face.landmarks, ARCFACE_TEMPLATE), face.landmarks)
        assert np.abs(placed - ARCFACE_TEMPLATE).max() < 6.0


def test_one_face_both_geometries(lfw_images, yunet):
    aligner, hog = FaceAligner(), make_detector("dlib_hog", upsample=1)
    for image in lfw_images[:3]:
        face = _centre_face(yunet.detect(image), image)
        dlib_chip, arc_chip = aligner.both_chips(image, face)
        assert dlib_chip.shape == (150, 150, 3) and arc_chip.shape == (112, 112, 3)
        hog_face = _centre_face(hog.detect(image), image)
        # dlib's chip from YuNet's landmarks is dlib's chip from its own HOG box, near enough
        assert np.abs(dlib_chip.astype(int) - aligner.dlib_chip(image, hog_face)).mean() < 8
        # a box without landmarks still gets an ArcFace chip (template placed by dlib's 5 points)
        est = aligner.arcface_landmarks(image, hog_face)
        eye_distance = float(np.linalg.norm(face.landmarks[0] - face.landmarks[1]))
        assert np.abs(est[:2] - face.landmarks[:2]).max() < 0.2 * eye_distance  # eyes
    assert FaceAligner(geometry="arcface_112").chip(image, face).shape == (112, 112, 3)
    with pytest.raises(ValueError, match="unknown chip geometry"):
        FaceAligner(geometry="square_64")


def test_chip_cache_honours_geometry(lfw_images, tmp_path):
    from facegate.components.faces.chips import cached_chips

    files = []
    for i, image in enumerate(lfw_images[:2]):
        files.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(files[-1]), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    common = dict(detector="yunet", upsample=0, workers=1, detector_options={"score_threshold": 0.6, "max_side": 1280})
    dlib = cached_chips(tmp_path / "cache", files, ["a", "b"], **common)
    same = cached_chips(tmp_path / "cache", files, ["a", "b"], geometry="dlib_150", **common)
    arc = cached_chips(tmp_path / "cache", files, ["a", "b"], geometry="arcface_112", **common)
    assert dlib.key == same.key != arc.key  # the default geometry keeps the keys made before it existed
    assert dlib.chips.shape == (2, 150, 150, 3) and arc.chips.shape == (2, 112, 112, 3)
    assert not arc.table["fallback"].any()
