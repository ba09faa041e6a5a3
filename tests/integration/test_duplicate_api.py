"""A suspected duplicate face through the API (issue 28): the 409 answer carries what the console shows
side by side, the other employee's id and the URL of their thumbnail, with the distance and threshold;
``force`` enrols anyway. Real photos (faceapi-examples), a real gallery on disk."""

from __future__ import annotations

import pytest

from tests.integration.test_api import KEY, client, enrol, photo, recognizer  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration


def test_a_duplicate_answer_names_the_other_employee_and_their_thumbnail(client):  # noqa: F811
    assert enrol(client, "amy").status_code == 201
    r = client.post(
        "/employees",
        data={"employee_id": "amy-again", "name": "Amy?"},
        files=[("images", photo("raj")), ("images", photo("amy", 2))],
        headers={"X-API-Key": KEY},
    )
    body = r.json()
    assert r.status_code == 409 and body["code"] == "duplicate_face", body
    assert body["other_id"] == "amy" and body["photo_index"] == 1 and body["photo"] == "amy2.png"
    assert body["employee_id"] == "amy-again" and body["distance"] <= body["tau"]
    assert body["false_alarm"] is None  # this gallery has a fixed tau: no chance to estimate
    thumb = client.get(body["other_photo_url"], headers={"X-API-Key": KEY})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert enrol(client, "amy", 2, employee_id="amy-again").status_code == 409
    r = client.post(
        "/employees",
        data={"employee_id": "amy-again", "force": "true"},
        files=[("images", photo("amy", 2))],
        headers={"X-API-Key": KEY},
    )
    assert r.status_code == 201 and r.json()["employees"] == 2
