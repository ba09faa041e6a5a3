"""Gallery changes as the operator's record: the FaceGate verb, then an MLflow run saying what changed.

One path for the CLI's single-item commands (no Prefect server: a one-person enrolment takes seconds)
and for the Prefect gallery flows (batch enrolment, rebuild). The run goes to the ``<prefix>-gallery``
experiment and holds counts and calibration only: no face images, no embeddings. The flows log it at
once (``record``); the CLI's one-item commands put it in the outbox (``record_later``), logged after
they answer by a detached process (``facegate.components.lifecycle.run_outbox``). The DVC snapshot of
``gallery/`` is asked for, not made here (``facegate.components.lifecycle.gallery_snapshots``): the caller
decides whether it happens now, in a background worker or in a detached process.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from facegate.components.core.errors import DatasetError, DuplicateFace, FacegateError, UnreadableImage
from facegate.components.core.settings import Settings
from facegate.components.gallery import Gallery, current_version
from facegate.components.gallery.enrolment import Photo
from facegate.components.lifecycle import data_version, run_outbox
from facegate.components.lifecycle.tracking import flush_pending_runs, numeric_metrics, pending_run, tracked_run
from facegate.components.service.facade import FaceGate

GALLERY_EXPERIMENT = "gallery"


def gallery_experiment(settings: Settings) -> str:
    return f"{settings.tracking.experiment_prefix}-{GALLERY_EXPERIMENT}"


def read_photo(path: Path | str) -> Photo:
    """A photo file's bytes, named by its path; an unreadable file is a typed error naming it."""
    path = Path(path)
    try:
        return Photo(str(path), path.read_bytes())
    except OSError as exc:
        raise UnreadableImage(path, exc.strerror or "cannot read") from None


PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass
class BatchRow:
    employee_id: str
    name: str
    photos: list[Path] = field(default_factory=list)


def read_batch(source: Path) -> list[BatchRow]:
    """The employees of a batch, in order: a folder of ``<id>/<photo>`` (name = id) or a CSV with the
    columns ``id,name,path`` (paths relative to the CSV's folder; rows of one id are its photos).
    Ids are not checked here: a bad one is that row's error in the report."""
    source = Path(source)
    if source.is_dir():
        rows = [
            BatchRow(d.name, d.name, sorted(p for p in d.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES))
            for d in sorted(source.iterdir())
            if d.is_dir() and not d.name.startswith(".")
        ]
        if not rows:
            raise DatasetError(f"{source}: no <id>/ folders with photos")
        return rows
    if not source.is_file():
        raise DatasetError(f"{source}: neither a folder of <id>/ photos nor a CSV file")
    by_id: dict[str, BatchRow] = {}
    try:
        with source.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"id", "path"} - set(reader.fieldnames or ())
            if missing:
                raise DatasetError(f"{source}: missing column(s) {', '.join(sorted(missing))} (need id,name,path)")
            for line, rec in enumerate(reader, start=2):
                eid, path = (rec.get("id") or "").strip(), (rec.get("path") or "").strip()
                if not path:
                    raise DatasetError(f"{source}:{line}: empty path")
                row = by_id.setdefault(eid, BatchRow(eid, (rec.get("name") or "").strip() or eid))
                row.photos.append((source.parent / path) if not Path(path).is_absolute() else Path(path))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{source}: not a UTF-8 CSV ({exc})") from None
    if not by_id:
        raise DatasetError(f"{source}: no rows")
    return list(by_id.values())


def gallery_summary(gallery: Gallery, index_version: str | None = None) -> dict:
    m = gallery.manifest
    return {
        "employees": gallery.n_employees,
        "vectors": gallery.n_vectors,
        "tau": m.tau,
        "target_far": m.target_far,
        "achieved_far": m.achieved_far,
        "achieved_tar": m.achieved_tar,
        "embedder": f"{m.embedder_name}@{m.embedder_version}",
        "gallery_index_version": index_version,
    }


def log_gallery(gallery: Gallery, index_version: str | None = None, dvc_version: str | None = None) -> dict:
    """Into the active MLflow run: the gallery's counts, calibration and manifest; returns the summary."""
    import mlflow  # heavy: MLflow takes seconds to import; only the paths that track or load models need it

    summary = gallery_summary(gallery, index_version)
    if dvc_version:
        summary["gallery_data_version"] = dvc_version
    metrics, tags, dicts = _run_content(summary, gallery.manifest.to_dict())
    mlflow.log_metrics(metrics)
    mlflow.set_tags(tags)
    for artifact_file, content in dicts.items():
        mlflow.log_dict(content, artifact_file)
    return summary


def _run_content(summary: dict, manifest: dict) -> tuple[dict, dict, dict]:
    """A gallery change's run: (metrics, tags, {artifact file: dict}); counts and calibration only."""
    metrics = numeric_metrics(summary)
    tags = {
        k: v
        for k, v in {
            "embedder_version": manifest["embedder_version"],
            "gallery_index_version": summary.get("gallery_index_version"),
            "gallery_version": summary.get("gallery_data_version"),
        }.items()
        if v
    }
    return metrics, tags, {"gallery_manifest.json": manifest}


def record(
    gate: FaceGate, run_name: str, gallery: Gallery, params: dict | None = None, dvc_version: str | None = None
) -> dict:
    """One MLflow run for a change already made (a failed change leaves no run)."""
    index_version = current_version(gate.store.index_dir) if gate.store.exists() else None
    with tracked_run(
        gallery_experiment(gate.settings), run_name, params=params, data_version=data_version.read_version()
    ) as run:
        summary = log_gallery(gallery, index_version, dvc_version)
    return {**summary, "mlflow_run_id": run.info.run_id}


# ------------------------------------------------------------------ records logged later, by another process


def pending_records_dir() -> Path:
    return run_outbox.outbox_dir()


def record_later(gate: FaceGate, run_name: str, gallery: Gallery, params: dict | None = None) -> dict:
    """What ``record`` would log, put in the outbox (``facegate.components.lifecycle.run_outbox``: a file
    written atomically, fsynced) for a flusher in another process (``run_outbox.spawn_flush``): a CLI
    enrolment answers without importing MLflow and opening its store, which cost more than the enrolment
    itself. A flusher that dies leaves the file for the next one."""
    index_version = current_version(gate.store.index_dir) if gate.store.exists() else None
    summary = gallery_summary(gallery, index_version)
    metrics, tags, dicts = _run_content(summary, gallery.manifest.to_dict())
    run_outbox.put(
        pending_run(
            gallery_experiment(gate.settings),
            run_name,
            params=params,
            data_version=data_version.read_version(),
            metrics=metrics,
            tags=tags,
            dicts=dicts,
        )
    )
    return summary


def flush_records() -> list[str]:
    """Log every pending record as its MLflow run, oldest first, each once; returns the run ids
    (``tracking.flush_pending_runs``: a dead flusher's claim is taken over)."""
    return flush_pending_runs()


def enrol_recorded(
    gate: FaceGate,
    employee_id: str,
    name: str,
    photo_paths: Sequence[Path | str],
    replace: bool = False,
    force: bool = False,
    later: bool = False,
) -> dict:
    """Enrol one employee from photo files (``force``: even if the face is enrolled under another id),
    then record the run (``later``: as a pending record, see ``record_later``)."""
    photos = [read_photo(p) for p in photo_paths]
    gallery = gate.enrol(employee_id, name or employee_id, photos, replace=replace, force=force)
    params = {"replace": replace, "photos": len(photos), "force": force}
    summary = record_later(gate, "enrol", gallery, params) if later else record(gate, "enrol", gallery, params)
    return {"employee_id": employee_id, "photos": len(photos), **summary}


def enrol_batch(
    gate: FaceGate,
    rows: Iterable[BatchRow],
    replace: bool = False,
    force: bool = False,
    on_row: Callable[[dict], None] = lambda row: None,
) -> dict:
    """Each row enrolled (``force``: even a face that looks already enrolled under another id), or reported:
    a suspected duplicate apart from an error, since the operator decides it (enrol anyway with force,
    or skip a person already enrolled) while an error is the row's to fix. A bad row stops nothing."""
    report: list[dict] = []
    for row in rows:
        try:
            gate.enrol(row.employee_id, row.name, [read_photo(p) for p in row.photos], replace=replace, force=force)
            report.append({"employee_id": row.employee_id, "status": "ok", "photos": len(row.photos)})
        except DuplicateFace as exc:
            report.append({**exc.details(), "status": "duplicate", "message": exc.message})
        except FacegateError as exc:
            report.append({"employee_id": row.employee_id, "status": "error", "code": exc.code, "message": exc.message})
        on_row(report[-1])
    by = {status: [r for r in report if r["status"] == status] for status in ("ok", "duplicate", "error")}
    return {
        "enrolled": len(by["ok"]),
        "duplicates": len(by["duplicate"]),
        "failed": len(by["error"]),
        "suspected_duplicates": by["duplicate"],
        "errors": by["error"],
        "rows": report,
    }


def remove_recorded(gate: FaceGate, employee_id: str, later: bool = False) -> dict:
    """Remove one employee (embeddings in every local version, photos, and with ``access_log.erase_on_remove``
    their access-log decision rows), then record the run (``later``: as a pending record); the answer
    says what the access log kept."""
    removed = gate.remove_employee(employee_id)
    gallery = gate.store.load()
    summary = record_later(gate, "remove", gallery) if later else record(gate, "remove", gallery)
    return {**removed, **summary}
