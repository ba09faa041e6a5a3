"""Roles, the access log, erasure, photo checks, login and /metrics through the API (real photos,
a real FAISS gallery, a real SQLite access log; in-process client)."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageFilter

from facegate.components.core.settings import load_settings
from facegate.components.service.access_log import AccessLog
from facegate.components.web.accounts import Accounts
from facegate.components.web.api.app import create_app
from tests.conftest import shared_dataset
from tests.integration.live_server import make_gate
from tests.integration.test_api import KEY, TAU, photo, recognizer  # noqa: F401 - the module-scoped fixture

pytestmark = pytest.mark.integration


@pytest.fixture
def console(tmp_path, recognizer, monkeypatch):
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "state"))
    log = AccessLog(f"sqlite:///{tmp_path / 'state' / 'access.db'}")
    gate = make_gate(tmp_path, recognizer, tau=TAU, access_log=log)
    accounts = Accounts(log.engine, legacy_key=KEY)
    keys = {role: f"{role}1.{accounts.add(role + '1', role)}" for role in ("operator", "viewer", "turnstile")}
    with TestClient(create_app(gate, key=KEY, accounts=accounts), base_url="http://127.0.0.1") as c:
        c.gate, c.log, c.keys, c.accounts = gate, log, keys, accounts
        yield c


def h(c, role):
    return {"X-API-Key": c.keys[role]}


def enrol(c, person, role="operator", n=1):
    return c.post(
        "/employees",
        data={"employee_id": person, "name": person.title()},
        files=[("images", photo(person, n))],
        headers=h(c, role),
    )


def test_roles_decisions_audit_and_erasure(console):
    c = console
    assert enrol(c, "amy", "viewer").status_code == 403 and enrol(c, "amy", "turnstile").status_code == 403
    assert c.log.audit_events() == [] and not c.gate.store.exists()  # a refused enrolment writes nothing
    r = enrol(c, "amy")
    assert r.status_code == 201
    assert enrol(c, "raj").status_code == 201
    assert (
        c.post(
            "/employees", data={"employee_id": "penny"}, files=[("images", photo("penny"))], headers={"X-API-Key": KEY}
        ).status_code
        == 201
    )  # the legacy key is an operator
    group = (shared_dataset("faceapi-examples") / "bbt1.jpg").read_bytes()
    r = c.post(
        "/identify",
        data={"entrance": "door-3"},
        files={"image": ("bbt1.jpg", group, "image/jpeg")},
        headers=h(c, "turnstile"),
    )
    assert r.status_code == 200
    faces = r.json()["faces"]
    rows = c.log.decisions()
    assert len(rows) == len(faces) and {x["entrance"] for x in rows} == {"door-3"}  # one row per face
    assert {x["actor"] for x in rows} == {"turnstile1"}
    assert sorted(x["employee_id"] for x in rows if x["employee_id"]) == sorted(
        f["employee_id"] for f in faces if f["employee_id"]
    )
    v = c.post(
        "/verify",
        data={"employee_id": "amy", "entrance": "door-3"},
        files={"image": photo("amy", 2)},
        headers=h(c, "turnstile"),
    )
    assert v.status_code == 200 and c.log.decisions()[0]["outcome"] == (
        "accepted" if v.json()["accepted"] else "rejected"
    )
    assert c.get("/employees", headers=h(c, "turnstile")).status_code == 403  # the turnstile only decides
    assert c.get("/access-log?entrance=door-3&kind=verify", headers=h(c, "viewer")).json()[0]["employee_id"] == "amy"
    assert c.get("/access-log?since=yesterday", headers=h(c, "viewer")).json()["code"] == "bad_request"
    assert c.delete("/employees/amy", headers=h(c, "viewer")).status_code == 403
    amy_rows = c.log.count(employee_id="amy")
    assert amy_rows >= 1
    r = c.delete("/employees/amy", headers=h(c, "operator"))
    assert r.status_code == 200 and r.json()["access_rows_erased"] == amy_rows and c.log.count(employee_id="amy") == 0
    audit = c.get("/audit", headers=h(c, "viewer")).json()
    assert [(a["action"], a["employee_id"], a["actor"]) for a in audit] == [
        ("remove", "amy", "operator1"),
        ("enrol", "penny", "api-key"),
        ("enrol", "raj", "operator1"),
        ("enrol", "amy", "operator1"),
    ]
    png = c.get("/employees/raj/photo", headers=h(c, "viewer"))
    assert png.status_code == 200 and png.headers["content-type"] == "image/jpeg"
    assert c.get("/employees/amy/photo", headers=h(c, "viewer")).status_code == 404

    metrics = c.get("/metrics").text  # no key: served on 127.0.0.1
    assert 'facegate_decisions_total{kind="identify",outcome="recognized"}' in metrics
    assert "facegate_gallery_employees 2.0" in metrics
    assert 'facegate_requests_total{method="POST",route="/employees",status="403"} 2.0' in metrics


def test_photo_checks_write_nothing(console):
    c = console
    amy = photo("amy")
    blurred = io.BytesIO()
    Image.open(io.BytesIO(amy[1])).filter(ImageFilter.GaussianBlur(4)).save(blurred, "PNG")
    tiny = io.BytesIO()
    Image.open(io.BytesIO(amy[1])).resize((60, 60)).save(tiny, "PNG")
    group = (shared_dataset("faceapi-examples") / "bbt1.jpg").read_bytes()
    files = [
        ("images", amy),
        ("images", ("blur.png", blurred.getvalue(), "image/png")),
        ("images", ("tiny.png", tiny.getvalue(), "image/png")),
        ("images", ("bbt1.jpg", group, "image/jpeg")),
        ("images", ("junk.jpg", b"not an image", "image/jpeg")),
    ]
    r = c.post("/photos/check", files=files, headers=h(c, "operator"))
    assert r.status_code == 200
    got = {x["name"]: x for x in r.json()}
    assert got["amy1.png"]["ok"] and got["amy1.png"]["faces"] == 1
    assert "face_blurred" in got["blur.png"]["problems"][0]
    assert any("face_too_small" in p for p in got["tiny.png"]["problems"])
    assert got["bbt1.jpg"]["problems"][0].startswith("multiple_faces") and got["bbt1.jpg"]["faces"] > 1
    assert got["junk.jpg"]["problems"][0].startswith("unreadable_image")
    assert not c.gate.store.exists() and c.log.audit_events() == []
    assert c.post("/photos/check", files=[("images", amy)], headers=h(c, "viewer")).status_code == 403


def test_login_sessions_and_rate_limit(console, monkeypatch):
    c = console
    assert c.get("/").status_code == 200 and "Log in" in c.get("/").text
    r = c.get("/console/employees", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/?next=")
    name, secret = c.keys["viewer"].split(".", 1)
    r = c.post("/login", data={"name": name, "secret": secret}, follow_redirects=False)
    assert r.status_code == 303 and "httponly" in r.headers["set-cookie"].lower()
    assert "samesite=strict" in r.headers["set-cookie"].lower()
    assert c.get("/console/employees").status_code == 200  # the cookie now
    assert c.get("/whoami").json() == {"name": "viewer1", "role": "viewer"}
    r = c.get("/console/enrol")
    assert r.status_code == 403 and "may not enrol" in r.text
    assert enrol_with_cookie(c).status_code == 403
    # a cookie-authenticated write from another site's page is not authenticated at all
    r = c.post(
        "/employees",
        data={"employee_id": "x"},
        files=[("images", photo("amy"))],
        headers={"Origin": "http://evil.example"},
    )
    assert r.status_code == 401
    c.post("/logout")
    c.cookies.clear()
    assert c.get("/whoami").status_code == 401
    limit = load_settings().console.login_max_failures
    codes = [c.post("/login", data={"name": "operator1", "secret": "wrong"}).status_code for _ in range(limit + 1)]
    assert codes == [401] * limit + [429]
    r = c.post("/login", data={"name": "operator1", "secret": c.keys["operator"].split(".", 1)[1]})
    assert r.status_code == 429  # still limited, even with the right secret
    assert 'facegate_logins_total{result="rate_limited"} 2.0' in c.get("/metrics").text


def enrol_with_cookie(c):
    return c.post("/employees", data={"employee_id": "amy"}, files=[("images", photo("amy"))])


def test_pages_log_filters_status_and_accounts_cli(console, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from facegate.cli.main import app

    c = console
    assert enrol(c, "raj").status_code == 201
    group = (shared_dataset("faceapi-examples") / "bbt1.jpg").read_bytes()
    c.post(
        "/identify",
        data={"entrance": "lobby"},
        files={"image": ("bbt1.jpg", group, "image/jpeg")},
        headers=h(c, "operator"),
    )
    name, secret = c.keys["viewer"].split(".", 1)
    c.post("/login", data={"name": name, "secret": secret})
    page = c.get("/console/log", params={"outcome": "recognized", "entrance": "lobby"}).text
    assert "<td>raj</td>" in page and "not_recognized</td>" not in page  # the filter, on the page
    assert "operator1" in page and ">enrol<" in page  # the audit table
    assert "is not an ISO date" in c.get("/console/log", params={"since": "not a time"}).text
    status = c.get("/console/status")
    assert status.status_code == 200 and "dlib_resnet@pretrained-test" in status.text and "FPIR 0.01" in status.text
    employees = c.get("/console/employees", params={"q": "RA"}).text
    assert 'data-id="raj"' in employees and 'class="remove' not in employees  # a viewer has no remove button

    # the CLI: an account's secret printed once, then it logs in; its removal ends its sessions
    runner = CliRunner()
    out = runner.invoke(app, ["accounts", "add", "night-guard", "--role", "operator"])
    assert out.exit_code == 0, out.output
    import json

    created = json.loads(out.output)
    assert created["api_key"] == f"night-guard.{created['secret']}"
    assert c.accounts.login("night-guard", created["secret"]).role == "operator"  # the same database
    assert json.loads(runner.invoke(app, ["accounts", "list"]).output)[0]["name"] == "night-guard"
    bad = runner.invoke(app, ["accounts", "add", "night-guard", "--role", "operator"])
    assert bad.exit_code == 2 and "account_error" in bad.output
    assert runner.invoke(app, ["accounts", "remove", "night-guard"]).exit_code == 0
    assert c.get("/whoami", headers={"X-API-Key": created["api_key"]}).status_code == 401
