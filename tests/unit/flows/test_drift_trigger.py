"""A drift trigger starts the retraining: a run of the retrain deployment when the drift run itself belongs
to a deployment (served by `facegate schedule` or a worker), else the chain in process. Prefect's server
and the chain are faked: what is tested is which one the trigger asks for, and with what."""

from __future__ import annotations

import logging
import uuid
from types import SimpleNamespace

import pytest
from prefect.exceptions import ObjectNotFound

from facegate.components.core.errors import RetrainBusy
from facegate.components.core.paths import repo_root
from facegate.components.core.settings import load_settings
from facegate.flows import drift

REASON = "drift 0.400 >= 0.25 at all"


@pytest.fixture
def calls(monkeypatch):
    calls: dict[str, list] = {"deployment": [], "in_process": []}
    run_id = uuid.uuid4()

    def run_deployment(name, **kwargs):
        calls["deployment"].append((name, kwargs))
        return SimpleNamespace(id=run_id)

    def retrain_flow():
        calls["in_process"].append(True)
        return {"model": "facegate-embedder", "promoted": False, "stages": {"train": {}}}

    retrain_flow.name = drift.retrain_flow.name  # type: ignore[attr-defined]  # the flow's name: "retrain"
    monkeypatch.setattr(drift, "get_run_logger", lambda: logging.getLogger("test-drift"))
    monkeypatch.setattr(drift, "run_deployment", run_deployment)
    monkeypatch.setattr(drift, "retrain_flow", retrain_flow)
    calls["run_id"] = [str(run_id)]
    return calls


def under_deployment(monkeypatch, deployment_id: str | None) -> None:
    monkeypatch.setattr(drift, "current_deployment", SimpleNamespace(id=deployment_id))


def test_under_a_deployment_the_trigger_starts_a_run_of_the_retrain_deployment(calls, monkeypatch):
    settings = load_settings(repo_root() / "params.yaml")
    under_deployment(monkeypatch, str(uuid.uuid4()))
    out = drift.start_retraining(settings, REASON)
    name = f"retrain/{settings.retrain.deployment}"
    assert out == {"deployment": name, "flow_run_id": calls["run_id"][0], "reason": REASON}
    ((asked, kwargs),) = calls["deployment"]
    assert asked == name and kwargs["timeout"] == 0  # the drift run does not wait for the chain
    assert not calls["in_process"]


def test_without_a_deployment_the_chain_runs_in_process(calls, monkeypatch):
    under_deployment(monkeypatch, None)
    out = drift.start_retraining(load_settings(repo_root() / "params.yaml"), REASON)
    assert out == {"model": "facegate-embedder", "promoted": False}  # the stages' detail stays in MLflow
    assert calls["in_process"] and not calls["deployment"]


def test_a_server_without_the_retrain_deployment_runs_the_chain_in_process(calls, monkeypatch):
    under_deployment(monkeypatch, str(uuid.uuid4()))

    def missing(name, **kwargs):
        calls["deployment"].append((name, kwargs))
        raise ObjectNotFound(Exception("404"))

    monkeypatch.setattr(drift, "run_deployment", missing)
    out = drift.start_retraining(load_settings(repo_root() / "params.yaml"), REASON)
    assert out["model"] == "facegate-embedder" and calls["in_process"] and len(calls["deployment"]) == 1


def test_a_chain_already_running_is_left_alone(calls, monkeypatch):
    under_deployment(monkeypatch, None)

    def busy():
        raise RetrainBusy("another retraining chain is running")

    busy.name = "retrain"  # type: ignore[attr-defined]

    monkeypatch.setattr(drift, "retrain_flow", busy)
    out = drift.start_retraining(load_settings(repo_root() / "params.yaml"), REASON)
    assert out == {"busy": "another retraining chain is running", "reason": REASON}
