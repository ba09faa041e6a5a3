"""The whole retraining chain for real (Prefect, MLflow registry, DVC, FAISS) on a small LFW slice:
two runs with a changed param, the gate, the gallery following the champion, and failures that
leave the champion and the gallery in service untouched."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest
import yaml

from components import data_version, registry
from components.errors import StageFailed
from components.gallery import current_version
from components.paths import mlflow_tracking_uri, repo_root
from tests.conftest import shared_dataset
from tests.integration.test_train_flow import lfw_slice

pytestmark = pytest.mark.integration


def set_params(sandbox, **sections) -> None:
    params = yaml.safe_load((sandbox.root / "params.yaml").read_text())
    for section, values in sections.items():
        params[section].update(values)
    (sandbox.root / "params.yaml").write_text(yaml.safe_dump(params))
    sandbox.commit()


def in_service():
    """(champion version, gallery CURRENT, the gallery manifest's embedder version)."""
    from flows.serving import gallery_store

    store = gallery_store()
    champ = registry.champion("facegate-embedder")
    return champ.version if champ else None, current_version(store.index_dir), store.load().manifest.embedder_version


def kill_chain_during_training(sandbox) -> list[str]:
    """`facegate retrain` in a child process, SIGKILLed once its train stage runs; returns its run ids."""
    exp_name = "facegate-retrain"
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "retrain"], cwd=repo_root(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the chain ended before it could be killed"
            exp = mlflow.get_experiment_by_name(exp_name)
            running = mlflow.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'",
                                         output_format="list") if exp else []
            if any(r.info.run_name == "train" for r in running):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the chain never reached its train stage")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return [r.info.run_id for r in running]


def test_chain_twice_gate_gallery_and_failures(sandbox, prefect_server, monkeypatch):
    from flows.data import ingest_flow
    from flows.gallery import enrol_flow
    from flows.retrain import retrain_flow
    from flows.serving import gallery_store, service_recognizer

    lfw_slice(sandbox)
    set_params(sandbox, augment={"copies": 1})
    ingest_flow(datasets=["lfw"])
    faces = shared_dataset("faceapi-examples")
    for person in ("amy", "raj"):
        enrol_flow(person, person.title(), [str(faces / person / f"{person}1.png")])
    mlflow.set_tracking_uri(mlflow_tracking_uri())
    client = mlflow.MlflowClient()
    store = gallery_store()
    before = in_service()
    assert before[0] is None and before[2].startswith("sha256:")  # the pretrained fallback

    # 0. A chain killed mid-training (SIGKILL, no handler runs): the next chain cleans up after it.
    killed = kill_chain_during_training(sandbox)

    # 1. A stored photo went bad: the first chain always promotes someone, and fails re-embedding it.
    photo = next((store.photos_dir / "amy").iterdir())
    good = photo.read_bytes()
    photo.write_bytes(b"not an image any more")
    with pytest.raises(StageFailed) as failed:
        retrain_flow()
    assert failed.value.stage == "promote"
    assert str(photo) in failed.value.message
    assert in_service() == before  # no champion, same gallery version, same model
    failed_run = client.search_runs([client.get_experiment_by_name("facegate-retrain").experiment_id],
                                    filter_string="tags.failed_stage = 'promote'")[0]
    assert failed_run.info.status == "FAILED"
    assert {v.tags["gate"] for v in registry.list_versions("facegate-embedder")} <= {"failed", "rejected"}
    assert {client.get_run(r).info.status for r in killed} == {"KILLED"}
    photo.write_bytes(good)

    # 2. The chain, then again with a changed param.
    first = retrain_flow()
    set_params(sandbox, train={"epochs": 3, "lr": 3e-4})
    second = retrain_flow()
    runs = [mlflow.get_run(r["run_id"]) for r in (first, second)]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert set(runs[0].data.metrics) == set(runs[1].data.metrics)  # the compare view lines them up
    assert {"val_accuracy", "val_tar_at_far_1e-3", "incumbent_val_accuracy", "gate_promoted"} <= set(runs[0].data.metrics)
    assert runs[0].data.params["train.epochs"] == "2" and runs[1].data.params["train.epochs"] == "3"

    # the data version: data.dvc, the parent runs and every nested stage run agree
    version = data_version.read_version()
    children = client.search_runs([runs[1].info.experiment_id],
                                  filter_string=f"tags.parent_run_id = '{runs[1].info.run_id}'")
    assert {c.data.tags["data_version"] for c in children} | {r.data.tags["data_version"] for r in runs} == {version}
    names = {c.info.run_name for c in children}
    assert {"ingest", "validate", "augment", "train", "evaluate-challenger", "evaluate-incumbent"} <= names
    train_run = next(c for c in children if c.info.run_name == "train")
    assert {a.path for a in client.list_artifacts(train_run.info.run_id, "plots")} == {"plots/training_curves.png"}
    assert len(client.get_metric_history(train_run.info.run_id, "train_active_fraction")) == 3

    # champion on the winner of each gate, and the gallery names it
    metric = first["gate_metric"]
    if first["promoted"]:
        champ_after_first = first["challenger_version"]
    else:  # the pretrained model won and was registered as the champion
        champ_after_first = first["champion_version"]
        assert registry.get_version("facegate-embedder", champ_after_first).tags["source"] == "pretrained"
    margin = 0.002
    won = second["challenger_metrics"][metric] >= second["incumbent_metrics"][metric] + margin
    assert second["incumbent"] == f"champion v{champ_after_first}" and second["promoted"] == won
    expected = second["challenger_version"] if won else champ_after_first
    champion, gallery_now, embedder = in_service()
    assert champion == expected and embedder == f"facegate-embedder/{expected}"
    assert store.load().n_employees == 2 and gallery_now != before[1]
    gate_states = {v.version: v.tags["gate"] for v in registry.list_versions("facegate-embedder")}
    assert gate_states[expected] == "promoted"
    assert gate_states[second["challenger_version"]] == ("promoted" if won else "rejected")
    service_recognizer.cache_clear()
    from flows.serving import service_model
    from components.settings import load_settings

    assert service_model(load_settings())[1] == f"facegate-embedder/{expected}"

    # 3. A stage fails with a champion in service: nothing in service moves, no version left pending.
    serving = in_service()

    def broken_training(*args, **kwargs):
        raise RuntimeError("injected: the training node died")

    monkeypatch.setattr("flows.train.train_head", broken_training)
    with pytest.raises(StageFailed) as failed:
        retrain_flow()
    assert failed.value.stage == "train" and "injected" in failed.value.message
    assert in_service() == serving
    assert "pending" not in {v.tags["gate"] for v in registry.list_versions("facegate-embedder")}

    # 4. Humans: list, promote a version by hand, roll back; the gallery follows each move.
    from flows.cli import app
    from typer.testing import CliRunner

    def cli(*args):
        result = CliRunner().invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    listed = cli("models", "list")
    assert listed["versions"][0]["version"] == max(v["version"] for v in listed["versions"])
    assert next(v for v in listed["versions"] if v["version"] == serving[0])["aliases"] == ["champion"]
    assert "val_accuracy" in listed["versions"][-1]["metrics"]
    other = next(v["version"] for v in listed["versions"] if v["version"] != serving[0] and v["gate"] != "failed")
    cli("models", "promote", other, "--reason", "operator's choice")
    assert in_service()[0] == other and in_service()[2] == f"facegate-embedder/{other}"
    cli("models", "rollback")
    assert in_service()[0] == serving[0] and in_service()[2] == f"facegate-embedder/{serving[0]}"
    assert registry.get_version("facegate-embedder", other).tags["gate"] == "rejected"
    assert store.load().n_employees == 2
