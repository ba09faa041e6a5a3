"""Where a model's calibration is kept: with a registered version (an MLflow artifact of its run and
version tags), or as a file for a pretrained fingerprint (committed under ``calibration/``, or local).

The calibration package computes and reads the file format; storing it with the MLflow registry is
lifecycle's concern, so calibration never imports the registry.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from facegate.components.calibration.store import (
    ARTIFACT_FILE,
    ARTIFACT_PATH,
    VERSION_TAG,
    ModelCalibration,
    local_file,
    pretrained_file,
)
from facegate.components.lifecycle.registry import mlflow_client


def registered_version(embedder_version: str) -> tuple[str, str] | None:
    """(model name, version) of a registered label ``name/version``; None for a pretrained fingerprint."""
    if embedder_version.startswith("sha256:") or "/" not in embedder_version:
        return None
    name, version = embedder_version.rsplit("/", 1)
    return name, version


def log_version_calibration(name: str, version: str, cal: ModelCalibration, target_far: float) -> str:
    """Store ``cal`` with a registered version: the file as an artifact of the version's run, the tau at
    ``target_far`` and the sets as version tags. Returns the artifact URI."""
    client = mlflow_client()
    mv = client.get_model_version(name, str(version))
    with tempfile.TemporaryDirectory() as tmp:
        path = cal.save(Path(tmp) / ARTIFACT_FILE)
        client.log_artifact(mv.run_id, str(path), ARTIFACT_PATH)
    uri = f"runs:/{mv.run_id}/{ARTIFACT_PATH}/{ARTIFACT_FILE}"
    summary = cal.summary(target_far)
    for key, value in {
        VERSION_TAG: uri,
        "calibration_tau": f"{summary['tau']:.6f}",
        "calibration_target_far": f"{target_far:g}",
        "calibration_sets": ",".join(s.name for s in cal.sets),
    }.items():
        client.set_model_version_tag(name, str(version), key, value)
    return uri


def load_version_calibration(name: str, version: str) -> ModelCalibration | None:
    """The calibration stored with a registered version (None when it has none)."""
    import mlflow  # heavy: MLflow takes seconds to import; only the paths that track or load models need it
    from mlflow.exceptions import (
        MlflowException,  # heavy: MLflow takes seconds to import; only the paths that track or load models need it
    )

    client = mlflow_client()
    try:
        tags = dict(client.get_model_version(name, str(version)).tags or {})
    except MlflowException:  # not in this tracking store (a gallery from another deployment's registry)
        return None
    uri = tags.get(VERSION_TAG)
    if not uri:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return ModelCalibration.load(Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)))


def stored_calibration(embedder_name: str, embedder_version: str) -> ModelCalibration | None:
    """The model's own calibration: the registered version's artifact, or the committed file for a
    pretrained fingerprint; None when the model has none yet (``facegate calibrate`` makes it)."""
    reg = registered_version(embedder_version)
    if reg is not None:
        return load_version_calibration(*reg)
    for path in (pretrained_file(embedder_name, embedder_version), local_file(embedder_name, embedder_version)):
        if path.is_file():
            return ModelCalibration.load(path)
    return None
