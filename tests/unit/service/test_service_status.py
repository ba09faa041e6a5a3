"""The status page's model report from a real MLflow store (SQLite in a temporary state folder): the
champion with its held-out metrics and run, the last retraining run and its gate decision."""

from __future__ import annotations

from facegate.components.core.settings import load_settings


def test_model_report_reads_champion_and_last_retrain(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from facegate.components.service.status import model_report

    settings = load_settings()
    assert model_report(settings)["champion"] is None  # no store yet: says so, creates nothing
    assert not (tmp_path / "state" / "mlflow.db").exists()

    import mlflow

    from facegate.components.lifecycle import registry
    from facegate.components.lifecycle.retrain import experiment_name
    from facegate.components.lifecycle.tracking import tracked_run

    with tracked_run(experiment_name(settings), "retrain") as parent:
        mlflow.log_metrics({"gate_promoted": 1.0, "gate_delta": 0.004})
        mlflow.set_tag("gate_reason", "val_masked_tar_at_far_1e-3 0.9100 beats 0.9060")
        with tracked_run(experiment_name(settings), "train") as child:
            mlflow.log_metric("val_accuracy", 0.9912)
            mlflow.log_metric("explain_seconds", 12.5)  # unit_grids logged the version's grids under explain/
    name = settings.registry.embedder_model
    client = mlflow.MlflowClient()
    client.create_registered_model(name)
    mv = client.create_model_version(name, f"runs:/{child.info.run_id}/model", run_id=child.info.run_id)
    registry.promote(name, str(mv.version), "test")

    report = model_report(settings)
    assert "error" not in report, report.get("error")
    assert report["champion"]["version"] == str(mv.version)
    assert report["champion"]["run_metrics"] == {"val_accuracy": 0.9912}
    explain = report["champion"]["explain"]
    assert explain["ui_path"].endswith(f"/runs/{child.info.run_id}/artifacts/explain")
    assert explain["url"] == "http://127.0.0.1:5000" + explain["ui_path"]  # `facegate ui` on the local store
    assert explain["artifact_uri"].endswith("/explain") and report["detector_explain"] is None
    last = report["last_retrain"]
    assert last["run_id"] == parent.info.run_id  # the parent run, not its nested stage
    assert last["promoted"] is True and last["gate_delta"] == 0.004 and "beats" in last["gate_reason"]
