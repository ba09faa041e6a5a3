"""The drift check: the last window of decisions and captures against a reference window, overall and
per entrance (components/service/drift.py), logged to MLflow (aggregates only: no image, no embedding,
no employee id), saved for ``/metrics``, and a retraining started when drift or newly confirmed captures
cross ``retrain.trigger_*``. Meant to run on a schedule (daily) beside the weekly retraining."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import mlflow
from prefect import flow, get_run_logger
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.runtime import deployment as current_deployment

from facegate.components.core.errors import GalleryNotFound, RetrainBusy
from facegate.components.core.settings import Settings, load_settings
from facegate.components.lifecycle.tracking import tracked_run
from facegate.components.service.access_log import AccessLog
from facegate.components.service.captures import CaptureStore
from facegate.components.service.deployment import gallery_store
from facegate.components.service.drift import (
    drift_report,
    enrolment_reference,
    load_report,
    retrain_trigger,
    save_report,
)
from facegate.flows.retrain import retrain_flow

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

DRIFT_EXPERIMENT = "drift"


@flow(name="drift", log_prints=True)
def drift_flow(retrain: bool = True) -> dict:
    """Judge drift now; with ``retrain``, start the retraining chain when a trigger fires (the chain still
    skips itself when nothing it trains on changed: lifecycle/retrain_skip.py)."""
    settings = load_settings()
    log = get_run_logger()
    previous = load_report() or {}
    try:  # captured faces are measured against the enrolment photos of the gallery in service
        reference = enrolment_reference(gallery_store().load())
    except GalleryNotFound:
        reference = None
    report = drift_report(
        AccessLog.from_settings(settings), CaptureStore.from_settings(settings), settings, reference=reference
    )
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
        report["retrain"] = start_retraining(settings, reason)
    return report


def start_retraining(settings: Settings, reason: str) -> dict:
    """The retraining a trigger asks for. Under a Prefect server (this run belongs to a deployment, served
    by ``facegate schedule`` or a worker): a run of the retrain deployment, left to its runner or worker
    (this run does not wait for it). Otherwise, or when the server does not know that deployment: the
    chain here, in process. A chain already running is left alone."""
    log = get_run_logger()
    if current_deployment.id is not None:
        name = f"{retrain_flow.name}/{settings.retrain.deployment}"
        try:
            # called from a sync flow, run_deployment answers synchronously (a FlowRun, not a coroutine)
            run = cast("FlowRun", run_deployment(name, timeout=0, tags=["facegate", "drift-trigger"]))
        except ObjectNotFound:
            log.warning("deployment %s is not on this Prefect server: the chain runs in this flow run", name)
        else:
            log.info("retraining: flow run %s of deployment %s (%s)", run.id, name, reason)
            return {"deployment": name, "flow_run_id": str(run.id), "reason": reason}
    try:
        out = retrain_flow()
    except RetrainBusy as e:
        log.warning("retraining not started: %s", e)
        return {"busy": str(e), "reason": reason}
    return {k: v for k, v in out.items() if not isinstance(v, dict)}
