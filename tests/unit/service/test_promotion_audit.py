"""Every move of ``champion`` leaves exactly one audit row saying who moved it and from which version to
which: the chain's promotion names the chain's MLflow run, a human's promotion and rollback the local
user; a promotion that fails before anything moves leaves none. Real MLflow registry (SQLite), real
gallery files, the deployment's real SQLite access log; the fake recognizer of the calibration tests."""

from __future__ import annotations

import mlflow
import pytest

from facegate.components.core.errors import FacegateError
from facegate.components.core.settings import load_settings
from facegate.components.embedding.train import TrainConfig
from facegate.components.lifecycle import registry
from facegate.components.lifecycle.retrain import ChainState
from facegate.components.service.calibrations import calibrated_gallery
from facegate.components.service.deployment import local_actor
from facegate.components.service.facade import FaceGate
from facegate.flows.retrain import promote_stage
from tests.unit.lifecycle.test_registry import store  # noqa: F401 - fixture: real registered versions
from tests.unit.service.test_service_calibration import FakeRecognizer, committed, photo  # noqa: F401 - fixture


class Gate(FaceGate):
    """The deployment's FaceGate (its store, its access log) with the fake recognizer for any model."""

    def prepare_gallery(self, model, label, data_version, heldout=None):  # noqa: ANN001
        recognizer = FakeRecognizer()
        return recognizer, calibrated_gallery(recognizer, self.settings, self.store, data_version)


def moves(gate: FaceGate) -> list[dict]:
    """The audit rows of champion moves, oldest first."""
    return [e for e in reversed(gate.access_log.audit_events()) if e["action"] in ("promote", "rollback")]


def test_each_promotion_and_rollback_leaves_one_audit_row_naming_who_and_which_versions(committed, store):  # noqa: F811
    settings = load_settings()
    name = settings.registry.embedder_model
    gate = Gate(settings, recognizer=FakeRecognizer())
    gate.enrol("amy", "Amy", [photo(10)])
    v1, v2 = store(name), store(name)

    # the chain's promote stage (the task's body, as the flow calls it with the chain's state)
    chain = ChainState(settings, TrainConfig.from_settings(settings), run_id="0123abcd" * 4)
    recognizer, fresh = gate.prepare_gallery(None, f"{name}/{v1}", None)
    with mlflow.start_run():
        promote_stage.fn(recognizer, fresh, v1, "gate: challenger wins", settings, chain.actor)
    rows = moves(gate)
    assert len(rows) == 1, rows
    assert rows[0]["actor"] == f"chain:{chain.run_id}" and rows[0]["action"] == "promote"
    assert rows[0]["detail"]["version"] == v1 and rows[0]["detail"]["previous"] is None
    assert rows[0]["detail"]["reason"] == "gate: challenger wins" and rows[0]["detail"]["employees"] == 1

    # a human promotes v2 by hand, then rolls back to v1 (facegate models promote / rollback)
    gate.switch_champion(v2, reason="operator's choice")
    gate.switch_champion(rollback=True)
    rows = moves(gate)
    assert [(r["action"], r["detail"]["previous"], r["detail"]["version"]) for r in rows] == [
        ("promote", None, v1),
        ("promote", v1, v2),
        ("rollback", v2, v1),
    ]
    assert [r["actor"] for r in rows[1:]] == [local_actor()] * 2
    assert rows[2]["detail"]["reason"] == f"rollback from v{v2}"
    assert registry.champion(name).version == v1

    # a promotion that fails before the alias moves (a stored photo gone bad) leaves no row
    stored = next((gate.store.photos_dir / "amy").iterdir())
    stored.write_bytes(b"not an image any more")
    with pytest.raises(FacegateError):  # the image loader's typed error; nothing may move
        gate.switch_champion(v2)
    assert len(moves(gate)) == 3 and registry.champion(name).version == v1
