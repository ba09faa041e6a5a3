"""Enrol / identify / verify / remove / rebuild through the real flows and CLI (Prefect, MLflow, DVC)."""

from __future__ import annotations

import json

import mlflow
import pytest
from typer.testing import CliRunner

from facegate.components.core.paths import use_mlflow_store
from tests.conftest import shared_dataset
from tests.integration.test_retrain_flow import set_params
from tests.integration.test_train_flow import lfw_slice

pytestmark = pytest.mark.integration


def cli(*args):
    from facegate.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def crop(person, n=1):
    return shared_dataset("faceapi-examples") / person / f"{person}{n}.png"


def test_enrol_identify_remove_and_model_mismatch(sandbox, prefect_server, tmp_path):
    from facegate.components.service.deployment import gallery_store
    from facegate.flows.data import ingest_flow

    lfw_slice(sandbox)  # its held-out identities calibrate tau
    # no detached snapshot process in this test; the full model's tau is what it checks (the cascade's
    # cheap pass answers with its member's own threshold: tests/integration/test_cascade_service.py)
    set_params(sandbox, gallery={"snapshot": "manual"}, recognition={"cascade": "off"})
    ingest_flow(datasets=["lfw"])
    for person in ("amy", "raj", "penny"):
        r = cli("enroll", "--id", person, "--name", person.title(), crop(person))
        assert r.exit_code == 0, r.output
    store = gallery_store()
    manifest = store.load().manifest
    assert manifest.tau and manifest.target_far == 1e-3 and manifest.achieved_far <= 1e-3
    assert not (sandbox.root / "gallery.dvc").exists()  # asked for, not made: params say manual
    r = cli("gallery", "snapshot")
    assert r.exit_code == 0 and (sandbox.root / "gallery.dvc").is_file(), r.output

    r = cli("identify", crop("raj", 3), "--out", tmp_path / "raj.jpg")
    faces = json.loads(r.output)["faces"]
    assert r.exit_code == 0 and len(faces) == 1 and faces[0]["employee_id"] == "raj"
    # identification uses the tau for the target FPIR at this gallery size, from the model's stored
    # calibration (its copy beside the gallery) read through the enrolled employees' bulk shift
    from facegate.components.calibration.store import ModelCalibration
    from facegate.components.core.settings import load_settings
    from facegate.components.service.calibrations import gallery_impostor_scores

    cal = ModelCalibration.load(next((store.root / "calibration").glob("*.npz")))
    scores = gallery_impostor_scores(store.load(), cal, load_settings())
    assert scores.shifted and scores.shift.pairs == 3  # 3 employees: 3 pairs, weight 3 / 103
    assert faces[0]["tau"] == scores.tau_for_fpir(0.01, 3) and faces[0]["target_fpir"] == 0.01
    assert faces[0]["tau"] != cal.impostors().tau_for_fpir(0.01, 3)
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
    use_mlflow_store()
    runs = mlflow.search_runs(experiment_names=["facegate-gallery"])
    assert {"enrol", "remove", "gallery-build"} <= set(runs["tags.mlflow.runName"])
    client = mlflow.MlflowClient()
    for run_id in runs["run_id"]:
        names = [a.path for a in client.list_artifacts(run_id)]
        assert not any(n.endswith((".jpg", ".png")) for n in names)


def test_batch_enrolment_from_a_folder_and_a_csv(sandbox, prefect_server, tmp_path):
    """`facegate enroll --from`: a report row per employee (ok, or the error's code and message), a bad
    row stops nothing, one DVC snapshot at the end, one MLflow run."""
    import shutil

    # Prefect's log handlers bind the streams of the process that first imports it; a real CLI process has
    # one pair, CliRunner swaps them per call, so load Prefect here, as a CLI process would once
    import facegate.flows.gallery  # noqa: F401
    from facegate.components.lifecycle import gallery_snapshots
    from facegate.components.lifecycle.data_version import read_version
    from facegate.components.service.deployment import gallery_store
    from tests.integration.test_cli_errors import seed_gallery

    seed_gallery()
    folder = tmp_path / "starters"
    for eid, src in {
        "howard": crop("howard"),
        "leonard": crop("leonard"),
        "group": shared_dataset("faceapi-examples") / "bbt2.jpg",
        "bad id": crop("penny"),
    }.items():
        (folder / eid).mkdir(parents=True)
        shutil.copy(src, folder / eid / src.name)
    r = cli("enroll", "--from", folder)
    assert r.exit_code == 1, r.output  # some rows failed
    report = json.loads(r.stdout)
    rows = {row["employee_id"]: row for row in report["rows"]}
    assert rows["howard"]["status"] == rows["leonard"]["status"] == "ok"
    assert rows["group"]["code"] == "multiple_faces" and rows["bad id"]["code"] == "invalid_employee"
    assert report["enrolled"] == 2 and report["failed"] == 2
    assert read_version(target="gallery") == report["gallery"]["gallery_data_version"]
    assert not gallery_snapshots.is_dirty()

    csv_file = tmp_path / "starters.csv"
    csv_file.write_text(
        "id,name,path\n"
        f"stuart,Stuart,{crop('stuart', 1)}\n"
        f"stuart,Stuart,{crop('stuart', 2)}\n"
        f"sheldon,Sheldon Cooper,{crop('sheldon')}\n"
        "ghost,Ghost,missing.jpg\n"
    )
    r = cli("enroll", "--from", csv_file)
    report = json.loads(r.stdout)
    rows = {row["employee_id"]: row for row in report["rows"]}
    assert rows["stuart"] == {"employee_id": "stuart", "status": "ok", "photos": 2}
    assert rows["ghost"]["code"] == "unreadable_image" and report["enrolled"] == 2
    employees = gallery_store().load().employees().set_index("employee_id")
    assert employees.loc["stuart", "n_vectors"] == 2 and employees.loc["sheldon", "name"] == "Sheldon Cooper"
    use_mlflow_store()
    runs = mlflow.search_runs(experiment_names=["facegate-gallery"])
    assert list(runs["tags.mlflow.runName"]) == ["enrol-batch", "enrol-batch"]
