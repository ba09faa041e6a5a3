"""FaceGate with a stored model calibration: first gallery without computing anything, FAR estimates in
identify/verify answers, the duplicate-face check, the deployment-side recalibration, and a typed error
when the model has no calibration. A fake recognizer maps a photo's colour to its embedding."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from facegate.components.calibration.store import ModelCalibration, SetScores, pretrained_file
from facegate.components.calibration.thresholds import ScoreSketch
from facegate.components.core.errors import CalibrationMissing, DuplicateFace
from facegate.components.core.settings import load_settings
from facegate.components.faces.types import FaceBox
from facegate.components.gallery import Gallery
from facegate.components.gallery.duplicates import DuplicateRule, find_duplicates
from facegate.components.gallery.enrolment import EnrolmentStore, Photo
from facegate.components.recognition.recognizer import FaceEmbedding
from facegate.components.service.calibrations import gallery_impostor_scores
from facegate.components.service.facade import FaceGate

DIM = 8


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def face_of(colour: int) -> np.ndarray:
    """One 'person' per colour: a fixed direction in the embedding space."""
    return unit(np.random.default_rng(colour).normal(size=DIM))


def photo(colour: int, name: str = "p.png") -> Photo:
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), colour, np.uint8)).save(buf, "PNG")
    return Photo(name, buf.getvalue())


class FakeRecognizer:
    embedder_name = "fake_backbone"
    embedder_version = "sha256:0123456789abcdef"
    embedding_dim = DIM

    def embed_one(self, pixels, source):
        return FaceEmbedding(FaceBox(0, 0, 40, 40), face_of(int(pixels[0, 0, 0])))

    def embed_all(self, pixels):
        return [self.embed_one(pixels, "frame")]


def stored_calibration(impostor_scores) -> ModelCalibration:
    imp = ScoreSketch.from_scores(impostor_scores)
    gen = ScoreSketch.from_scores(np.linspace(0.1, 0.6, 500), dense="high")
    return ModelCalibration(
        FakeRecognizer.embedder_name,
        FakeRecognizer.embedder_version,
        (SetScores("lfw", imp, gen, 100, 30),),
        detector="fake",
    )


@pytest.fixture
def committed(tmp_path, monkeypatch):
    """A committed-calibration folder holding the fake model's file (as `facegate calibrate` writes it)."""
    folder = tmp_path / "committed"
    monkeypatch.setenv("FACEGATE_CALIBRATIONS", str(folder))
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "state"))
    stored_calibration(np.linspace(0.9, 1.7, 20_000)).save(
        pretrained_file(FakeRecognizer.embedder_name, FakeRecognizer.embedder_version)
    )
    return folder


def gate(tmp_path, settings=None) -> FaceGate:
    return FaceGate(
        settings or load_settings(), store=EnrolmentStore(tmp_path / "gallery"), recognizer=FakeRecognizer()
    )


def test_first_gallery_reads_the_stored_calibration_and_answers_carry_far_estimates(tmp_path, committed):
    g = gate(tmp_path)
    gallery = g.enrol("amy", "Amy", [photo(10)])
    assert gallery.manifest.tau == pytest.approx(
        stored_calibration(np.linspace(0.9, 1.7, 20_000)).calibration(1e-3).tau, abs=1e-6
    )
    assert (tmp_path / "gallery" / "calibration").is_dir()  # the copy beside the gallery
    g.enrol("raj", "Raj", [photo(20)])
    who = g.identify(np.full((40, 40, 3), 10, np.uint8)).to_dict()
    face = who["faces"][0]
    assert face["employee_id"] == "amy" and face["distance"] == pytest.approx(0.0, abs=1e-5)
    assert face["far_estimate"] == 0.0 and {"tau", "target_fpir", "mask", "distance"} <= set(face)
    stranger = g.identify(np.full((40, 40, 3), 99, np.uint8)).to_dict()["faces"][0]
    expected = g.impostor_scores(g.gallery()).fpir(stranger["distance"], 2)
    assert stranger["far_estimate"] == pytest.approx(expected, rel=1e-2)
    v = g.verify("raj", np.full((40, 40, 3), 10, np.uint8)).to_dict()
    assert not v["accepted"] and 0.0 <= v["far_estimate"] <= 1.0
    assert v["far_estimate"] == pytest.approx(g.impostor_scores(g.gallery()).far(v["distance"]), rel=1e-2)


def test_a_duplicate_face_under_another_id_is_refused_unless_forced(tmp_path, committed):
    g = gate(tmp_path)
    g.enrol("amy", "Amy", [photo(10)])
    with pytest.raises(DuplicateFace) as exc:
        g.enrol("amy2", "Amy again", [photo(30, "new.png"), photo(10, "same.png")])
    assert exc.value.other_id == "amy" and exc.value.http_status == 409 and "same.png" in exc.value.message
    assert "amy2" not in g.gallery()
    g.enrol("amy", "Amy", [photo(10)], replace=True)  # the same person re-enrolled: not a duplicate
    g.enrol("amy2", "Amy again", [photo(10)], force=True)
    assert {"amy", "amy2"} <= set(g.gallery().employees()["employee_id"])


def test_duplicate_faces_names_the_nearest_other_employee():
    gal = Gallery.new(DIM, "fake", "v1", tau=0.5)
    gal.add("amy", "Amy", face_of(10)[None], [""])
    gal.add("raj", "Raj", face_of(20)[None], [""])
    new = np.stack([face_of(20), face_of(30), face_of(10)])
    rule = DuplicateRule(None, 1e-3, fixed_tau=0.5)
    found = find_duplicates(gal, new, "newbie", rule)
    assert sorted((d.photo, d.other_id) for d in found) == [(0, "raj"), (2, "amy")]
    assert find_duplicates(gal, new, "raj", rule)[0].other_id == "amy"  # raj's own face is no duplicate
    assert find_duplicates(Gallery.new(DIM, "fake", "v1", tau=0.5), new, "x", rule) == []


def test_enough_enrolled_pairs_recalibrate_the_thresholds(tmp_path, committed):
    s = load_settings()
    s = s.model_copy(
        update={
            "gallery": s.gallery.model_copy(update={"recalibration_min_pairs": 10, "recalibration_prior_pairs": 10})
        }
    )
    cal = stored_calibration(np.linspace(1.2, 1.8, 20_000))  # stored impostors sit far away
    gal = Gallery.new(DIM, "fake", "v1", tau=cal.calibration(1e-3).tau, target_far=1e-3)
    rng = np.random.default_rng(0)
    for i in range(20):  # the deployment's people sit closer to each other than the stored impostors
        gal.add(f"e{i}", f"E{i}", unit(np.r_[3.0, rng.normal(size=DIM - 1)])[None], [""])
    plain = cal.impostors()
    blended = gallery_impostor_scores(gal, cal, s)
    assert blended.blended and blended.local_weight == pytest.approx(190 / 200)
    assert blended.tau_for_far(0.2) < plain.tau_for_far(0.2)  # 38 of the 190 local pairs speak for FAR 0.2
    assert blended.tau_for_far(1e-3) == plain.tau_for_far(1e-3)  # 0.19 pairs cannot speak for 1e-3
    few = Gallery.new(DIM, "fake", "v1", tau=0.5)
    few.add("a", "A", face_of(1)[None], [""])
    few.add("b", "B", face_of(2)[None], [""])
    assert not gallery_impostor_scores(few, cal, s).blended  # one pair: below min_pairs


def test_no_stored_calibration_is_a_typed_error_not_a_long_wait(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGATE_CALIBRATIONS", str(tmp_path / "none"))
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "state"))
    with pytest.raises(CalibrationMissing, match="facegate calibrate"):
        gate(tmp_path).enrol("amy", "Amy", [photo(10)])
