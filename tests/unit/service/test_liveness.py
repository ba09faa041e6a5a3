"""pad.mode in the door: off, flag and enforce on identify, verify and enrolment, with a stand-in PAD
model (the real one is tested in tests/unit/pad and through the API in tests/integration/test_pad_api.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from facegate.components.core.errors import PadUnavailable, PresentationAttack
from facegate.components.core.settings import load_settings
from facegate.components.faces.types import FaceBox
from facegate.components.pad.calibration import PadCalibration
from facegate.components.service.answers import Identification, IdentifiedFace, Verification
from facegate.components.service.liveness import LivenessCheck

BOXES = [FaceBox(0, 0, 10, 10), FaceBox(20, 0, 30, 10)]


@dataclass
class StubPad:
    """Scores read from the frame: pixel [0, 20 * i] is face i's live score in percent."""

    name: str = "stub"
    fingerprint: str = "stub"
    calibration: PadCalibration | None = PadCalibration(
        "stub", "stub", "stub set", tuple(np.arange(200) / 1000), (0.9, 0.95)
    )

    def score_faces(self, frame, boxes):
        return np.array([frame[0, b.left, 0] / 100.0 for b in boxes])

    def score(self, frame, box):
        return float(self.score_faces(frame, [box])[0])


def check(mode: str, model=None) -> LivenessCheck:
    settings = load_settings().replace({"pad": {"mode": mode, "target_apcer": 0.005}})
    return LivenessCheck(settings, model if model is not None else StubPad())


def frame(*percent: int) -> np.ndarray:
    pixels = np.zeros((12, 40, 3), np.uint8)
    for i, p in enumerate(percent):
        pixels[0, 20 * i, 0] = p
    return pixels


def identification() -> Identification:
    faces = [IdentifiedFace(b.as_list(), f"E{i}", f"N{i}", True, 0.3, 0.5, 0.01) for i, b in enumerate(BOXES)]
    return Identification(faces, 0.5, 0.01)


def test_threshold_comes_from_the_stored_calibration() -> None:
    live = check("flag").check(frame(90, 10), BOXES)  # 1 of 200 attacks may pass: threshold 0.198
    assert [lv.label for lv in live] == ["live", "attack"] and live[0].threshold == pytest.approx(0.198)


def test_off_answers_no_liveness_and_changes_nothing() -> None:
    c = check("off")
    live = c.check(frame(90, 10), BOXES)
    assert live == [None, None]
    result = c.judge_identification(identification(), live)
    assert [f.decision for f in result.faces] == ["recognized", "recognized"] and result.faces[0].liveness is None
    assert c.status()["available"] is False and "off" in c.status()["note"]


def test_flag_recognises_and_flags() -> None:
    c = check("flag")
    result = c.judge_identification(identification(), c.check(frame(90, 10), BOXES))
    assert [f.employee_id for f in result.faces] == ["E0", "E1"]
    assert [f.decision for f in result.faces] == ["recognized", "recognized"]
    assert [f.liveness["label"] for f in result.faces] == ["live", "attack"]


def test_enforce_never_recognises_an_attack() -> None:
    c = check("enforce")
    result = c.judge_identification(identification(), c.check(frame(90, 10), BOXES))
    live_face, attack = result.faces
    assert live_face.employee_id == "E0" and live_face.decision == "recognized"
    assert attack.employee_id is None and attack.name is None and not attack.recognized
    assert attack.decision == "attack" and attack.liveness == {
        "score": 0.1,
        "label": "attack",
        "threshold": pytest.approx(0.198),
    }
    answer = Verification("E1", True, 0.3, 0.5, 0.001)
    refused = c.judge_verification(answer, c.check(frame(10), BOXES[:1]))
    assert not refused.accepted and refused.decision == "attack"
    assert c.judge_verification(answer, c.check(frame(90), BOXES[:1])).decision == "accepted"


def test_unavailable_pad_fails_closed_under_enforce_and_says_why() -> None:
    no_calibration = StubPad(calibration=None)
    flag = check("flag", no_calibration)
    assert flag.check(frame(90), BOXES[:1]) == [None]
    status = flag.status()
    assert status["available"] is False and "no stored calibration" in status["error"]
    enforce = check("enforce", no_calibration)
    with pytest.raises(PadUnavailable, match="enforce"):
        enforce.check(frame(90), BOXES[:1])
    assert "refused" in enforce.status()["note"]


def test_enrolment_refuses_an_attack_photo_unless_forced(monkeypatch) -> None:
    class Recognizer:
        def embed_one(self, pixels, source):
            return type("Face", (), {"box": BOXES[0], "embedding": np.ones(4, np.float32)})()

    class Decoded:
        pixels, sha256, format = frame(10), "abc", "JPEG"

    monkeypatch.setattr("facegate.components.service.liveness.decode_image", lambda data, name, limit: Decoded)
    photo = type("Photo", (), {"name": "printed.jpg", "data": b""})()
    with pytest.raises(PresentationAttack, match="printed.jpg") as info:
        check("enforce").embed_checked(Recognizer(), [photo], 10**6)
    assert info.value.code == "presentation_attack" and info.value.http_status == 422
    embs, names = check("enforce").embed_checked(Recognizer(), [photo], 10**6, force=True)
    assert embs.shape == (1, 4) and names == ["abc.jpg"]
    assert check("flag").embed_checked(Recognizer(), [photo], 10**6)[1] == ["abc.jpg"]  # flag: enrolled


def test_status_when_available() -> None:
    status = check("enforce").status()
    assert status["available"] and status["mode"] == "enforce" and status["threshold"] == pytest.approx(0.198)
    assert status["expected_on_calibration"] == {"apcer": 0.005, "bpcer": 0.0}
