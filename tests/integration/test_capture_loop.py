"""Capture -> review -> template through the real API (real photos, the dlib model, a real FAISS gallery,
a real SQLite access log and capture store; in-process client), and a removed employee leaving no capture,
template or audit-less trace behind."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from facegate.components.core.settings import load_settings
from facegate.components.service.access_log import AccessLog
from facegate.components.web.accounts import Accounts
from facegate.components.web.api.app import create_app
from tests.integration.live_server import make_gate
from tests.integration.test_api import KEY, TAU, photo, recognizer  # noqa: F401 - the module-scoped fixture

pytestmark = pytest.mark.integration


@pytest.fixture
def loop(tmp_path, recognizer, monkeypatch):  # noqa: F811 - the fixture
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "state"))
    log = AccessLog(f"sqlite:///{tmp_path / 'state' / 'access.db'}")
    settings = load_settings().replace(
        {
            "capture": {"enabled": True, "entrances": ["door-1"]},
            "gallery": {"max_templates": 3},
            "recognition": {"cascade": "off"},
        }
    )
    gate = make_gate(tmp_path, recognizer, settings, tau=TAU, access_log=log)
    accounts = Accounts(log.engine, legacy_key=KEY)
    keys = {role: f"{role}1.{accounts.add(role + '1', role)}" for role in ("operator", "viewer", "turnstile")}
    with TestClient(create_app(gate, key=KEY, accounts=accounts), base_url="http://127.0.0.1") as c:
        c.gate, c.log, c.keys = gate, log, keys
        yield c


def h(c, role):
    return {"X-API-Key": c.keys[role]}


def identify(c, person, n, entrance):
    name, data, kind = photo(person, n)
    return c.post(
        "/identify", data={"entrance": entrance}, files={"image": (name, data, kind)}, headers=h(c, "turnstile")
    )


def test_capture_review_template_and_erasure(loop):
    c = loop
    for person in ("amy", "raj"):
        r = c.post(
            "/employees", data={"employee_id": person}, files=[("images", photo(person, 1))], headers=h(c, "operator")
        )
        assert r.status_code == 201
    assert identify(c, "amy", 2, "door-2").status_code == 200
    assert c.gate.captures.count() == 0  # door-2 does not capture
    for n in (2, 3, 4):
        assert identify(c, "amy", n, "door-1").status_code == 200
    assert identify(c, "raj", 2, "door-1").status_code == 200
    assert c.gate.captures.count() == 4

    for role in ("viewer", "turnstile"):  # captures are biometrics: operator only
        assert c.get("/captures/review", headers=h(c, role)).status_code == 403
        assert c.get("/console/review", headers=h(c, role)).status_code in (403, 303)
    queue = c.get("/captures/review", headers=h(c, "operator")).json()
    assert len(queue) == 4 and all("why" in q and "priority" in q for q in queue)
    assert [q["priority"] for q in queue] == sorted((q["priority"] for q in queue), reverse=True)
    chip = c.get(f"/captures/{queue[0]['id']}/chip", headers=h(c, "operator"))
    assert chip.status_code == 200 and chip.content[:4] == b"\x89PNG"
    page = c.get("/console/review", headers=h(c, "operator"))
    assert page.status_code == 200 and f"/captures/{queue[0]['id']}/chip" in page.text and "Not a face" in page.text

    for q in queue:  # labelled from ground truth: who the nearest employee is, on this slice, is right
        who = q["nearest_id"]
        r = c.post(
            f"/captures/{q['id']}/label", data={"label": "employee", "employee_id": who}, headers=h(c, "operator")
        )
        assert r.status_code == 200 and r.json()["label_employee_id"] == who
    assert (
        c.post(f"/captures/{queue[0]['id']}/label", data={"label": "maybe"}, headers=h(c, "operator")).status_code
        == 422
    )
    labels = [e for e in c.log.audit_events() if e["action"] == "capture_label"]
    assert len(labels) == 4 and {e["actor"] for e in labels} == {"operator1"}

    before = c.gate.gallery_version
    out = c.post("/captures/templates", headers=h(c, "operator")).json()
    assert out["gallery_version"] != before
    amy = out["employees"]["amy"]["templates"]
    assert len(amy) == 2  # max_templates 3: the enrolment photo and the two most diverse captures
    side = c.gate.snapshot().sidecar
    captured = {p for p in side[side.employee_id == "amy"].photo if p.startswith("capture:")}
    assert captured == {f"capture:{i}" for i in amy}

    c.gate.rebuild_gallery()  # what a promotion does: enrolment photos re-embedded, templates chosen again
    side = c.gate.snapshot().sidecar
    assert {p for p in side[side.employee_id == "amy"].photo if p.startswith("capture:")} == captured

    r = c.delete(f"/captures/{amy[0]}/template", headers=h(c, "operator"))
    assert r.status_code == 200
    removed = c.delete("/employees/amy", headers=h(c, "operator")).json()
    assert removed["captures_erased"] == 3
    assert c.gate.captures.count("amy") == 0 and "amy" not in set(c.gate.snapshot().sidecar.employee_id)
    assert c.gate.captures.count() == 1  # raj's
