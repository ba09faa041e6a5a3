"""Calibration as the service needs it: a model's calibration found, or computed once and kept with
the model; a new gallery calibrated for it; a gallery's impostor scores blended with its own pairs.

Split from the facade so it only delegates; the recognizer is always passed in, never looked up here
except by ``calibrate_model`` (the ``facegate calibrate`` verb), which serves the model in service.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from facegate.components.calibration.cascade import cascade_file
from facegate.components.calibration.face_sets import read_face_set
from facegate.components.calibration.store import (
    ModelCalibration,
    compute_model_calibration,
    default_face_sets,
    local_file,
    parse_set,
    pretrained_file,
    set_scores,
)
from facegate.components.calibration.thresholds import ImpostorScores, deployment_scores, local_impostor_distances
from facegate.components.core.errors import CalibrationMissing
from facegate.components.core.paths import datasets_root, state_dir
from facegate.components.core.settings import Settings
from facegate.components.embedding.backbones import make_backbone
from facegate.components.embedding.members import member_names
from facegate.components.embedding.model import EmbeddingModel
from facegate.components.gallery import Gallery
from facegate.components.gallery.duplicates import DuplicateRule
from facegate.components.gallery.enrolment import EnrolmentStore
from facegate.components.lifecycle.calibration_artifacts import (
    log_version_calibration,
    registered_version,
    stored_calibration,
)
from facegate.components.lifecycle.model_loading import service_recognizer
from facegate.components.recognition.recognizer import FaceRecognizer
from facegate.components.service.cascade import fit_served_cascade


def calibrate(
    recognizer: FaceRecognizer, settings: Settings, heldout: tuple[np.ndarray, np.ndarray] | None = None
) -> ModelCalibration:
    """The model's calibration computed now (minutes; once per model): score sketches of the held-out
    identities of ``gallery.calibration_dataset``, read straight from its source folder (no ingest).

    ``heldout`` (embeddings by this very model, identities) skips re-embedding when the caller (the
    retraining chain) already has them for that dataset's held-out split.
    """
    info = (settings.faces.detector, recognizer.model.backbone.chip_geometry, settings.embedding.flip_tta)
    if heldout is not None:
        return ModelCalibration(
            recognizer.embedder_name,
            recognizer.embedder_version,
            (set_scores(settings.gallery.calibration_dataset, heldout[0], heldout[1]),),
            *info,
            meta={"created_by": "retraining chain (held-out split)"},
        )
    return compute_model_calibration(recognizer, settings, default_face_sets(settings), state_dir() / "cache")


def model_calibration(
    recognizer: FaceRecognizer,
    settings: Settings,
    store: EnrolmentStore,
    heldout: tuple[np.ndarray, np.ndarray] | None = None,
    compute: bool = True,
) -> ModelCalibration:
    """The model's calibration, computed once per model and kept with it; a copy goes beside the gallery.

    Looked up, in order: the model's own (the registered version's MLflow artifact, or the file committed
    for a pretrained fingerprint), then the copy beside the gallery. Computed (and stored with the model)
    only when there is none and ``compute``; otherwise CalibrationMissing, so a first enrolment never
    waits minutes for it. ``heldout`` (the chain) always computes, from those embeddings.
    """
    name, version = recognizer.embedder_name, recognizer.embedder_version
    cal = None if heldout is not None else (stored_calibration(name, version) or store.load_calibration(version))
    if cal is None:
        if heldout is None and not compute:
            raise CalibrationMissing(
                f"no calibration is stored for the model in service ({name} {version}): run `facegate "
                "calibrate` once for this model (it embeds LFW's held-out identities, minutes), then enrol"
            )
        cal = calibrate(recognizer, settings, heldout)
        reg = registered_version(version)
        if reg is not None:
            log_version_calibration(*reg, cal, settings.gallery.target_far)
        else:
            cal.save(local_file(name, version))
    store.save_calibration(version, cal)
    return cal


def calibrated_gallery(
    recognizer: FaceRecognizer,
    settings: Settings,
    store: EnrolmentStore,
    data_version: str | None,
    heldout: tuple[np.ndarray, np.ndarray] | None = None,
    compute: bool = True,
) -> Gallery:
    """An empty gallery for the recognizer's model, its tau from the model's stored calibration (a copy
    kept beside the gallery); see :func:`model_calibration`."""
    cal = model_calibration(recognizer, settings, store, heldout, compute).calibration(settings.gallery.target_far)
    return Gallery.new(
        recognizer.embedding_dim,
        recognizer.embedder_name,
        recognizer.embedder_version,
        settings.gallery.index_kind,
        tau=cal.tau,
        target_far=cal.target_far,
        achieved_far=cal.achieved_far,
        achieved_tar=cal.achieved_tar,
        data_version=data_version,
    )


def gallery_impostor_scores(g: Gallery, stored: ModelCalibration, settings: Settings) -> ImpostorScores:
    """The model's stored impostor sketches blended with this gallery's own impostor pairs (employees
    against each other) once there are ``gallery.recalibration_min_pairs`` of them, and shifted for
    identification by their bulk (``facegate.components.calibration.thresholds.deployment_scores``, as
    bench calibration)."""
    scores = stored.impostors()
    if g.n_employees < 2:
        return scores
    local = local_impostor_distances(g.vectors, g.sidecar["employee_id"].to_numpy(), seed=0)
    gs = settings.gallery
    return deployment_scores(
        scores, local, gs.recalibration_min_pairs, gs.recalibration_prior_pairs, gs.shift_prior_pairs
    )


def calibrate_model(
    settings,
    backbone: str | None = None,
    extra_sets: list[str] | tuple = (),
    out: Path | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> dict:
    """Compute the calibration of the model in service (or of the pretrained ``backbone``) on the held-out
    identities of ``gallery.calibration_dataset`` plus ``extra_sets``, and store it with the model: a
    registered version's MLflow run, or the committed file of a pretrained fingerprint (or ``out``)."""
    if backbone:
        recognizer = FaceRecognizer(EmbeddingModel(make_backbone(backbone)), settings)
    else:
        recognizer = service_recognizer(settings)
    sets = default_face_sets(settings)
    for spec in extra_sets:
        name, kind, path = parse_set(spec)
        root = Path(path) if Path(path).is_absolute() else datasets_root() / path
        sets.append(
            read_face_set(
                kind,
                root,
                cache_dir=state_dir() / "cache",
                seed=settings.seed,
                val_fraction=settings.ingest.val_fraction,
                name=name,
            )
        )
    cal = compute_model_calibration(recognizer, settings, sets, state_dir() / "cache", log)
    reg = registered_version(recognizer.embedder_version)
    if out is not None:
        where = str(cal.save(Path(out)))
    elif reg is not None:
        where = log_version_calibration(*reg, cal, settings.gallery.target_far)
    else:
        where = str(cal.save(pretrained_file(recognizer.embedder_name, recognizer.embedder_version)))
    return {"stored": where, **cal.summary(settings.gallery.target_far), **calibrate_cascade(recognizer, settings)}


def calibrate_cascade(recognizer: FaceRecognizer, settings: Settings) -> dict:
    """The cascade's band for the model (recognition.cascade on and the member in the model), stored
    beside the model's calibration: the committed file for a pretrained fingerprint, else the state folder."""
    member = settings.recognition.cascade_member
    if settings.recognition.cascade != "on" or member not in member_names(recognizer.model):
        return {}
    cal = fit_served_cascade(recognizer, settings, member)
    name, version = recognizer.embedder_name, recognizer.embedder_version
    base = pretrained_file(name, version) if version.startswith("sha256:") else local_file(name, version)
    return {
        "cascade": {
            "stored": str(cal.save(cascade_file(base, member))),
            **cal.meta,
            "bands": {k: [b.below, b.above] for k, b in cal.bands.items()},
        }
    }


def manifest_tau(g: Gallery) -> float:
    """The tau the gallery was made with (its model's calibration); a gallery without one cannot decide."""
    if g.manifest.tau is None:
        raise CalibrationMissing(
            f"the gallery of {g.manifest.embedder_name} {g.manifest.embedder_version} "
            "records no threshold (tau): its model was never calibrated"
        )
    return float(g.manifest.tau)


def verify_threshold(g: Gallery, scores: ImpostorScores | None, target_far: float) -> float:
    """The 1:1 threshold: the manifest's tau (the model's calibration at ``target_far``), recalibrated
    when the gallery's own impostor pairs are blended in."""
    if scores is None or not scores.blended:
        return manifest_tau(g)
    return scores.tau_for_far(g.manifest.target_far or target_far)


class GalleryThresholds:
    """The thresholds a gallery's decisions rest on, cached per gallery snapshot and model.

    The calibration copy stored beside the gallery for its model, blended with the gallery's own
    impostor pairs (:func:`gallery_impostor_scores`); a gallery made with a fixed tau (no copy) decides
    by its manifest's tau, with no FAR estimate.
    """

    def __init__(self, settings: Settings, store: EnrolmentStore) -> None:
        self.settings, self.store = settings, store
        self._scores: tuple[Gallery, ImpostorScores | None] | None = None  # the last gallery asked about
        self._calibrations: dict[str, ModelCalibration | None] = {}

    def clear(self) -> None:
        """Forget stored calibrations: a rebuild may have stored a new copy."""
        self._calibrations.clear()

    def impostor_scores(self, g: Gallery) -> ImpostorScores | None:
        if self._scores is not None and self._scores[0] is g:
            return self._scores[1]
        version = g.manifest.embedder_version
        if version not in self._calibrations:
            self._calibrations[version] = self.store.load_calibration(version)
        cal = self._calibrations[version]
        scores = gallery_impostor_scores(g, cal, self.settings) if cal is not None else None
        self._scores = (g, scores)
        return scores

    def verify_tau(self, g: Gallery) -> float:
        return verify_threshold(g, self.impostor_scores(g), self.settings.gallery.target_far)

    def identify_tau(self, g: Gallery, target_fpir: float) -> float:
        """1:K: the tau for ``target_fpir`` at this gallery's size, counted in vectors: a stranger is compared
        with every template of every employee (docs/decisions/templates.md)."""
        scores = self.impostor_scores(g)
        return scores.tau_for_fpir(target_fpir, g.n_vectors) if scores else manifest_tau(g)

    def duplicate_rule(self, g: Gallery) -> DuplicateRule:
        """Enrolment's "already someone here?": identification at ``gallery.duplicate_target`` of new
        people, on the same impostor scores as identify (``facegate.components.gallery.duplicates``)."""
        return DuplicateRule(self.impostor_scores(g), self.settings.gallery.duplicate_target, g.manifest.tau)
