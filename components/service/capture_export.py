"""The deployment's confirmed captures as a dataset: exported into the data folder DVC versions, then
ingested and validated like every other dataset (kind ``captures``, components/core/datasets.py).

What goes in: captures an operator labelled ``employee`` (service/captures.py), of employees enrolled
now, who consent to training now (service/consent.py). The export is a snapshot of that, written as
``<employee>/<capture>.png`` (the aligned chip the entrance made, as stored) and ``captures.csv`` (path,
employee_id, capture_id, entrance, captured_at, consent, consent_at, chip_geometry, model):
- a snapshot, not an append: whatever left the store (retention, erasure, a relabel, a withdrawal)
  leaves the dataset at the next export;
- idempotent: a file whose bytes are already there is not rewritten, so an unchanged export changes no
  mtime and the chain's skip check (lifecycle/retrain_skip.py) sees nothing new.
An erasure (service/erasure.py) does not wait for the next export: ``erase_exported`` deletes the
employee's images from the export and from the ingested dataset, drops their rows from both manifests,
empties every cache computed from captures (lifecycle/training_data.py ``deploy_cache_dir``) and
purges the images' objects from the DVC cache and folder remotes (a cloud remote is named in the
answer: its own retention must remove them). The next ingest makes the data version without them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from facegate.components.core.datasets import CAPTURES_KIND, CAPTURES_TABLE, QUARANTINE_DIR, source_folder
from facegate.components.core.errors import UnknownEmployee
from facegate.components.core.paths import data_dir
from facegate.components.core.settings import Settings
from facegate.components.lifecycle import data_version
from facegate.components.lifecycle.training_data import deploy_cache_dir
from facegate.components.lifecycle.validation import CaptureReference
from facegate.components.service.consent import ConsentStore
from facegate.components.service.deployment import local_actor

if TYPE_CHECKING:
    from facegate.components.service.facade import FaceGate

TABLE_COLUMNS = [
    "path",
    "employee_id",
    "capture_id",
    "entrance",
    "captured_at",
    "consent",
    "consent_at",
    "chip_geometry",
    "model",
]


def consent_store(gate: FaceGate) -> ConsentStore | None:
    """The consent register in the gate's access-log database; None for a gate without an access log."""
    log = gate.access_log
    return ConsentStore(log.url) if log is not None else None


def enrolled_employees(gate: FaceGate) -> set[str]:
    """Who is in the current gallery (none before the first enrolment)."""
    return set(gate.store.load().employees()["employee_id"]) if gate.store.exists() else set()


def capture_reference(gate: FaceGate) -> CaptureReference:
    """What validation checks a captures manifest against now: who is enrolled, who consents."""
    consents = consent_store(gate)
    consenting = set(consents.current()) if consents is not None else set()
    return CaptureReference(frozenset(enrolled_employees(gate)), frozenset(consenting))


def set_training_consent(
    gate: FaceGate, employee_id: str, granted: bool, *, actor: str | None = None, note: str = ""
) -> dict:
    """Record an employee's grant (only of someone enrolled) or withdrawal, with an audit row."""
    consents = consent_store(gate)
    if consents is None:
        raise RuntimeError("no access log: this gate keeps no consent register")
    if granted and employee_id not in enrolled_employees(gate):
        raise UnknownEmployee(employee_id)
    row = consents.record(employee_id, granted, actor or local_actor(), note)
    gate.audit(actor, "consent_grant" if granted else "consent_withdraw", employee_id, note=note)
    return row


def captures_sources(settings: Settings) -> list[tuple[str, Path]]:
    """(dataset name, export folder) of every ``captures`` source in ``ingest.datasets``."""
    return [(s.name, source_folder(s.kind, s.path)) for s in settings.ingest.datasets if s.kind == CAPTURES_KIND]


def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def _table_bytes(rows: list[dict]) -> bytes:
    return pd.DataFrame(rows, columns=TABLE_COLUMNS).to_csv(index=False, lineterminator="\n").encode()


def export_captures(gate: FaceGate, folder: Path) -> dict:
    """Snapshot the confirmed captures of enrolled, consenting employees into ``folder``; what was
    exported, left out (and why), written and removed."""
    folder = Path(folder)
    store, consents = gate.captures, consent_store(gate)
    confirmed = store.confirmed() if store is not None else []
    summaries = {r["id"]: r for r in store.rows()} if store is not None else {}
    employees = enrolled_employees(gate) if confirmed else set()
    consenting = consents.current() if consents is not None and confirmed else {}
    rows, written, not_enrolled, no_consent = [], 0, 0, 0
    for c in confirmed:
        if c.employee_id not in employees:
            not_enrolled += 1
            continue
        if c.employee_id not in consenting:
            no_consent += 1
            continue
        meta = summaries.get(c.id)
        if meta is None:  # purged or erased between the two reads
            continue
        rel = f"{c.employee_id}/{c.id}.png"
        written += _write_if_changed(folder / rel, c.chip)
        at = meta["at"]
        rows.append(
            {
                "path": rel,
                "employee_id": c.employee_id,
                "capture_id": c.id,
                "entrance": meta["entrance"] or "",
                "captured_at": at if isinstance(at, str) else at.isoformat(timespec="seconds"),
                "consent": "true",
                "consent_at": consenting[c.employee_id].isoformat(timespec="seconds"),
                "chip_geometry": c.chip_geometry or "",
                "model": c.model or "",
            }
        )
    keep = {folder / str(r["path"]) for r in rows}
    removed = [p for p in folder.rglob("*.png") if p not in keep] if folder.is_dir() else []
    for p in removed:
        p.unlink()
    _remove_empty_dirs(folder)
    _write_if_changed(folder / CAPTURES_TABLE, _table_bytes(rows))
    return {
        "folder": str(folder),
        "exported": len(rows),
        "employees": len({r["employee_id"] for r in rows}),
        "left_out_not_enrolled": not_enrolled,
        "left_out_no_consent": no_consent,
        "written": written,
        "removed": len(removed),
    }


def export_all(gate: FaceGate) -> list[dict]:
    """Every ``captures`` source of ``ingest.datasets`` exported (usually one)."""
    return [{"dataset": name, **export_captures(gate, folder)} for name, folder in captures_sources(gate.settings)]


def _remove_empty_dirs(folder: Path) -> None:
    if folder.is_dir():
        for d in sorted((p for p in folder.iterdir() if p.is_dir()), reverse=True):
            if not any(d.iterdir()):
                d.rmdir()


def erase_exported(settings: Settings, employee_id: str) -> dict:
    """Delete the employee's capture images from every captures export and ingested captures dataset, their
    manifest rows, every cache computed from captures, and the images' objects in the DVC cache and
    folder remotes (an older data version cannot bring them back); what was deleted."""
    files: list[Path] = []
    for name, export in captures_sources(settings):
        dataset = data_dir() / name
        for folder in (export / employee_id, dataset / employee_id, dataset / QUARANTINE_DIR / employee_id):
            if folder.is_dir():
                files += [p for p in folder.rglob("*") if p.is_file()]
        table = export / CAPTURES_TABLE
        if table.is_file():
            rows = pd.read_csv(table, dtype=str, keep_default_na=False)
            _write_if_changed(table, _table_bytes(rows[rows["employee_id"] != employee_id].to_dict("records")))
        for parquet, prefix in (
            (dataset / "manifest.parquet", f"{name}/{employee_id}/"),
            (dataset / "quarantine.parquet", f"{name}/{QUARANTINE_DIR}/{employee_id}/"),
        ):
            if parquet.is_file():
                frame = pd.read_parquet(parquet)
                kept = frame[~frame["path"].astype(str).str.startswith(prefix)]
                if len(kept) != len(frame):
                    kept.to_parquet(parquet.with_suffix(".tmp"), index=False)
                    os.replace(parquet.with_suffix(".tmp"), parquet)
    md5s = {hashlib.md5(p.read_bytes(), usedforsecurity=False).hexdigest() for p in files}  # DVC's object names
    for p in files:
        p.unlink()
    for name, export in captures_sources(settings):
        for folder in (
            export / employee_id,
            data_dir() / name / employee_id,
            data_dir() / name / QUARANTINE_DIR / employee_id,
        ):
            shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(deploy_cache_dir(), ignore_errors=True)
    purged = data_version.purge_objects(md5s) if md5s else {"objects_purged": 0, "remotes_not_purged": []}
    return {
        "capture_images_erased": len(files),
        "dvc_objects_purged": purged["objects_purged"],
        "dvc_remotes_not_purged": purged["remotes_not_purged"],
    }
