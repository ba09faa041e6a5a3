"""The whole retraining chain for real (Prefect, MLflow registry, DVC, FAISS) on a small LFW slice:
two runs with a changed param, the gate, the gallery following the champion, and failures that
leave the champion and the gallery in service untouched.

The scenarios build on each other (the registry and the gallery carry over), so each is a
module-scoped fixture that runs once and records what its tests check; running one test alone runs
the scenarios before it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import mlflow
import pytest
import yaml

from facegate.components.core.errors import StageFailed
from facegate.components.core.paths import repo_root, use_mlflow_store
from facegate.components.core.settings import load_settings
from facegate.components.gallery import current_version
from facegate.components.lifecycle import data_version, registry
from tests.conftest import requires_dataset, shared_dataset
from tests.integration.test_train_flow import lfw_slice

pytestmark = [pytest.mark.integration, pytest.mark.slow, requires_dataset("lfw", "faceapi-examples")]
MODEL = "facegate-embedder"


def set_params(sandbox, **sections) -> None:
    params = yaml.safe_load((sandbox.root / "params.yaml").read_text())
    before = yaml.safe_dump(params)
    for section, values in sections.items():
        params[section].update(values)
    if yaml.safe_dump(params) != before:  # a value params already has is no change to commit
        (sandbox.root / "params.yaml").write_text(yaml.safe_dump(params))
        sandbox.commit()


def in_service():
    """(champion version, gallery CURRENT, the gallery manifest's embedder version)."""
    from facegate.components.service.deployment import gallery_store

    store = gallery_store()
    champ = registry.champion(MODEL)
    return champ.version if champ else None, current_version(store.index_dir), store.load().manifest.embedder_version


def kill_chain_during_training(sandbox) -> list[str]:
    """`facegate retrain` in a child process, SIGKILLed once its train stage runs; returns its run ids."""
    exp_name = "facegate-retrain"
    proc = subprocess.Popen(
        [sys.executable, "-m", "facegate.cli.main", "retrain"],
        cwd=repo_root(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the chain ended before it could be killed"
            exp = mlflow.get_experiment_by_name(exp_name)
            running = (
                mlflow.search_runs(
                    [exp.experiment_id], filter_string="attributes.status = 'RUNNING'", output_format="list"
                )
                if exp
                else []
            )
            if any(r.info.run_name == "train" for r in running):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the chain never reached its train stage")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return [r.info.run_id for r in running]


def run_chain():
    """(result, None) or (None, the StageFailed it raised)."""
    from facegate.flows.retrain import retrain_flow

    try:
        return retrain_flow(), None
    except StageFailed as exc:
        return None, exc


def gate_states() -> dict[str, str]:
    return {v.version: v.tags["gate"] for v in registry.list_versions(MODEL)}


def champion_moves() -> list[tuple[str, str, str | None, str]]:
    """The access log's audit rows of champion moves, oldest first: (actor, action, from, to)."""
    from facegate.components.service.access_log import AccessLog

    events = AccessLog.from_settings(load_settings()).audit_events(limit=10_000)
    return [
        (e["actor"], e["action"], e["detail"]["previous"], e["detail"]["version"])
        for e in reversed(events)
        if e["action"] in ("promote", "rollback")
    ]


# --------------------------------------------------------------------------- the scenarios, in order


@pytest.fixture(scope="module")
def world(module_sandbox, prefect_server):
    """An LFW slice ingested and two employees enrolled, served by the pretrained fallback."""
    from facegate.components.service.deployment import gallery_store
    from facegate.flows.data import ingest_flow
    from facegate.flows.gallery import enrol_flow

    lfw_slice(module_sandbox)
    set_params(module_sandbox, augment={"copies": 1})
    ingest_flow(datasets=["lfw"])
    faces = shared_dataset("faceapi-examples")
    for person in ("amy", "raj"):
        enrol_flow(person, person.title(), [str(faces / person / f"{person}1.png")])
    use_mlflow_store()
    return SimpleNamespace(
        sandbox=module_sandbox, store=gallery_store(), client=mlflow.MlflowClient(), before=in_service()
    )


@pytest.fixture(scope="module")
def first_chains_fail(world):
    """0. A chain SIGKILLed mid-training (no handler runs); 1. the next chain, which always promotes
    someone, meets a stored photo that went bad in its promote stage."""
    killed = kill_chain_during_training(world.sandbox)
    photo = next((world.store.photos_dir / "amy").iterdir())
    good = photo.read_bytes()
    photo.write_bytes(b"not an image any more")
    try:
        _, error = run_chain()
        after, gates = in_service(), set(gate_states().values())
    finally:
        photo.write_bytes(good)
    return SimpleNamespace(killed=killed, photo=photo, error=error, after=after, gates=gates)


@pytest.fixture(scope="module")
def two_chains(first_chains_fail, world):
    """2. The chain, then again with a changed param."""
    from facegate.components.lifecycle.model_loading import forget_service_recognizer, service_model

    first, error = run_chain()
    assert error is None, error
    set_params(world.sandbox, train={"epochs": 3, "lr": 3e-4})
    second, error = run_chain()
    assert error is None, error
    forget_service_recognizer()
    return SimpleNamespace(
        first=first,
        second=second,
        data_version=data_version.read_version(),
        after=in_service(),
        employees=world.store.load().n_employees,
        gates=gate_states(),
        service_label=service_model(load_settings())[1],
    )


@pytest.fixture(scope="module")
def training_fails(two_chains):
    """3. A stage fails with a champion in service."""

    def broken_training(*args, **kwargs):
        raise RuntimeError("injected: the training node died")

    serving = in_service()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("facegate.components.lifecycle.stages.train_head", broken_training)
        _, error = run_chain()
    return SimpleNamespace(serving=serving, error=error, after=in_service(), gates=set(gate_states().values()))


# --------------------------------------------------------------------------------------- the checks


def test_starts_on_the_pretrained_fallback(world):
    assert world.before[0] is None and world.before[2].startswith("sha256:")


def test_a_killed_chain_is_cleaned_up_by_the_next(world, first_chains_fail):
    assert {world.client.get_run(r).info.status for r in first_chains_fail.killed} == {"KILLED"}


def test_a_bad_stored_photo_fails_promote_and_nothing_moves(world, first_chains_fail):
    failed = first_chains_fail
    assert failed.error is not None and failed.error.stage == "promote"
    assert str(failed.photo) in failed.error.message
    assert failed.after == world.before  # no champion, same gallery version, same model
    client = world.client
    failed_run = client.search_runs(
        [client.get_experiment_by_name("facegate-retrain").experiment_id], filter_string="tags.failed_stage = 'promote'"
    )[0]
    assert failed_run.info.status == "FAILED"
    assert failed.gates <= {"failed", "rejected"}


def test_two_chains_line_up_in_mlflow(world, two_chains):
    client = world.client
    runs = [mlflow.get_run(r["run_id"]) for r in (two_chains.first, two_chains.second)]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert set(runs[0].data.metrics) == set(runs[1].data.metrics)  # the compare view lines them up
    assert {"val_accuracy", "val_tar_at_far_1e-3", "incumbent_val_accuracy", "gate_promoted"} <= set(
        runs[0].data.metrics
    )
    assert runs[0].data.params["train.epochs"] == "2" and runs[1].data.params["train.epochs"] == "3"

    # the data version: data.dvc, the parent runs and every nested stage run agree
    children = client.search_runs(
        [runs[1].info.experiment_id], filter_string=f"tags.parent_run_id = '{runs[1].info.run_id}'"
    )
    assert {c.data.tags["data_version"] for c in children} | {r.data.tags["data_version"] for r in runs} == {
        two_chains.data_version
    }
    names = {c.info.run_name for c in children}
    assert {"ingest", "validate", "augment", "train", "evaluate-challenger", "evaluate-incumbent"} <= names
    train_run = next(c for c in children if c.info.run_name == "train")
    assert {a.path for a in client.list_artifacts(train_run.info.run_id, "plots")} == {"plots/training_curves.png"}
    assert len(client.get_metric_history(train_run.info.run_id, "train_active_fraction")) == 3
    # the registered challenger's unit grids, in the run its model was logged in (explain.log_to_mlflow)
    assert "explain/units.json" in {a.path for a in client.list_artifacts(train_run.info.run_id, "explain")}
    assert train_run.data.metrics["explain_seconds"] > 0


def test_champion_and_gallery_follow_the_gate(world, two_chains):
    first, second = two_chains.first, two_chains.second
    metric = first["gate_metric"]
    if first["promoted"]:
        champ_after_first = first["challenger_version"]
    else:  # the pretrained model won and was registered as the champion
        champ_after_first = first["champion_version"]
        assert registry.get_version(MODEL, champ_after_first).tags["source"] == "pretrained"
    margin = load_settings().registry.min_improvement
    won = second["challenger_metrics"][metric] >= second["incumbent_metrics"][metric] + margin
    assert second["incumbent"] == f"champion v{champ_after_first}" and second["promoted"] == won
    expected = second["challenger_version"] if won else champ_after_first
    champion, gallery_now, embedder = two_chains.after
    assert champion == expected and embedder == f"{MODEL}/{expected}"
    assert two_chains.employees == 2 and gallery_now != world.before[1]
    assert two_chains.gates[expected] == "promoted"
    assert two_chains.gates[second["challenger_version"]] == ("promoted" if won else "rejected")
    assert two_chains.service_label == f"{MODEL}/{expected}"


def test_each_chain_promotion_is_one_audit_row_naming_the_chain(two_chains):
    """A chain that moved champion left one row naming its MLflow parent run (from -> to); the chain
    that failed in its promote stage (a bad stored photo) left none."""
    moved = [r for r in (two_chains.first, two_chains.second) if "previous_champion" in r]
    assert two_chains.first in moved  # no champion before it: it always promotes someone
    rows = [m for m in champion_moves() if m[0].startswith("chain:")]
    assert rows == [(f"chain:{r['run_id']}", "promote", r["previous_champion"], r["champion"]) for r in moved]


def test_a_failed_stage_leaves_champion_and_gallery_in_service(training_fails):
    assert training_fails.error is not None
    assert training_fails.error.stage == "train" and "injected" in training_fails.error.message
    assert training_fails.after == training_fails.serving
    assert "pending" not in training_fails.gates


def test_operator_promotes_and_rolls_back_and_the_gallery_follows(world, training_fails):
    """4. Humans: list, promote a version by hand, roll back; the gallery follows each move."""
    from typer.testing import CliRunner

    from facegate.cli.main import app
    from facegate.components.service.deployment import local_actor

    def cli(*args):
        result = CliRunner().invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    serving = training_fails.serving
    listed = cli("models", "list")
    assert listed["versions"][0]["version"] == max(v["version"] for v in listed["versions"])
    assert next(v for v in listed["versions"] if v["version"] == serving[0])["aliases"] == ["champion"]
    assert "val_accuracy" in listed["versions"][-1]["metrics"]
    other = next(v["version"] for v in listed["versions"] if v["version"] != serving[0] and v["gate"] != "failed")
    before = champion_moves()
    cli("models", "promote", other, "--reason", "operator's choice")
    assert in_service()[0] == other and in_service()[2] == f"{MODEL}/{other}"
    cli("models", "rollback")
    assert in_service()[0] == serving[0] and in_service()[2] == f"{MODEL}/{serving[0]}"
    assert champion_moves() == before + [
        (local_actor(), "promote", serving[0], other),
        (local_actor(), "rollback", other, serving[0]),
    ]
    assert registry.get_version(MODEL, other).tags["gate"] == "rejected"
    assert world.store.load().n_employees == 2
