"""Removing an employee: their photos and embeddings (every local gallery version, captured templates
included), their deployment captures, their images in the captures dataset (export, ingested copy,
manifest rows, feature caches), their training consent, and the access log's part of an erasure
request. Biometric data of a leaver must not outlive the removal, and the answer must say what was
erased and what was kept (the audit rows of who changed the gallery, when).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from facegate.components.gallery.enrolment import remove
from facegate.components.service.capture_export import consent_store, erase_exported

if TYPE_CHECKING:
    from facegate.components.service.facade import FaceGate


def erase_employee(gate: FaceGate, employee_id: str, *, actor: str | None = None) -> dict:
    """Delete the employee's photos and embeddings; with ``access_log.erase_on_remove`` their decision
    rows too. The answer counts what went and names what stayed."""
    with gate.write_lock:
        n = remove(gate.store, employee_id)
        gate.reload()
    out: dict = {
        "employee_id": employee_id,
        "vectors_removed": n,
        "access_rows_erased": 0,
        "access_rows_kept": 0,
        "captures_erased": 0,
        **erase_exported(gate.settings, employee_id),  # the captures dataset's files, caches, DVC objects
        "consent_rows_erased": 0,
    }
    log = gate.access_log
    if log is None:
        return out
    # captures hold chips and embeddings (biometrics): always erased, whatever access_log.erase_on_remove says
    out["captures_erased"] = gate.captures.erase_employee(employee_id) if gate.captures is not None else 0
    consents = consent_store(gate)
    out["consent_rows_erased"] = consents.erase_employee(employee_id) if consents is not None else 0
    erase = gate.settings.access_log.erase_on_remove
    if erase:
        out["access_rows_erased"] = log.erase_employee(employee_id)
    else:
        out["access_rows_kept"] = log.count(employee_id=employee_id)
    gate.audit(
        actor,
        "remove",
        employee_id,
        vectors_removed=n,
        access_rows_erased=out["access_rows_erased"],
        access_rows_kept=out["access_rows_kept"],
        captures_erased=out["captures_erased"],
        capture_images_erased=out["capture_images_erased"],
        dvc_objects_purged=out["dvc_objects_purged"],
        consent_rows_erased=out["consent_rows_erased"],
        gallery_version=gate.gallery_version,
    )
    out["kept"] = "the audit rows of this employee's enrolment and removal" + (
        "" if erase else f", and {out['access_rows_kept']} decision rows (access_log.erase_on_remove is off)"
    )
    return out
