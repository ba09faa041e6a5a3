"""What is in service, for the console's status page: model, its held-out metrics and MLflow run, the
gallery version and its thresholds, the last retraining run and its gate decision.

Read from the service object and the MLflow store; a part that cannot be read (no tracking store yet,
a server down) says why instead of failing the page.
"""

from __future__ import annotations

from typing import Any

from facegate.components.core.paths import mlflow_tracking_uri, use_mlflow_store
from facegate.components.lifecycle import registry
from facegate.components.lifecycle.model_loading import tracking_store_exists
from facegate.components.lifecycle.retrain import experiment_name

LOCAL_MLFLOW_UI = "http://127.0.0.1:5000"  # where `facegate ui` serves the local store (its default port)


def gallery_report(gate) -> dict[str, Any]:  # noqa: ANN001 - a FaceGate
    status = gate.status()
    g = gate.snapshot()
    out: dict[str, Any] = {
        "embedder": status["embedder"],
        "employees": status["employees"],
        "gallery_version": None,
        "tau_1to1": None,
        "target_far": gate.settings.gallery.target_far,
        "target_fpir": gate.settings.gallery.target_fpir,
        "tau_identify": None,
    }
    if g is not None:
        m = g.manifest
        out.update(
            gallery_version=gate._version,
            tau_1to1=round(gate.verify_tau(g), 6),
            target_far=m.target_far,
            achieved_far=m.achieved_far,
            achieved_tar=m.achieved_tar,
            vectors=g.n_vectors,
            data_version=m.data_version,
            tau_identify=round(gate.identify_tau(g, gate.settings.gallery.target_fpir), 6),
        )
    return out


def model_report(settings) -> dict[str, Any]:  # noqa: ANN001 - Settings
    """The champion (version, metrics, MLflow run) and the last retraining run's gate decision."""
    if not tracking_store_exists():
        return {
            "champion": None,
            "last_retrain": None,
            "note": "no MLflow store yet: the pretrained model is in service, no retraining has run",
        }
    out: dict[str, Any] = {}
    try:
        champ = registry.champion(settings.registry.embedder_model)
        out["champion"] = champ.to_dict() if champ else None
        if champ is not None and champ.run_id:
            import mlflow  # heavy: MLflow takes seconds to import; only the paths that track or load models need it

            run = mlflow.get_run(champ.run_id)
            out["champion"]["run_metrics"] = {
                k: round(v, 5) for k, v in sorted(run.data.metrics.items()) if k.startswith("val_")
            }
            out["champion"]["experiment_id"] = run.info.experiment_id
            out["champion"]["explain"] = explain_link(run)
        out["detector_explain"] = detector_explain(settings)
        out["last_retrain"] = last_retrain(settings)
    except Exception as exc:  # noqa: BLE001 - the page says what could not be read
        out["error"] = f"MLflow: {type(exc).__name__}: {str(exc)[:200]}"
    return out


def explain_link(run) -> dict[str, str] | None:  # noqa: ANN001 - an MLflow Run
    """Where the run's unit grids are (facegate.components.lifecycle.unit_grids logs them under ``explain/``):
    the artifact URI and the MLflow UI's page for them (``facegate ui``); None when the run has none."""
    if "explain_seconds" not in run.data.metrics:
        return None
    exp, run_id = run.info.experiment_id, run.info.run_id
    path = f"/#/experiments/{exp}/runs/{run_id}/artifacts/explain"
    uri = mlflow_tracking_uri()
    ui = uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_MLFLOW_UI
    return {"artifact_uri": f"{run.info.artifact_uri}/explain", "ui_path": path, "url": ui + path}


def detector_explain(settings) -> dict[str, Any] | None:  # noqa: ANN001 - Settings
    """The detector champion's version and its unit grids' link; None without a trained detector."""
    champ = registry.champion(settings.detection.registered_model)
    if champ is None or not champ.run_id:
        return None
    import mlflow  # heavy: MLflow takes seconds to import; only the paths that track or load models need it

    return {"name": champ.name, "version": champ.version, "explain": explain_link(mlflow.get_run(champ.run_id))}


def last_retrain(settings) -> dict[str, Any] | None:  # noqa: ANN001 - Settings
    import mlflow  # heavy: MLflow takes seconds to import; only the paths that track or load models need it

    use_mlflow_store()
    exp = mlflow.get_experiment_by_name(experiment_name(settings))
    if exp is None:
        return None
    for run in mlflow.search_runs(
        [exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=50, output_format="list"
    ):
        if "mlflow.parentRunId" in run.data.tags:
            continue
        m, t = run.data.metrics, run.data.tags
        return {
            "run_id": run.info.run_id,
            "status": run.info.status,
            "experiment_id": exp.experiment_id,
            "started": run.info.start_time,
            "promoted": bool(m.get("gate_promoted")) if "gate_promoted" in m else None,
            "gate_delta": m.get("gate_delta"),
            "gate_reason": t.get("gate_reason"),
            "failed_stage": t.get("failed_stage"),
            "champion_version": t.get("champion_version"),
        }
    return None
