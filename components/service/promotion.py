"""Moving the model in service: a model's calibrated gallery prepared, the champion alias moved and the
gallery switched together under the gallery lock, a human's promotion or rollback, a full rebuild.

A new champion means a full re-embed (embeddings of different models are not comparable), so the
alias and the gallery move as one step; a failure after the alias moved puts it back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from facegate.components.core.errors import RegistryError
from facegate.components.embedding.model import EmbeddingModel
from facegate.components.gallery import Gallery, gallery_lock
from facegate.components.gallery.enrolment import enrolled_names, reembed_all
from facegate.components.lifecycle import registry
from facegate.components.lifecycle.model_loading import (
    embedder_version_label,
    forget_service_recognizer,
    load_registered_model,
    service_recognizer,
)
from facegate.components.recognition.recognizer import FaceRecognizer
from facegate.components.service.calibrations import calibrated_gallery
from facegate.components.service.templates import update_templates

if TYPE_CHECKING:
    from facegate.components.service.facade import FaceGate


def prepare_gallery(
    gate: FaceGate,
    model: EmbeddingModel,
    label: str,
    data_version: str | None,
    heldout: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[FaceRecognizer, Gallery]:
    """A model's calibrated, still empty gallery: nothing in service changes."""
    recognizer = FaceRecognizer(model, gate.settings, label)
    return recognizer, calibrated_gallery(recognizer, gate.settings, gate.store, data_version, heldout)


def rebuild_gallery(
    gate: FaceGate, recognizer: FaceRecognizer | None = None, data_version: str | None = None
) -> Gallery:
    """Re-embed every enrolled employee's stored photos with ``recognizer`` (default: the model given to
    the gate, else the registry's champion, asked for here: not the model that made the current
    gallery) into a freshly calibrated gallery: the only way to a gallery after the model changes."""
    recognizer = recognizer or gate.given_recognizer or service_recognizer(gate.settings)
    fresh = calibrated_gallery(recognizer, gate.settings, gate.store, data_version)
    with gate.write_lock, gallery_lock(gate.store.index_dir):
        reembed_all(gate.store, recognizer, fresh, gate.settings.images.max_pixels, enrolled_names(gate.store))
        fresh.save(gate.store.index_dir, keep=gate.settings.gallery.keep_versions)
        gate.reload()
    restore_templates(gate, None)
    return fresh


def restore_templates(gate: FaceGate, actor: str | None) -> int:
    """Captured templates chosen again, embedded by the model now in service; the number of employees whose
    templates came back. A rebuild re-embeds the stored enrolment photos only: without this, every template
    learnt from confirmed captures would be gone until the next template update (a day of misses after each
    promotion, measured in the flywheel bench)."""
    if gate.captures is None:
        return 0
    return len(update_templates(gate, actor=actor)["employees"])


def promote(
    gate: FaceGate,
    recognizer: FaceRecognizer,
    fresh: Gallery,
    version: str,
    reason: str,
    *,
    action: str = "promote",
    actor: str | None = None,
) -> dict:
    """Under the gallery lock: re-embed every enrolled employee, move ``champion``, switch the gallery.

    Re-embedding comes first (a bad stored photo fails here, before anything moves); if the gallery
    save fails after the alias moved, the alias goes back to the previous champion.
    """
    name = gate.settings.registry.embedder_model
    with gate.write_lock, gallery_lock(gate.store.index_dir):
        reembed_all(gate.store, recognizer, fresh, gate.settings.images.max_pixels, enrolled_names(gate.store))
        previous = registry.promote(name, version, reason)
        try:
            path = fresh.save(gate.store.index_dir, keep=gate.settings.gallery.keep_versions)
        except BaseException:
            registry.restore_champion(name, previous)
            raise
        forget_service_recognizer()  # this process now serves the new champion
        gate.serve(recognizer)
        gate.audit(
            actor,
            action,
            None,
            version=version,
            previous=previous,
            reason=reason,
            gallery_version=gate.gallery_version,
            employees=fresh.n_employees,
        )
    templates = restore_templates(gate, actor)
    return {
        "previous_champion": previous,
        "champion": version,
        "gallery_index_version": gate.gallery_version if templates else path.name,
        "employees": fresh.n_employees,
        "employees_with_templates_restored": templates,
    }


def switch_champion(
    gate: FaceGate,
    version: str | None = None,
    rollback: bool = False,
    reason: str = "",
    data_version: str | None = None,
) -> dict:
    """A human's promotion (``version``) or rollback: the model and its re-embedded gallery move
    together. No gate: the operator decides."""
    name = gate.settings.registry.embedder_model
    current = registry.champion(name)
    if rollback:
        if version is not None:
            raise RegistryError("give either a version or rollback, not both")
        version = registry.rollback_target(name)
    elif version is None:
        raise RegistryError("which version? (`facegate models list` shows them)")
    target = registry.get_version(name, version)
    why = reason or (f"rollback from v{current.version}" if rollback and current else "promoted by hand")
    model = load_registered_model(name, target.version)
    recognizer, fresh = gate.prepare_gallery(model, embedder_version_label(name, target.version), data_version)
    promoted = gate.promote(recognizer, fresh, target.version, why, action="rollback" if rollback else "promote")
    if rollback and current is not None:
        registry.mark_rolled_back(name, current.version, why)
    return {**promoted, "reason": why, "previous": current.version if current else None, "tau": fresh.manifest.tau}
