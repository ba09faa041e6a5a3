"""Gallery flows: batch enrolment, one-person enrol/remove, rebuild. Each leaves a new gallery version,
versioned by DVC (``gallery.dvc``) and recorded in MLflow (counts and calibration only: no face images,
no embeddings).

The CLI's single-item commands do not come here (no Prefect server for one person): they call
``facegate.components.service.gallery_changes`` directly, the same functions these flows use.
"""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from facegate.components.gallery import current_version
from facegate.components.lifecycle import data_version, gallery_snapshots
from facegate.components.lifecycle.tracking import tracked_run
from facegate.components.service.facade import FaceGate
from facegate.components.service.gallery_changes import (
    enrol_batch,
    enrol_recorded,
    gallery_experiment,
    log_gallery,
    read_batch,
    read_photo,
    remove_recorded,
)

GALLERY_TARGET = gallery_snapshots.TARGET


@task(name="version-gallery", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def version_gallery() -> str:
    """A DVC snapshot of gallery/ now (serialised with every other snapshot); its version."""
    return gallery_snapshots.snapshot()


@flow(name="enrol", log_prints=True)
def enrol_flow(employee_id: str, name: str, photo_paths: list[str], replace: bool = False) -> dict:
    result = enrol_recorded(FaceGate(), employee_id, name, photo_paths, replace=replace)
    result["gallery_data_version"] = version_gallery()
    get_run_logger().info(
        "enrolled %s with %d photo(s); gallery %s", employee_id, result["photos"], result["gallery_data_version"]
    )
    return result


@flow(name="remove", log_prints=True)
def remove_flow(employee_id: str) -> dict:
    result = remove_recorded(FaceGate(), employee_id)
    result["gallery_data_version"] = version_gallery()
    return result


@flow(name="enrol-batch", log_prints=True)
def batch_enrol_flow(source: str, replace: bool = False, force: bool = False) -> dict:
    """Many employees from a folder (``<id>/*.jpg``) or a CSV (``id,name,path``): each row enrolled or
    reported, suspected duplicates apart from errors (``enrol_batch``; ``force`` enrols the duplicates),
    one MLflow run, one DVC snapshot at the end."""
    from tqdm import tqdm  # optional: a progress bar only here

    gate = FaceGate()
    rows = read_batch(Path(source))
    log = get_run_logger()

    def warn(row: dict) -> None:
        if row["status"] != "ok":
            log.warning(
                "%s: %s [%s] %s", row["employee_id"], row["status"], row.get("code", "duplicate_face"), row["message"]
            )

    with tracked_run(
        gallery_experiment(gate.settings),
        "enrol-batch",
        params={"source": source, "rows": len(rows), "replace": replace, "force": force},
        data_version=data_version.read_version(),
    ):
        result = enrol_batch(
            gate,
            tqdm(rows, desc="enrolling", unit="employee", file=sys.stderr),
            replace=replace,
            force=force,
            on_row=warn,
        )
        mlflow.log_metrics({k: result[k] for k in ("enrolled", "duplicates", "failed")})
        mlflow.log_dict(result["rows"], "batch_report.json")
        summary = {}
        if result["enrolled"]:
            version = version_gallery()  # one snapshot for the whole batch
            summary = log_gallery(gate.store.load(), current_version(gate.store.index_dir), version)
    return {"source": source, **result, "gallery": summary}


@flow(name="gallery-build", log_prints=True)
def build_gallery_flow() -> dict:
    """Re-embed every enrolled employee's stored photos with the model in service and recalibrate tau:
    the only way to a gallery after the model changes (embeddings of different models never mix)."""
    gate = FaceGate()
    with tracked_run(gallery_experiment(gate.settings), "gallery-build", data_version=data_version.read_version()):
        fresh = gate.rebuild_gallery(data_version=data_version.read_version())
        m = fresh.manifest
        get_run_logger().info(
            "tau %.4f for FAR %.0e (achieved FAR %.2e, TAR %.4f)", m.tau, m.target_far, m.achieved_far, m.achieved_tar
        )
        version = version_gallery()
        summary = log_gallery(fresh, current_version(gate.store.index_dir), version)
    return summary


__all__ = ["batch_enrol_flow", "build_gallery_flow", "enrol_flow", "read_photo", "remove_flow", "version_gallery"]
