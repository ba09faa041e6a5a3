"""The confidence cascade as served, on real photos (faceapi-examples): the same answers as the full model,
the path that decided in each answer, in the access log and in /metrics."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from facegate.components.core.settings import load_settings
from facegate.components.lifecycle.model_loading import service_recognizer
from facegate.components.service.deployment import gallery_store
from facegate.components.service.facade import FaceGate
from facegate.components.web.api.app import create_app
from tests.conftest import requires_dataset, shared_dataset
from tests.integration.test_api import KEY, PEOPLE, enrol

pytestmark = [pytest.mark.integration, requires_dataset("faceapi-examples")]


def test_cascade_answers_as_the_full_model_and_says_which_path_decided(sandbox):
    from facegate.components.core.images import load_image

    settings = load_settings()
    assert settings.recognition.cascade == "on"
    recognizer = service_recognizer(settings)
    gate = FaceGate(settings, store=gallery_store(), recognizer=recognizer)
    full_only = FaceGate(
        settings.replace({"recognition": {"cascade": "off"}}), store=gallery_store(), recognizer=recognizer
    )
    examples = shared_dataset("faceapi-examples")
    with TestClient(create_app(gate, key=KEY)) as c:
        for person in PEOPLE:
            assert enrol(c, person).status_code == 201
        frame = examples / "bbt2.jpg"
        api = c.post(
            "/identify", files={"image": (frame.name, frame.read_bytes(), "image/jpeg")}, headers={"X-API-Key": KEY}
        ).json()
        metrics = c.get("/metrics", headers={"X-API-Key": KEY}).text
    assert {f["path"] for f in api["faces"]} <= {"cheap", "full"}
    assert "facegate_decision_paths_total" in metrics

    paths = []
    for person in PEOPLE:
        pixels = load_image(examples / person / f"{person}2.png")
        served, full = gate.identify(pixels), full_only.identify(pixels)
        assert [(f.employee_id, f.recognized) for f in served.faces] == [
            (f.employee_id, f.recognized) for f in full.faces
        ]
        assert all(f.path == "full" for f in full.faces)
        paths += [f.path for f in served.faces]
        v, vf = gate.verify(person, pixels), full_only.verify(person, pixels)
        assert (v.accepted, v.path in ("cheap", "full")) == (vf.accepted, True) and vf.path == "full"
    assert "cheap" in paths  # most faces are far from the threshold
    if gate.access_log is not None:
        logged = {r.get("path") for r in gate.access_log.decisions()}
        assert logged & {"cheap", "full"}
