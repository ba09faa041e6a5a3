"""The retraining chain's logic without Prefect or MLflow: the one stage guard and the gate's verdict."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from facegate.components.core.errors import DatasetError, StageFailed
from facegate.components.core.settings import load_settings
from facegate.components.embedding.train import TrainConfig
from facegate.components.lifecycle import registry
from facegate.components.lifecycle.retrain import ChainState, Incumbent, metric_tags, stage_guard


@pytest.fixture
def chain(monkeypatch):
    """A ChainState on the default settings with its registry and MLflow calls recorded."""
    tags: dict[tuple[str, str], str] = {}
    gates = {"3": "pending", "4": "rejected", "5": "pending"}
    marked: list[tuple[str, str, str]] = []

    class Client:
        def set_tag(self, run_id, key, value):
            tags[(run_id, key)] = value

    def set_gate_state(name, version, state, reason=""):
        gates[version] = state
        marked.append((version, state, reason))

    monkeypatch.setattr("mlflow.MlflowClient", Client)
    monkeypatch.setattr(registry, "get_version", lambda name, v: SimpleNamespace(tags={registry.GATE_TAG: gates[v]}))
    monkeypatch.setattr(registry, "set_gate_state", set_gate_state)
    settings = load_settings()
    state = ChainState(settings, TrainConfig.from_settings(settings), run_id="parent")
    return SimpleNamespace(state=state, tags=tags, gates=gates, marked=marked)


def test_a_passing_stage_leaves_no_trace(chain):
    with stage_guard(chain.state, "train"):
        pass
    assert chain.state.stage == "train" and chain.tags == {} and chain.marked == []


def test_a_failing_stage_tags_the_run_fails_pending_versions_and_names_the_stage(chain):
    chain.state.registered += ["3", "4"]
    logged = []
    with pytest.raises(StageFailed) as failed, stage_guard(chain.state, "gallery", logged.append):
        raise DatasetError("lfw: no manifest")
    assert failed.value.stage == "gallery" and failed.value.reason == "lfw: no manifest"
    assert isinstance(failed.value.__cause__, DatasetError)
    assert chain.tags == {("parent", "failed_stage"): "gallery", ("parent", "error"): "lfw: no manifest"}
    # only this chain's versions, and only those still pending
    assert chain.gates == {"3": "failed", "4": "rejected", "5": "pending"}
    assert chain.marked == [("3", "failed", "stage gallery: lfw: no manifest")]
    assert logged == ["retrain failed at stage gallery: lfw: no manifest"]


def test_an_unexpected_error_is_named_by_its_type(chain):
    with pytest.raises(StageFailed, match=r"stage 'train': RuntimeError: node died"):
        with stage_guard(chain.state, "train"):
            raise RuntimeError("node died")


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_interrupts_are_recorded_and_re_raised_as_themselves(chain, interrupt):
    chain.state.registered.append("5")
    with pytest.raises(interrupt), stage_guard(chain.state, "evaluate"):
        raise interrupt()
    assert chain.tags[("parent", "failed_stage")] == "evaluate" and chain.gates["5"] == "failed"


def decision(promote: bool) -> registry.GateDecision:
    return registry.GateDecision(promote, "why", "val_auc", 0.9, 0.8, 0.002)


@pytest.mark.parametrize(
    "promote,champion,winner,register_pretrained,rejected",
    [
        (True, "2", "7", False, False),  # the challenger wins
        (False, "2", None, False, True),  # the champion stays, and so does its gallery
        (False, None, None, True, True),  # no champion: the pretrained model in service wins
    ],
)
def test_the_gate_verdict_picks_the_winner(chain, promote, champion, winner, register_pretrained, rejected):
    s = chain.state
    s.version, s.trained = "7", SimpleNamespace(model="trained model")
    s.incumbent = Incumbent("incumbent model", champion)
    chain.gates["7"] = "pending"
    assert s.accept(decision(promote)) is register_pretrained
    assert s.winner == winner
    assert s.winner_model == ("incumbent model" if register_pretrained else "trained model")
    assert s.winner_trained is not register_pretrained
    assert (chain.gates["7"] == "rejected") is rejected


def test_metric_tags_keep_held_out_metrics_only():
    assert metric_tags({"val_auc": 0.987654321, "train_loss": 1.0}) == {"val_auc": "0.987654"}
