"""The registry's aliases, promotion history, rollback and the gate, on a real SQLite MLflow store."""

from __future__ import annotations

import math

import pytest

from facegate.components.core.errors import RegistryError
from facegate.components.core.paths import use_mlflow_store
from facegate.components.lifecycle import registry


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    import mlflow

    from facegate.components.lifecycle.tracking import ensure_experiment

    use_mlflow_store()
    exp = ensure_experiment("registry-test")

    def new_version(name: str = "m") -> str:
        import torch

        with mlflow.start_run(experiment_id=exp) as run:
            info = mlflow.pytorch.log_model(
                torch.nn.Linear(2, 2), name="model", pip_requirements=["torch"], serialization_format="pickle"
            )
        return registry.register(info.model_uri, name, run_id=run.info.run_id, tags={"source": "test"})

    return new_version


def test_gate_rules():
    g = registry.gate({"acc": 0.95}, None, "acc", 0.01)
    assert g.promote and g.champion_value is None and "no champion" in g.reason
    assert registry.gate({"acc": 0.95}, {"acc": 0.94}, "acc", 0.01).promote  # exactly the margin wins
    lost = registry.gate({"acc": 0.949}, {"acc": 0.94}, "acc", 0.01)
    assert not lost.promote and math.isclose(lost.delta, 0.009) and "short of" in lost.reason
    assert not registry.gate({"acc": 0.93}, {"acc": 0.94}, "acc", 0.0).promote
    assert not registry.gate({"acc": float("nan")}, None, "acc", 0.0).promote
    with pytest.raises(RegistryError, match="'auc' missing"):
        registry.gate({"acc": 0.9}, None, "auc", 0.0)


def test_register_promote_rollback(store):
    assert registry.champion("m") is None and registry.list_versions("m") == []
    v1 = store()
    assert registry.by_alias("m", "challenger").version == v1
    assert registry.get_version("m", v1).tags["gate"] == "pending"
    assert registry.promote("m", v1, "first") is None
    assert registry.champion("m").version == v1 and registry.by_alias("m", "challenger") is None
    v2 = store()
    assert registry.promote("m", v2, "better") == v1
    assert registry.history("m") == [v1, v2]
    assert [v.version for v in registry.list_versions("m")] == [v2, v1]
    assert registry.list_versions("m")[0].aliases == ("champion",)

    v3 = store()
    registry.promote("m", v3, "better still")
    assert registry.rollback_target("m") == v2
    registry.promote("m", v2, "rollback")  # what `facegate models rollback` does, with the gallery
    registry.mark_rolled_back("m", v3)
    assert registry.champion("m").version == v2 and registry.history("m") == [v1, v2, v3, v2]
    assert registry.get_version("m", v3).tags["gate"] == "rejected"
    assert registry.rollback_target("m") == v1  # v3 was rolled back from: never a target again
    registry.promote("m", v1, "rollback")
    registry.mark_rolled_back("m", v2)
    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback_target("m")
    with pytest.raises(RegistryError, match="no version '99'"):
        registry.promote("m", "99", "typo")


def test_restore_and_abandon(store):
    v1 = store()
    registry.promote("m", v1, "first")
    v2 = store()
    previous = registry.promote("m", v2, "better")
    registry.restore_champion("m", previous)  # the gallery switch failed: undo
    assert registry.champion("m").version == v1 and registry.history("m") == [v1]
    assert registry.get_version("m", v2).tags["gate"] == "failed"
    v3 = store()  # a chain died before its gate
    assert registry.abandon_pending("m") == [v3]
    assert registry.get_version("m", v3).tags["gate"] == "abandoned"
    registry.restore_champion("m", None)
    assert registry.champion("m") is None


def test_gate_with_a_guard_metric_refuses_a_win_paid_for_on_the_plain_faces():
    from facegate.components.lifecycle.registry import gate

    champ = {"val_masked_tar_at_far_1e-3": 0.80, "val_accuracy": 0.990}
    wins_both = {"val_masked_tar_at_far_1e-3": 0.85, "val_accuracy": 0.9895}
    pays = {"val_masked_tar_at_far_1e-3": 0.85, "val_accuracy": 0.985}
    args = ("val_masked_tar_at_far_1e-3", 0.002)
    ok = gate(wins_both, champ, *args, guard_metric="val_accuracy", max_regression=0.001)
    assert ok.promote and "val_accuracy within 0.001" in ok.reason
    no = gate(pays, champ, *args, guard_metric="val_accuracy", max_regression=0.001)
    assert not no.promote and "loses 0.0050" in no.reason
    assert gate(pays, champ, *args).promote  # without a guard only the gate metric counts
    short = gate({"val_masked_tar_at_far_1e-3": 0.801, "val_accuracy": 0.99}, champ, *args, guard_metric="val_accuracy")
    assert not short.promote and "short of" in short.reason
