"""Presentation-attack detection through the real API: an employee enrolled from a live NUAA frame is
recognised live; their printed-photo frame is refused under ``enforce`` and flagged under ``flag``, each
with its access-log row; /status and /metrics say so. The frames are read from the datasets root
(research use: never committed)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from facegate.components.core.paths import weights_root
from facegate.components.core.settings import load_settings
from facegate.components.embedding.backbones import make_backbone
from facegate.components.embedding.model import EmbeddingModel
from facegate.components.gallery import Gallery
from facegate.components.gallery.enrolment import EnrolmentStore
from facegate.components.recognition.recognizer import FaceRecognizer
from facegate.components.service.access_log import AccessLog
from facegate.components.service.facade import FaceGate
from facegate.components.web.api.app import create_app
from tests.conftest import shared_dataset

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (weights_root() / "minifasnet").is_dir(),
        reason=f"MiniFASNet weights not under {weights_root()} (set FACEGATE_WEIGHTS)",
    ),
]
KEY = "test-key"
H = {"X-API-Key": KEY}
TAU = 0.45  # dlib on YuNet chips: this subject's live frames ~0.1 apart, their printed photo ~0.2
ENROL, LIVE = "live/0001/0001_00_00_01_130.jpg", "live/0001/0001_00_00_01_138.jpg"
PRINT = "print/0001/0001_00_00_01_125.jpg"


@pytest.fixture(scope="module")
def recognizer():
    return FaceRecognizer(EmbeddingModel(make_backbone("dlib_resnet")), load_settings(), "pretrained-test")


def frame(rel: str) -> tuple[str, bytes, str]:
    path = shared_dataset("nuaa-dev") / rel
    return path.name, path.read_bytes(), "image/jpeg"


def client_for(mode: str, tmp_path, recognizer) -> TestClient:
    settings = load_settings().replace({"pad": {"mode": mode, "model": "minifasnet_pair"}})

    def new_gallery():
        return Gallery.new(128, recognizer.embedder_name, recognizer.embedder_version, tau=TAU, target_far=1e-3)

    gate = FaceGate(
        settings,
        store=EnrolmentStore(tmp_path / "gallery"),
        recognizer=recognizer,
        new_gallery=new_gallery,
        access_log=AccessLog(f"sqlite:///{tmp_path / 'access.db'}"),
    )
    return TestClient(create_app(gate, key=KEY))


def enrol(client: TestClient, employee_id: str, rel: str, **extra):
    return client.post(
        "/employees", data={"employee_id": employee_id, **extra}, files=[("images", frame(rel))], headers=H
    )


def identify(client: TestClient, rel: str) -> dict:
    r = client.post("/identify", files={"image": frame(rel)}, data={"entrance": "door-1"}, headers=H)
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    return max(faces, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))


def test_enforce_refuses_the_printed_photo(tmp_path, recognizer) -> None:
    with client_for("enforce", tmp_path, recognizer) as client:
        assert enrol(client, "E0001", ENROL).status_code == 201
        live = identify(client, LIVE)
        assert live["employee_id"] == "E0001" and live["decision"] == "recognized"
        assert live["liveness"]["label"] == "live" and live["liveness"]["score"] > live["liveness"]["threshold"]
        attack = identify(client, PRINT)
        assert attack["decision"] == "attack" and attack["employee_id"] is None and not attack["recognized"]
        assert attack["liveness"]["label"] == "attack"
        v = client.post("/verify", data={"employee_id": "E0001"}, files={"image": frame(PRINT)}, headers=H).json()
        assert v["decision"] == "attack" and not v["accepted"]
        rows = client.get("/access-log", params={"entrance": "door-1"}, headers=H).json()
        assert [(r["outcome"], r["liveness"], r["employee_id"]) for r in rows[::-1]][:2] == [
            ("recognized", "live", "E0001"),
            ("attack", "attack", None),
        ]
        assert rows[0]["liveness_threshold"] == pytest.approx(attack["liveness"]["threshold"])
        metrics = client.get("/metrics", headers=H).text
        assert 'facegate_presentation_attacks_total{kind="identify",mode="enforce"} 1.0' in metrics
        assert 'facegate_decisions_total{kind="verify",outcome="attack"} 1.0' in metrics
        pad = client.get("/status", headers=H).json()["pad"]
        assert pad["mode"] == "enforce" and pad["available"] and pad["model"] == "minifasnet_pair"
        refused = enrol(client, "E0001-photo", PRINT)  # a printed picture cannot become an enrolled face ...
        assert refused.status_code == 422 and refused.json()["code"] == "presentation_attack"
        assert enrol(client, "E0001-photo", PRINT, force="true").status_code == 201  # ... unless forced


def test_flag_recognises_and_flags_the_printed_photo(tmp_path, recognizer) -> None:
    with client_for("flag", tmp_path, recognizer) as client:
        assert enrol(client, "E0001", ENROL).status_code == 201
        assert identify(client, LIVE)["liveness"]["label"] == "live"
        attack = identify(client, PRINT)
        assert attack["employee_id"] == "E0001" and attack["decision"] == "recognized"
        assert attack["liveness"]["label"] == "attack"
        rows = client.get("/access-log", params={"entrance": "door-1"}, headers=H).json()
        assert [(r["outcome"], r["liveness"], r["employee_id"]) for r in rows[::-1]] == [
            ("recognized", "live", "E0001"),
            ("recognized", "attack", "E0001"),
        ]
        metrics = client.get("/metrics", headers=H).text
        assert 'facegate_presentation_attacks_total{kind="identify",mode="flag"} 1.0' in metrics


def test_missing_weights_under_enforce_fail_closed_and_status_says_why(tmp_path, recognizer, monkeypatch) -> None:
    monkeypatch.setenv("FACEGATE_WEIGHTS", str(tmp_path / "nowhere"))
    with client_for("enforce", tmp_path, recognizer) as client:
        assert enrol(client, "E0001", ENROL, force="true").status_code == 201  # forced: PAD not asked
        r = client.post("/identify", files={"image": frame(LIVE)}, headers=H)
        assert r.status_code == 503 and r.json()["code"] == "pad_unavailable"
        pad = client.get("/status", headers=H).json()["pad"]
        assert not pad["available"] and "2.7_80x80_MiniFASNetV2.pth" in pad["error"]
        assert "a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0" in pad["error"]
