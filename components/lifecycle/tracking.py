"""The one MLflow helper: every run carries the git commit, the data version, the params and its duration.

Runs of one pipeline share an experiment and the same metric names, so MLflow's compare view lines
them up. A stage started inside another run becomes a nested run of it. A run can also be logged later,
by another process, from the outbox (``facegate.components.lifecycle.run_outbox``): ``pending_run`` is
what it will log, ``flush_pending_runs`` logs the outbox; a top-level run starts a flusher for files
left over there.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from facegate.components.core.paths import (
    configure_environment,
    experiment_artifact_root,
    mlflow_tracking_uri,
    repo_root,
    use_mlflow_store,
)
from facegate.components.lifecycle import run_outbox
from facegate.components.lifecycle.packaging import code_paths, pinned_requirements

MAX_PARAM_CHARS = 500


def git_commit(root: Path | None = None) -> str:
    """HEAD's sha, with ``-dirty`` when tracked code differs from it; ``unknown`` outside git.

    DVC pointers and .gitignore are left out of the check: a new data version is recorded in its own
    tag, and it must not make the code look modified.
    """
    root = root or repo_root()
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":(exclude)*.dvc",
                ":(exclude).gitignore",
                ":(exclude).dvc",
                ":(exclude).dvcignore",
            ],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def ensure_experiment(name: str) -> str:
    """Experiment id for ``name``, created with the state dir's artifact root on first use."""
    import mlflow  # heavy: MLflow takes seconds to import; only the paths that track or load models need it

    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = experiment_artifact_root()  # None: the tracking server's artifact store decides
    return mlflow.create_experiment(name, artifact_location=f"{root}/{name}" if root else None)


@contextmanager
def tracked_run(
    experiment: str,
    run_name: str,
    *,
    params: dict[str, Any] | None = None,
    data_version: str | None = None,
    tags: dict[str, str] | None = None,
    tracking_uri: str | None = None,
) -> Iterator[Any]:
    """An MLflow run (nested inside the active one, if any) that logs ``duration_s`` when it ends.
    ``tracking_uri``: another store than this process's (a pending run goes to the one it was made for).
    A top-level run first starts a flusher for pending runs left over (``run_outbox.drain_leftovers``)."""
    configure_environment()
    import mlflow  # heavy: MLflow takes seconds to import; only the paths that track or load models need it

    use_mlflow_store(tracking_uri or mlflow_tracking_uri())
    parent = mlflow.active_run()
    if parent is None:
        run_outbox.drain_leftovers()
    exp_id = parent.info.experiment_id if parent else ensure_experiment(experiment)
    all_tags = {"git_commit": git_commit(), "data_version": data_version or "none", **(tags or {})}
    if parent:
        all_tags["parent_run_id"] = parent.info.run_id
    start = time.perf_counter()
    run = mlflow.start_run(run_name=run_name, experiment_id=exp_id, nested=parent is not None, tags=all_tags)
    ok = False
    try:
        if params:
            mlflow.log_params({k: str(v)[:MAX_PARAM_CHARS] for k, v in params.items()})
        yield run
        ok = True
    finally:
        # Closing the run is best effort when the block already failed: with the tracking server (or its
        # database) down, the block's own error is the one to see, not a second one from MLflow.
        try:
            mlflow.log_metric("duration_s", time.perf_counter() - start)
            mlflow.end_run("FINISHED" if ok else "FAILED")
        except Exception:
            if ok:
                raise


def set_data_version(version: str | None) -> None:
    """Record a data version produced during the run (ingest learns it only at its end)."""
    import mlflow  # heavy: MLflow takes seconds to import; only the paths that track or load models need it

    mlflow.set_tag("data_version", version or "none")


def numeric_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """The plain numbers of a result dict (no bools, None, lists or dicts), as MLflow metrics."""
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


@contextmanager
def artifact_folder(artifact_path: str) -> Iterator[Path]:
    """A temporary folder whose files go to the active run under ``artifact_path`` when the block ends."""
    import mlflow  # heavy: MLflow takes seconds to import; only the paths that track or load models need it

    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)
        mlflow.log_artifacts(tmp, artifact_path)


def log_torch_model(model: Any) -> Any:
    """A torch model into the active run as ``model``, with pinned requirements and the library code
    (MLflow's own inference would pin a CUDA torch); returns MLflow's ModelInfo."""
    import mlflow  # heavy: MLflow takes seconds to import; only the paths that track or load models need it

    model.eval()
    return mlflow.pytorch.log_model(
        model,
        name="model",
        pip_requirements=pinned_requirements(),
        code_paths=code_paths(),
        serialization_format="pickle",
    )


# ------------------------------------------------------------------ runs logged later (the outbox)


def pending_run(
    experiment: str,
    run_name: str,
    *,
    params: dict[str, Any] | None = None,
    data_version: str | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
    dicts: Mapping[str, Any] | None = None,
) -> dict:
    """What ``tracked_run`` plus ``log_metrics``/``set_tags``/``log_dict`` would log now, as an outbox
    entry (``run_outbox.put``): the store and the git commit are today's, not the flusher's."""
    return {
        "tracking_uri": mlflow_tracking_uri(),
        "experiment": experiment,
        "run_name": run_name,
        "params": dict(params or {}),
        "data_version": data_version,
        "metrics": dict(metrics or {}),
        "tags": {"git_commit": git_commit(), **(tags or {})},
        "dicts": dict(dicts or {}),
        "written_at": time.time(),
    }


def _logged_run_id(entry: dict) -> str | None:
    """The FINISHED run an earlier flusher logged for ``entry`` (before it died, with the file kept)."""
    import mlflow  # heavy: MLflow takes seconds to import; only the paths that track or load models need it

    use_mlflow_store(entry.get("tracking_uri") or mlflow_tracking_uri())
    exp = mlflow.get_experiment_by_name(entry["experiment"])
    if exp is None or not entry.get("id"):
        return None
    found = mlflow.search_runs(
        [exp.experiment_id], filter_string=f"tags.outbox_id = '{entry['id']}'", output_format="list"
    )
    return next((r.info.run_id for r in found if r.info.status == "FINISHED"), None)


def log_pending_run(entry: dict, retried: bool = False) -> str:
    """One outbox entry as its MLflow run (in the store it was made for); the run id. ``retried``: a dead
    flusher's claim, so a FINISHED run with its ``outbox_id`` is taken as logged instead of a second."""
    import mlflow  # heavy: MLflow takes seconds to import; only the paths that track or load models need it

    if retried and (done := _logged_run_id(entry)):
        return done
    tags = {**entry.get("tags", {}), "outbox_id": entry.get("id", "")}
    if entry.get("written_at"):
        tags["outbox_delay_s"] = f"{time.time() - entry['written_at']:.1f}"
    with tracked_run(
        entry["experiment"],
        entry["run_name"],
        params=entry.get("params"),
        data_version=entry.get("data_version"),
        tags=tags,
        tracking_uri=entry.get("tracking_uri"),
    ) as run:
        if entry.get("metrics"):
            mlflow.log_metrics(entry["metrics"])
        for artifact_file, content in (entry.get("dicts") or {}).items():
            mlflow.log_dict(content, artifact_file)
    return run.info.run_id


def flush_pending_runs() -> list[str]:
    """Log every run waiting in the outbox (oldest first, each once); their ids."""
    return run_outbox.flush(log_pending_run)
