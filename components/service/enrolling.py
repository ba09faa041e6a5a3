"""Enrolling one employee: the photos checked (one face each; under ``pad.mode: enforce`` no
presentation attack; no face already enrolled under another id at the gallery's duplicate threshold),
embedded outside the writer lock, then a new gallery version and its audit row under it.

Split from the facade so its verb is one line; the duplicate rule is gallery/duplicates.py, the
liveness check service/liveness.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from facegate.components.core.errors import InvalidEmployee
from facegate.components.gallery import Gallery
from facegate.components.gallery.enrolment import Photo, check_employee_id
from facegate.components.gallery.enrolment import enrol as enrol_in_store

if TYPE_CHECKING:
    from facegate.components.service.facade import FaceGate


def check_name(name: str, limit: int) -> str:
    """A display name: printable, at most ``limit`` characters (every adapter's limit)."""
    if len(name) > limit:
        raise InvalidEmployee(f"name: {len(name)} characters, the limit is {limit}")
    if not name.isprintable():
        raise InvalidEmployee("name: control characters are not allowed")
    return name


def enrol(
    gate: FaceGate,
    employee_id: str,
    name: str,
    photos: Sequence[Photo],
    replace: bool = False,
    force: bool = False,
    *,
    actor: str | None = None,
) -> Gallery:
    """One employee from one or more photos (one face each): a new gallery version, no retraining.
    A face already enrolled under another id (DuplicateFace) or, under ``pad.mode: enforce``, a photo judged
    a presentation attack (PresentationAttack) is refused unless ``force``."""
    check_employee_id(employee_id)
    gate.check_name(name or employee_id)
    if not photos:
        raise InvalidEmployee(f"{employee_id}: at least one photo is required")
    settings = gate.settings
    gate.refresh()
    recognizer = gate.recognizer  # the gallery check under the lock refuses it if a switch came between
    with gate.inference():  # the model runs outside the writer lock: writers wait only for each other's I/O
        embedded = gate.liveness.embed_checked(
            recognizer, list(photos), settings.images.max_pixels, force=force
        )  # pad.mode enforce: an attack photo is refused
    with gate.write_lock:
        gate.refresh()
        g = enrol_in_store(
            gate.store,
            recognizer,
            employee_id,
            name or employee_id,
            list(photos),
            max_pixels=settings.images.max_pixels,
            new_gallery=gate.new_gallery,
            replace=replace,
            keep_versions=settings.gallery.keep_versions,
            force=force,
            duplicates=gate.thresholds.duplicate_rule,
            embedded=embedded,
        )
        gate.reload()
        gate.audit(
            actor,
            "enrol",
            employee_id,
            photos=len(photos),
            replace=replace,
            force=force,
            gallery_version=gate.gallery_version,
            model=gate.model_label(),
        )
    return g
