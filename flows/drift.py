"""The drift check: the last window of decisions and captures against a reference window, overall and
per entrance (components/service/drift.py), logged to MLflow (aggregates only: no image, no embedding,
no employee id), saved for ``/metrics``, and a retraining started when drift or newly confirmed captures
cross ``retrain.trigger_*``. Meant to run on a schedule (daily) beside the weekly retraining."""

from __future__ import annotations

import mlflow
from prefect import flow, get_run_logger

from facegate.components.core.settings import load_settings
from facegate.components.lifecycle.tracking import tracked_run
from facegate.components.service.access_log import AccessLog
from facegate.components.service.captures import CaptureStore
from facegate.components.service.drift import drift_report, load_report, retrain_trigger, save_report
from facegate.flows.retrain import retrain_flow

DRIFT_EXPERIMENT = "drift"


@flow(name="drift", log_prints=True)
def drift_flow(retrain: bool = True) -> dict:
    """Judge drift now; with ``retrain``, start the retraining chain when a trigger fires (the chain still
    skips itself when nothing it trains on changed: lifecycle/retrain_skip.py)."""
    settings = load_settings()
    log = get_run_logger()
    previous = load_report() or {}
    report = drift_report(AccessLog.from_settings(settings), CaptureStore.from_settings(settings), settings)
    baseline = int(previous.get("confirmed_at_last_trigger", 0))
    reason = retrain_trigger(report, settings, baseline)
    report["trigger"] = reason
    report["confirmed_at_last_trigger"] = report["confirmed_captures"] if reason else baseline
    with tracked_run(
        f"{settings.tracking.experiment_prefix}-{DRIFT_EXPERIMENT}",
        "drift",
        tags={"alarm": str(report["alarm"]).lower(), "trigger": reason or "none"},
    ):
        for scope, s in report["scopes"].items():
            mlflow.log_metric(f"{scope}.score", s["score"])
            for signal in ("distance", "face_px", "sharpness"):
                if s.get(signal):
                    mlflow.log_metrics(
                        {f"{scope}.{signal}.psi": s[signal]["psi"], f"{scope}.{signal}.ks": s[signal]["ks"]}
                    )
        mlflow.log_dict(report, "drift_report.json")
    save_report(report)
    log.info("drift score %.3f (alarm: %s); trigger: %s", report["score"], report["alarm"], reason or "none")
    if reason and retrain:
        report["retrain"] = {k: v for k, v in retrain_flow().items() if not isinstance(v, dict)}
    return report
