"""Enrol / identify / verify / remove / rebuild through the real flows and CLI (Prefect, MLflow, DVC)."""
from __future__ import annotations

import json

import mlflow
import pytest
from typer.testing import CliRunner

from components.paths import mlflow_tracking_uri
from tests.conftest import shared_dataset
from tests.integration.test_train_flow import lfw_slice

pytestmark = pytest.mark.integration


def cli(*args):
    from flows.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def crop(person, n=1):
    return shared_dataset("faceapi-examples") / person / f"{person}{n}.png"


def test_enrol_identify_remove_and_model_mismatch(sandbox, prefect_server, tmp_path):
    from flows.data import ingest_flow
    from components.service import gallery_store

    lfw_slice(sandbox)  # its held-out identities calibrate tau
    ingest_flow(datasets=["lfw"])
    for person in ("amy", "raj", "penny"):
        r = cli("enroll", "--id", person, "--name", person.title(), crop(person))
        assert r.exit_code == 0, r.output
    store = gallery_store()
    manifest = store.load().manifest
    assert manifest.tau and manifest.target_far == 1e-3 and manifest.achieved_far <= 1e-3
    assert (sandbox.root / "gallery.dvc").is_file()

    r = cli("identify", crop("raj", 3), "--out", tmp_path / "raj.jpg")
    faces = json.loads(r.output)["faces"]
    assert r.exit_code == 0 and len(faces) == 1 and faces[0]["employee_id"] == "raj"
    # identification uses the tau for the target FPIR at this gallery size, from the stored impostor tail
    from components.calibration import tau_for_fpir

    with __import__("numpy").load(next((store.root / "calibration").glob("*.npz"))) as cal:
        expected = tau_for_fpir(cal["impostor_tail"], int(cal["n_impostor_pairs"]), 3, 0.01)
    assert faces[0]["tau"] == expected and faces[0]["target_fpir"] == 0.01
    assert (tmp_path / "raj.jpg").stat().st_size > 0
    r = json.loads(cli("verify", "--id", "penny", crop("penny", 2)).output)
    assert r["accepted"] and r["distance"] <= r["tau"]

    # bad enrolment photos: typed error, nothing changes
    before = store.load().n_vectors
    r = cli("enroll", "--id", "group", shared_dataset("faceapi-examples") / "bbt2.jpg")
    assert r.exit_code == 2 and "error [multiple_faces]" in r.output
    r = cli("enroll", "--id", "ghost", tmp_path / "missing.jpg")
    assert r.exit_code == 2 and "error [unreadable_image]" in r.output
    assert store.load().n_vectors == before and not (store.photos_dir / "group").exists()

    # removal: embeddings and photos gone, older gallery versions purged
    assert cli("remove", "raj").exit_code == 0
    assert not (store.photos_dir / "raj").exists() and len(list(store.index_dir.glob("v*"))) == 1
    faces = json.loads(cli("identify", crop("raj", 3)).output)["faces"]
    assert faces[0]["employee_id"] != "raj"

    # a gallery from another model is refused, and the rebuild flow repairs it
    manifest_path = next(store.index_dir.glob("v*/manifest.json"))
    data = json.loads(manifest_path.read_text())
    data["embedder_version"] = "some-other-model"
    manifest_path.write_text(json.dumps(data))
    r = cli("identify", crop("amy", 2))
    assert r.exit_code == 2 and "gallery_model_mismatch" in r.output
    assert cli("gallery", "build").exit_code == 0
    assert {e["employee_id"] for e in json.loads(cli("gallery", "show").output)["employees"]} == {"amy", "penny"}
    faces = json.loads(cli("identify", crop("amy", 2)).output)["faces"]
    assert faces[0]["employee_id"] == "amy"

    # MLflow recorded each gallery change, without images
    mlflow.set_tracking_uri(mlflow_tracking_uri())
    runs = mlflow.search_runs(experiment_names=["facegate-gallery"])
    assert {"enrol", "remove", "gallery-build"} <= set(runs["tags.mlflow.runName"])
    client = mlflow.MlflowClient()
    for run_id in runs["run_id"]:
        names = [a.path for a in client.list_artifacts(run_id)]
        assert not any(n.endswith((".jpg", ".png")) for n in names)
