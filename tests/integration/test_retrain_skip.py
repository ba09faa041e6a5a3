"""An unchanged scheduled chain is skipped in seconds, for real (Prefect flow, MLflow store and registry):
the champion's chain recorded the same data version, ingest sources, params and code; the skip is an
MLflow run of its own with the reason, and nothing in the registry moves."""

from __future__ import annotations

import time

import mlflow
import pytest

from facegate.components.core.paths import use_mlflow_store
from facegate.components.core.settings import load_settings
from facegate.components.lifecycle import data_version, registry
from facegate.components.lifecycle.retrain import experiment_name
from facegate.components.lifecycle.retrain_skip import current_fingerprints
from facegate.components.lifecycle.tracking import tracked_run

pytestmark = [pytest.mark.integration]
MODEL = "facegate-embedder"


def fake_champion_chain(settings) -> str:
    """A champion registered by a chain run carrying today's fingerprints (as a real chain records them)."""
    from facegate.flows.retrain import chain_params

    inputs = current_fingerprints(
        data_version.read_version(), settings.ingest.datasets, chain_params(settings, None, None)
    )
    with tracked_run(
        experiment_name(settings), "retrain-earlier", tags=inputs.tags(), data_version=data_version.read_version()
    ) as run:
        mlflow.log_text("a stand-in for the champion's weights", "model/weights.txt")
    client = registry.mlflow_client()
    client.create_registered_model(MODEL)
    version = str(
        client.create_model_version(
            MODEL, f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags={"retrain_run_id": run.info.run_id}
        ).version
    )
    registry.set_gate_state(MODEL, version, "promoted", "test")
    registry.promote(MODEL, version, "test")
    return version


def test_an_unchanged_chain_is_skipped_in_under_a_minute(sandbox, prefect_server):
    (sandbox.datasets_root / "lfw" / "a").mkdir(parents=True)
    (sandbox.datasets_root / "lfw" / "a" / "a_0001.jpg").write_bytes(b"not read by the skip check")
    sandbox.add_dataset("lfw", "lfw", "lfw")
    sandbox.commit()
    settings = load_settings()
    use_mlflow_store()
    champion = fake_champion_chain(settings)
    from facegate.flows.retrain import retrain_flow

    start = time.perf_counter()
    result = retrain_flow()
    seconds = time.perf_counter() - start
    print(f"skipped run: {seconds:.1f} s (flow call), {result['wall_s']} s inside the chain")
    assert result["skipped"] and seconds < 60
    assert result["champion_version"] == champion and result["challenger_version"] is None
    run = mlflow.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["skipped"] == "true"
    assert "unchanged" in run.data.tags["skip_reason"] and run.data.tags["forced"] == "false"
    assert [v.version for v in registry.list_versions(MODEL)] == [champion]
