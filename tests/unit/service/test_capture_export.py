"""The captures dataset from the service's side, on generated faces and a real SQLite access log: the
consent register, the export (only enrolled, consenting employees; idempotent; a snapshot), and an
erasure that leaves no capture, no template, no consent and no training image of the employee behind."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from facegate.cli.main import app
from facegate.components.core.datasets import CAPTURES_TABLE
from facegate.components.core.errors import UnknownEmployee
from facegate.components.core.paths import data_dir
from facegate.components.core.settings import load_settings
from facegate.components.gallery.enrolment import EnrolmentStore
from facegate.components.lifecycle.ingest import ingest_source
from facegate.components.lifecycle.training_data import deploy_cache_dir
from facegate.components.service.access_log import AccessLog
from facegate.components.service.capture_export import (
    capture_reference,
    consent_store,
    export_all,
    set_training_consent,
)
from facegate.components.service.facade import FaceGate
from facegate.components.service.templates import update_templates
from tests.unit.service.test_duplicate_check import FakeRecognizer, people, photo, unit  # noqa: F401 - fixture

MODEL = f"{FakeRecognizer.embedder_name}@{FakeRecognizer.embedder_version}"


def capture(emb: np.ndarray, employee: str, seed: int) -> dict:
    return {
        "entrance": "north",
        "decision": "recognized",
        "employee_id": employee,
        "nearest_id": employee,
        "distance": 0.4,
        "threshold": 0.6,
        "mask": None,
        "face_px": 120,
        "sharpness": 50.0,
        "model": MODEL,
        "chip_geometry": "dlib_150",
        "embedding": emb,
        "chip": np.random.default_rng(seed).integers(0, 255, (150, 150, 3), dtype=np.uint8),
    }


@pytest.fixture
def deployment(tmp_path, monkeypatch, people):  # noqa: F811 - the fixture
    """amy, bob and cat enrolled, each with three confirmed captures; the data folder in tmp_path."""
    monkeypatch.setenv("FACEGATE_REPO", str(tmp_path / "repo"))
    (tmp_path / "repo").mkdir()
    settings = load_settings().replace(
        {
            "gallery": {"max_templates": 3},
            "ingest": {"datasets": [{"name": "captures", "kind": "captures", "path": "exports/captures"}]},
        }
    )
    rec = FakeRecognizer(people)
    rec.model = SimpleNamespace(backbone=SimpleNamespace(chip_geometry="dlib_150"))
    log = AccessLog(f"sqlite:///{tmp_path / 'access.db'}")
    gate = FaceGate(settings, store=EnrolmentStore(tmp_path / "gallery"), recognizer=rec, access_log=log)
    rng = np.random.default_rng(5)
    for key, eid in enumerate(("amy", "bob", "cat"), start=1):
        gate.enrol(eid, eid.title(), [photo(key)])
        views = [unit(people[key] + s * rng.standard_normal(people.shape[1])) for s in (0.1, 0.3, 0.6)]
        for cid in gate.captures.record([capture(v, eid, key * 10 + i) for i, v in enumerate(views)]):
            gate.captures.label(cid, "employee", None, "op")
    return gate, data_dir() / "exports" / "captures"


def test_consent_is_explicit_revocable_and_only_for_enrolled_employees(deployment):
    gate, _ = deployment
    store = consent_store(gate)
    assert store.current() == {}  # no consent by default, enrolment implies none
    set_training_consent(gate, "amy", True, actor="op", note="form 12")
    set_training_consent(gate, "bob", True, actor="op")
    set_training_consent(gate, "bob", False, actor="op")
    assert set(store.current()) == {"amy"}
    assert [h["granted"] for h in store.history("bob")] == [True, False]
    with pytest.raises(UnknownEmployee):
        set_training_consent(gate, "zed", True, actor="op")
    assert {e["action"] for e in gate.access_log.audit_events("bob")} >= {"consent_grant", "consent_withdraw"}
    ref = capture_reference(gate)
    assert ref.employees == {"amy", "bob", "cat"} and ref.consenting == {"amy"}


def test_export_is_a_snapshot_of_consenting_enrolled_employees_and_idempotent(deployment):
    gate, folder = deployment
    for eid in ("amy", "bob"):
        set_training_consent(gate, eid, True, actor="op")
    (first,) = export_all(gate)
    assert first["exported"] == 6 and first["left_out_no_consent"] == 3 and first["written"] == 6
    table = pd.read_csv(folder / CAPTURES_TABLE)
    assert set(table["employee_id"]) == {"amy", "bob"} and table["consent"].all()
    assert {"capture_id", "entrance", "captured_at", "consent_at", "chip_geometry"} <= set(table.columns)
    stamps = {p: os.stat(p).st_mtime_ns for p in folder.rglob("*")}
    (again,) = export_all(gate)
    assert again["written"] == 0 and {p: os.stat(p).st_mtime_ns for p in folder.rglob("*")} == stamps
    set_training_consent(gate, "bob", False, actor="op")  # a withdrawal leaves at the next export
    (after,) = export_all(gate)
    assert after["exported"] == 3 and after["removed"] == 3 and not (folder / "bob").exists()


def test_a_removed_employee_leaves_no_capture_template_consent_or_training_image(deployment):
    gate, folder = deployment
    for eid in ("amy", "bob"):
        set_training_consent(gate, eid, True, actor="op")
    update_templates(gate, actor="op")
    side = gate.snapshot().sidecar
    assert side[side.employee_id == "amy"].photo.str.startswith("capture:").any()
    export_all(gate)
    ingest_source("captures", "captures", folder, data_dir(), val_fraction=0.5, seed=1, max_pixels=10**8, min_side=32)
    cache = deploy_cache_dir() / "features-x.npy"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"features of captures")

    out = gate.remove_employee("amy", actor="op")
    assert out["captures_erased"] == 3 and out["capture_images_erased"] == 6 and out["consent_rows_erased"] == 1
    assert gate.captures.count("amy") == 0 and consent_store(gate).history("amy") == []
    assert "amy" not in set(gate.snapshot().sidecar.employee_id)  # no template
    for root in (folder, data_dir() / "captures"):
        assert not (root / "amy").exists() and (root / "bob").is_dir()
    assert set(pd.read_csv(folder / CAPTURES_TABLE)["employee_id"]) == {"bob"}
    manifest = pd.read_parquet(data_dir() / "captures" / "manifest.parquet")
    assert set(manifest["identity"]) == {"bob"} and len(manifest) == 3
    assert not deploy_cache_dir().exists()  # features computed from captures are gone with them
    removal = [e for e in gate.access_log.audit_events("amy") if e["action"] == "remove"][0]
    assert removal["detail"]["capture_images_erased"] == 6
    assert export_all(gate)[0]["exported"] == 3  # the next export does not bring her back
    assert not any("amy" in str(p.relative_to(data_dir())) for p in data_dir().rglob("*"))


def test_the_cli_records_consent_through_the_same_function(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("FACEGATE_REPO", str(tmp_path / "repo"))
    runner = CliRunner()
    refused = runner.invoke(app, ["data", "consent", "zed"])
    assert refused.exit_code == 2 and "unknown_employee" in refused.output  # only an enrolled employee consents
    withdrawn = runner.invoke(app, ["data", "consent", "zed", "--withdraw", "--note", "letter 7"])
    assert withdrawn.exit_code == 0, withdrawn.output
    answer = json.loads(withdrawn.output)
    assert answer["granted"] is False and [h["note"] for h in answer["history"]] == ["letter 7"]
