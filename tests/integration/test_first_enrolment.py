"""A fresh clone enrols its first employee at once: the model's calibration is committed with the code
(``calibration/<embedder>-<fingerprint>.npz``), so nothing is ingested or calibrated first; the same
face under another employee id is refused (``duplicate_face``) unless forced; identify and verify
answers carry the estimated false-accept probability."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import requires_dataset, shared_dataset
from tests.integration.test_cli_errors import facegate
from tests.integration.test_retrain_flow import set_params

pytestmark = [pytest.mark.integration, requires_dataset("faceapi-examples")]


def crop(person: str, n: int = 1):
    return shared_dataset("faceapi-examples") / person / f"{person}{n}.png"


def test_fresh_sandbox_enrols_at_once_and_refuses_a_duplicate_face(sandbox):
    set_params(sandbox, gallery={"snapshot": "manual"})  # no detached DVC process in this test
    assert not (sandbox.root / "data").exists()  # nothing ingested
    t = time.perf_counter()
    r = facegate("enroll", "--id", "amy", "--name", "Amy", crop("amy"))
    first = time.perf_counter() - t
    assert r.returncode == 0, r.stderr
    assert first < 60, f"first enrolment took {first:.1f} s"
    manifest = json.loads(facegate("gallery", "show").stdout)["manifest"]
    assert manifest["tau"] and manifest["target_far"] == 1e-3 and manifest["achieved_far"] <= 1e-3
    assert (sandbox.root / "gallery" / "calibration").is_dir()  # the copy travels with the gallery

    r = facegate("enroll", "--id", "amy-again", crop("amy"))
    assert r.returncode == 2 and "error [duplicate_face]" in r.stderr and "'amy'" in r.stderr, r.stderr
    r = facegate("enroll", "--id", "penny", "--name", "Penny", crop("penny"))
    assert r.returncode == 0, r.stderr
    r = facegate("enroll", "--id", "amy-again", "--force", crop("amy"))
    assert r.returncode == 0, r.stderr

    faces = json.loads(facegate("identify", crop("penny", 2)).stdout)["faces"]
    assert faces[0]["employee_id"] == "penny" and 0.0 <= faces[0]["far_estimate"] < 0.01
    v = json.loads(facegate("verify", "--id", "amy", crop("penny", 2)).stdout)
    assert not v["accepted"] and v["far_estimate"] > 1e-3
