"""Where things live, and the embedded defaults of the MLOps stack.

Everything stateful sits under one gitignored folder in the repository (``.facegate/``), each piece
overridable by environment: FACEGATE_HOME (the state folder), FACEGATE_GALLERY (the enrolment store,
see :func:`gallery_dir`), FACEGATE_DATASETS (the read-only datasets root), FACEGATE_WEIGHTS (the read-only
root of pretrained weights no package ships, see :func:`weights_root`), FACEGATE_PARAMS,
MLFLOW_TRACKING_URI, PREFECT_HOME / PREFECT_API_URL.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # components/core/paths.py -> the repository

# Network calls at import time and telemetry are off unless a user turns them back on.
QUIET_ENV = {
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLI_PROMPT": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "DVC_NO_UPDATE_CHECK": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
    "OPENCV_LOG_LEVEL": "ERROR",  # OpenCV 5's DNN prints a WARN per loaded model (YuNet) otherwise
}


def repo_root() -> Path:
    return Path(os.environ.get("FACEGATE_REPO", REPO_ROOT)).resolve()


def state_dir() -> Path:
    return Path(os.environ.get("FACEGATE_HOME", repo_root() / ".facegate")).resolve()


def datasets_root() -> Path:
    default = repo_root().parent / "shared" / "datasets"
    return Path(os.environ.get("FACEGATE_DATASETS", default)).resolve()


def weights_root() -> Path:
    """Pretrained weights that no package ships (MiniFASNet): read-only, like the datasets root, and as
    easy to point elsewhere (``FACEGATE_WEIGHTS``); every file is checked by sha256 before use
    (``facegate.components.core.weights.root_weight_path``)."""
    default = repo_root().parent / "shared" / "weights"
    return Path(os.environ.get("FACEGATE_WEIGHTS", default)).resolve()


def gallery_dir() -> Path:
    """The enrolment store: photos, gallery versions, the calibration copy.

    ``FACEGATE_GALLERY`` if set. Otherwise ``gallery/`` in the repository, beside ``gallery.dvc`` (DVC
    versions it there), while the state folder is the repository's own (``.facegate/`` or another
    folder inside it); a ``FACEGATE_HOME`` outside the repository (a deployment's state folder) takes
    the gallery with the rest of the state, to ``$FACEGATE_HOME/gallery`` (DVC can only version folders
    inside its repository: snapshots are then skipped, saying so).
    """
    if os.environ.get("FACEGATE_GALLERY"):
        return Path(os.environ["FACEGATE_GALLERY"]).resolve()
    state, repo = state_dir(), repo_root()
    return repo / "gallery" if state.is_relative_to(repo) else state / "gallery"


def params_path() -> Path:
    return Path(os.environ.get("FACEGATE_PARAMS", repo_root() / "params.yaml"))


def data_dir() -> Path:
    """The DVC-tracked data folder (``data.dvc`` beside it)."""
    return repo_root() / "data"


def mlflow_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state_dir() / 'mlflow.db'}"


def use_mlflow_store(uri: str | None = None) -> str:
    """Point this process's MLflow at ``uri`` (default: the store of the current state folder) and
    leave ``MLFLOW_TRACKING_URI`` in the environment as it was. MLflow's ``set_tracking_uri`` also
    writes that variable, which ``mlflow_tracking_uri`` reads as the user's choice: a process that later
    points FACEGATE_HOME elsewhere (a sandboxed chain, a benchmark, the next test) would otherwise keep
    talking to the first store it used (stop 34's CI: one test's champion served another's bench)."""
    import mlflow  # heavy: MLflow takes seconds to import; only the paths that track or load models need it

    uri = uri or mlflow_tracking_uri()
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
    return uri


def mlflow_artifact_root() -> str:
    return os.environ.get("FACEGATE_MLFLOW_ARTIFACTS") or (state_dir() / "mlartifacts").as_uri()


def experiment_artifact_root() -> str | None:
    """Where a new experiment keeps its artifacts: FACEGATE_MLFLOW_ARTIFACTS if set; None with a tracking
    server (``http(s)://``), whose own ``--artifacts-destination`` (an S3 bucket) decides; else the
    state dir's folder, beside the embedded SQLite store."""
    if os.environ.get("FACEGATE_MLFLOW_ARTIFACTS"):
        return os.environ["FACEGATE_MLFLOW_ARTIFACTS"]
    if mlflow_tracking_uri().startswith(("http://", "https://")):
        return None
    return mlflow_artifact_root()


def dvc_default_remote() -> Path:
    return state_dir() / "dvc-remote"


def configure_environment() -> None:
    """Set the embedded defaults before MLflow/Prefect/GX are imported; explicit env always wins."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    state = state_dir()
    state.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(state / "prefect"))
