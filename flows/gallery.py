"""Gallery flows: enrol, remove, rebuild. Each leaves a new gallery version, versioned by DVC
(``gallery.dvc``) and recorded in MLflow (counts and calibration only: no face images, no embeddings)."""
from __future__ import annotations

from pathlib import Path

import mlflow
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from components import data_version
from components.errors import UnreadableImage
from components.enrolment import Photo
from components.gallery import Gallery
from components.service import FaceGate
from components.settings import Settings
from components.tracking import tracked_run

GALLERY_EXPERIMENT = "gallery"
GALLERY_TARGET = "gallery"


def read_photo(path: Path) -> Photo:
    try:
        return Photo(str(path), path.read_bytes())
    except OSError as exc:
        raise UnreadableImage(path, exc.strerror or "cannot read") from None


def _experiment(settings: Settings) -> str:
    return f"{settings.tracking.experiment_prefix}-{GALLERY_EXPERIMENT}"


@task(name="version-gallery", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def version_gallery() -> str:
    version = data_version.add_data(target=GALLERY_TARGET)
    data_version.push(target=GALLERY_TARGET)
    return version


def _log_gallery(gallery: Gallery, version: str) -> dict:
    m = gallery.manifest
    summary = {"employees": gallery.n_employees, "vectors": gallery.n_vectors, "tau": m.tau,
               "target_far": m.target_far, "achieved_far": m.achieved_far, "achieved_tar": m.achieved_tar,
               "embedder": f"{m.embedder_name}@{m.embedder_version}", "gallery_data_version": version}
    mlflow.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and v is not None})
    mlflow.set_tags({"embedder_version": m.embedder_version, "gallery_version": version})
    mlflow.log_dict(m.to_dict(), "gallery_manifest.json")
    return summary


@flow(name="enrol", log_prints=True)
def enrol_flow(employee_id: str, name: str, photo_paths: list[str], replace: bool = False) -> dict:
    gate = FaceGate()
    photos = [read_photo(Path(p)) for p in photo_paths]
    with tracked_run(_experiment(gate.settings), "enrol", params={"replace": replace, "photos": len(photos)},
                     data_version=data_version.read_version()):
        gallery = gate.enrol(employee_id, name, photos, replace=replace)
        version = version_gallery()
        summary = _log_gallery(gallery, version)
    get_run_logger().info("enrolled %s with %d photo(s); gallery %s", employee_id, len(photos), version)
    return {"employee_id": employee_id, **summary}


@flow(name="remove", log_prints=True)
def remove_flow(employee_id: str) -> dict:
    gate = FaceGate()
    with tracked_run(_experiment(gate.settings), "remove", data_version=data_version.read_version()):
        n = gate.remove(employee_id)
        version = version_gallery()
        summary = _log_gallery(gate.store.load(), version)
    return {"employee_id": employee_id, "vectors_removed": n, **summary}


@flow(name="gallery-build", log_prints=True)
def build_gallery_flow() -> dict:
    """Re-embed every enrolled employee's stored photos with the model in service and recalibrate tau:
    the only way to a gallery after the model changes (embeddings of different models never mix)."""
    gate = FaceGate()
    with tracked_run(_experiment(gate.settings), "gallery-build", data_version=data_version.read_version()):
        fresh = gate.rebuild_gallery(data_version=data_version.read_version())
        m = fresh.manifest
        get_run_logger().info("tau %.4f for FAR %.0e (achieved FAR %.2e, TAR %.4f)", m.tau, m.target_far,
                              m.achieved_far, m.achieved_tar)
        version = version_gallery()
        summary = _log_gallery(fresh, version)
    return summary
