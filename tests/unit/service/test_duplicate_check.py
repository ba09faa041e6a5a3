"""The enrolment duplicate check at gallery scale (issue 28), through FaceGate.enrol: the real gallery, the
real thresholds (stored sketch, the gallery's own pairs, identification arithmetic), generated faces.

Each generated person is a random unit vector in 128 dimensions; the model's stored calibration is the
impostor distances of 3,000 other generated people, as ``facegate calibrate`` would store them. A fake
recognizer maps a photo (its first pixel encodes a number) to that number's vector."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from facegate.components.calibration.store import ModelCalibration, SetScores, pretrained_file
from facegate.components.calibration.thresholds import ScoreSketch, all_pair_distances
from facegate.components.core.errors import DuplicateFace
from facegate.components.core.settings import load_settings
from facegate.components.faces.types import FaceBox
from facegate.components.gallery.duplicates import find_duplicates
from facegate.components.gallery.enrolment import EnrolmentStore, Photo
from facegate.components.recognition.recognizer import FaceEmbedding
from facegate.components.service.calibrations import GalleryThresholds, calibrated_gallery
from facegate.components.service.facade import FaceGate
from facegate.components.service.gallery_changes import enrol_batch, read_batch

DIM = 128


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def photo(key: int, name: str | None = None) -> Photo:
    pixels = np.zeros((40, 40, 3), np.uint8)
    pixels[0, 0] = (key % 256, key // 256, 1)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return Photo(name or f"{key}.png", buf.getvalue())


class FakeRecognizer:
    embedder_name = "fake_backbone"
    embedder_version = "sha256:0123456789abcdef"
    embedding_dim = DIM

    def __init__(self, faces: np.ndarray) -> None:
        self.faces = faces

    def embed_one(self, pixels, source):
        r, g, _ = (int(v) for v in pixels[0, 0])
        return FaceEmbedding(FaceBox(0, 0, 40, 40), self.faces[r + 256 * g])

    def embed_all(self, pixels):
        return [self.embed_one(pixels, "frame")]


@pytest.fixture
def people(tmp_path, monkeypatch) -> np.ndarray:
    """400 generated faces (keys 0-399) and the model's stored calibration from 3,000 others."""
    rng = np.random.default_rng(28)
    monkeypatch.setenv("FACEGATE_CALIBRATIONS", str(tmp_path / "committed"))
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "state"))
    genuine_pairs = np.abs(rng.normal(0.5, 0.1, 20_000))
    _, impostor = all_pair_distances(unit(rng.standard_normal((3000, DIM))), np.arange(3000))
    scores = SetScores(
        "lfw", ScoreSketch.from_scores(impostor), ScoreSketch.from_scores(genuine_pairs, "high"), 3000, 3000
    )
    ModelCalibration(FakeRecognizer.embedder_name, FakeRecognizer.embedder_version, (scores,), detector="fake").save(
        pretrained_file(FakeRecognizer.embedder_name, FakeRecognizer.embedder_version)
    )
    return unit(rng.standard_normal((400, DIM)))


def gate(tmp_path, faces: np.ndarray) -> FaceGate:
    return FaceGate(load_settings(), store=EnrolmentStore(tmp_path / "gallery"), recognizer=FakeRecognizer(faces))


def second_photo_of(face: np.ndarray, distance: float, seed: int) -> np.ndarray:
    """Another photo of the same person: ``face`` moved by about ``distance`` in a random direction."""
    noise = np.random.default_rng(seed).standard_normal(DIM)
    noise -= (noise @ face) * face
    return unit(face + distance * noise / np.linalg.norm(noise))


def test_two_hundred_new_people_are_enrolled_and_a_returning_one_is_caught(tmp_path, people):
    """The enrolment decision (the service's duplicate rule, fresh for each gallery state, and the gallery
    search) for 200 new people one by one, in memory: storing 200 versions would test the disk, not the
    check. Then the whole FaceGate.enrol path refuses person 17's second photo under a new id."""
    faces = np.concatenate([people, second_photo_of(people[17], 0.5, 1)[None]])  # key 400: person 17 again
    settings, store = load_settings(), EnrolmentStore(tmp_path / "gallery")
    recognizer = FakeRecognizer(faces)
    gallery = calibrated_gallery(recognizer, settings, store, None, compute=False)
    refused = []
    for i in range(200):
        rule = GalleryThresholds(settings, store).duplicate_rule(gallery)
        refused += find_duplicates(gallery, faces[i][None], f"p{i:03d}", rule)
        gallery.add(f"p{i:03d}", f"Person {i}", faces[i][None], [""])
    assert refused == []  # not one false refusal at the default target (1e-3 of new people)
    gallery.save(store.index_dir)
    g = FaceGate(settings, store=store, recognizer=recognizer)
    with pytest.raises(DuplicateFace) as exc:
        g.enrol("p-new", "Someone new?", [photo(400, "again.png")])
    d = exc.value.details()
    assert d["other_id"] == "p017" and d["photo"] == "again.png" and exc.value.http_status == 409
    assert d["distance"] == pytest.approx(float(np.linalg.norm(faces[400] - faces[17])), abs=1e-4)
    assert d["distance"] <= d["tau"]
    assert d["false_alarm"] is not None and d["false_alarm"] < 1e-6  # no new person comes this close by chance
    rule = g.thresholds.duplicate_rule(g.gallery())
    assert rule.target == settings.gallery.duplicate_target == 1e-3
    assert d["tau"] == pytest.approx(rule.tau(200), abs=1e-6)
    assert rule.false_alarm(rule.tau(200), 200) <= 1e-3
    # today's rule, the 1:1 threshold against everyone, would have refused many of these 200 people
    one_to_one = g.verify_tau(g.gallery())
    dist = np.sqrt(np.maximum(2 - 2 * people[:200] @ people[:200].T, 0)) + np.triu(np.full((200, 200), 9.0))
    assert (dist.min(axis=1) <= one_to_one).sum() >= 5 and rule.tau(200) < one_to_one
    assert "p-new" not in g.gallery()
    g.enrol("p-new", "Twin, enrolled on purpose", [photo(400)], force=True)
    assert "p-new" in g.gallery()


def test_replacing_own_photos_and_adding_templates_are_never_duplicates(tmp_path, people):
    faces = np.concatenate([people, np.stack([second_photo_of(people[i], 0.3, i) for i in range(3)])])
    g = gate(tmp_path, faces)
    for i in range(3):
        g.enrol(f"p{i}", f"Person {i}", [photo(i)])
    g.enrol("p1", "Person 1", [photo(401)], replace=True)  # p1's new photo, very close to the old one
    g.enrol("p2", "Person 2", [photo(2), photo(402)], replace=True)  # one more template for p2
    assert g.gallery().employees().set_index("employee_id")["n_vectors"].to_dict() == {"p0": 1, "p1": 1, "p2": 2}
    with pytest.raises(DuplicateFace) as exc:  # the same face under another id still is one
        g.enrol("p1", "Person 1", [photo(400, "p0-again.png")], replace=True)
    assert exc.value.other_id == "p0" and "p0-again.png" in exc.value.message


def test_a_batch_reports_suspected_duplicates_apart_from_errors(tmp_path, people):
    """`enroll --from`'s report: a face already enrolled under another id is a suspected duplicate (the
    other id, distance, threshold, chance), not an error; ``force`` enrols it."""
    faces = np.concatenate([people, second_photo_of(people[0], 0.3, 5)[None]])
    folder = tmp_path / "starters"
    for eid, key in {"p0": 0, "p1": 1, "twin": 400, "bad id": 2}.items():
        (folder / eid).mkdir(parents=True)
        (folder / eid / f"{key}.png").write_bytes(photo(key).data)
    g = gate(tmp_path, faces)
    seen = []
    report = enrol_batch(g, read_batch(folder), on_row=seen.append)
    assert (report["enrolled"], report["duplicates"], report["failed"]) == (2, 1, 1) and seen == report["rows"]
    (dup,) = report["suspected_duplicates"]
    assert dup["employee_id"] == "twin" and dup["other_id"] == "p0" and dup["status"] == "duplicate"
    assert dup["distance"] <= dup["tau"] and dup["false_alarm"] is not None and "twin" in dup["message"]
    (err,) = report["errors"]
    assert err["employee_id"] == "bad id" and err["code"] == "invalid_employee"
    forced = enrol_batch(g, [r for r in read_batch(folder) if r.employee_id == "twin"], force=True)
    assert forced["enrolled"] == 1 and forced["suspected_duplicates"] == [] and "twin" in g.gallery()
