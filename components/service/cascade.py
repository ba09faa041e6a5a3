"""The confidence cascade as the service runs it (``recognition.cascade: on``): one member without mirror
decides the faces far from its threshold; inside the band the full fused, flip-averaged embedding does.

What it needs, and where it comes from:
- the member's embedding of every enrolled face: its slice of the stored full embeddings, re-normalised
  (embedding/members.py), kept per gallery state (the "small index": rebuilt whenever the gallery
  changes, never stored apart from the full vectors it is made of);
- the member's own calibration and the band (calibration/cascade.py), beside the model's calibration:
  the committed file for a pretrained fingerprint, else the state folder's; fitted once on the held-out
  identities of ``gallery.calibration_dataset`` when neither exists.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facegate.components.calibration.cascade import Band, CascadeCalibration, cascade_file, fit_cascade
from facegate.components.calibration.face_sets import (
    attach_chips,
    backbone_is_pretrained,
    chips_cached,
    embed_face_set,
    set_features,
)
from facegate.components.calibration.store import default_face_sets, local_file, pretrained_file
from facegate.components.calibration.thresholds import ImpostorScores, fpir_of_far
from facegate.components.core.paths import state_dir
from facegate.components.core.settings import Settings
from facegate.components.embedding.members import (
    MemberSlice,
    member_backbone,
    member_embed_chips,
    member_from_features,
    member_of_full,
    member_slice,
)
from facegate.components.faces.pipeline import FaceCrop
from facegate.components.gallery import Gallery
from facegate.components.recognition.recognizer import FaceRecognizer

log = logging.getLogger(__name__)
CHEAP, FULL = "cheap", "full"


@dataclass(frozen=True)
class CheapVerdict:
    """The cheap pass's answer for one face: ``decided`` None means inside the band (full decides)."""

    decided: bool | None
    employee_id: str | None
    name: str | None
    distance: float
    tau: float


class MemberGallery:
    """The member's unit vectors of a gallery's faces (row-aligned with its sidecar)."""

    def __init__(self, g: Gallery, where: MemberSlice) -> None:
        self.vectors = member_of_full(g.vectors, where)
        side = g.sidecar
        self.employee_ids = side["employee_id"].to_numpy()
        self.names = side["name"].to_numpy()

    def nearest(self, q: np.ndarray) -> tuple[str | None, str | None, float]:
        if not len(self.vectors):
            return None, None, math.inf
        sims = self.vectors @ q
        row = int(np.argmax(sims))
        return str(self.employee_ids[row]), str(self.names[row]), float(np.sqrt(max(2.0 - 2.0 * sims[row], 0.0)))

    def distance_to(self, employee_id: str, q: np.ndarray) -> float:
        rows = self.employee_ids == employee_id
        return float(np.sqrt(max(2.0 - 2.0 * float(np.max(self.vectors[rows] @ q)), 0.0)))


class ServedCascade:
    def __init__(self, recognizer: FaceRecognizer, calibration: CascadeCalibration) -> None:
        self.recognizer, self.calibration = recognizer, calibration
        self.where = member_slice(recognizer.model, calibration.member)
        self.geometry = member_backbone(recognizer.model, self.where).chip_geometry  # the member's own chip geometry
        self._galleries: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def member_gallery(self, g: Gallery) -> MemberGallery:
        key = (g.n_vectors, g.manifest.next_vector_id)
        hit = self._galleries.get(g)
        if hit is None or hit[0] != key:
            hit = (key, MemberGallery(g, self.where))
            self._galleries[g] = hit
        return hit[1]

    def chips(self, crops: Sequence[FaceCrop]) -> np.ndarray:
        """What the cheap pass reads of ``crops``: its member's part of each chip (the rest is not aligned)."""
        return np.stack([c.chip_for(self.geometry) for c in crops])

    def embed(self, crops: Sequence[FaceCrop]) -> np.ndarray:
        return self.embed_chips(self.chips(crops))

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """Aligned chips -> the member's unit embeddings (the server batches these across requests)."""
        return member_embed_chips(self.recognizer.model, chips, self.where)

    def member_tau(self, tau_full: float, scores: ImpostorScores | None) -> float:
        """The member's threshold at the FAR the full threshold stands for (blended scores when served)."""
        far = scores.far(tau_full) if scores is not None else self.calibration.full_impostor.share_at_most(tau_full)
        return self.calibration.member_tau(far)

    def identify(self, g: Gallery, q: np.ndarray, tau_full: float, scores: ImpostorScores | None) -> CheapVerdict:
        eid, name, d = self.member_gallery(g).nearest(q)
        tau = self.member_tau(tau_full, scores)
        decided = False if eid is None else self.calibration.band(g.n_vectors).decides(d, tau)
        return CheapVerdict(decided, eid, name, d, tau)

    def verify(
        self, g: Gallery, employee_id: str, q: np.ndarray, tau_full: float, scores: ImpostorScores | None
    ) -> CheapVerdict:
        d = self.member_gallery(g).distance_to(employee_id, q)
        tau = self.member_tau(tau_full, scores)
        return CheapVerdict(self.calibration.verify_band.decides(d, tau), employee_id, None, d, tau)

    def fpir(self, distance: float, gallery_size: int) -> float:
        return fpir_of_far(self.calibration.member_impostor.share_at_most(distance), gallery_size)

    def far(self, distance: float) -> float:
        return self.calibration.member_impostor.share_at_most(distance)


_SERVED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # recognizer -> {settings key: ServedCascade | None}
_MISSING = object()
_LOCK = threading.Lock()


def served_cascade(recognizer: FaceRecognizer, settings: Settings) -> ServedCascade | None:
    """The cascade for the model in service, or None: ``recognition.cascade`` off, or a model without
    the member or without a stored cascade calibration (then the full model answers every face, said
    once in the log: never silently another model)."""
    if settings.recognition.cascade != "on" or not isinstance(recognizer, FaceRecognizer):
        return None  # off, or a stand-in recognizer (tests) that only embeds
    key = (settings.recognition.cascade_member, settings.gallery.target_fpir, settings.gallery.target_far)
    hit = _SERVED.get(recognizer, {}).get(key, _MISSING)
    if hit is _MISSING:
        with _LOCK:
            hit = _SERVED.setdefault(recognizer, {}).get(key, _MISSING)
            if hit is _MISSING:
                try:
                    hit = ServedCascade(recognizer, cascade_calibration(recognizer, settings, fit=False))
                except (FileNotFoundError, ValueError) as exc:
                    log.warning("recognition.cascade is on but the full model answers every face: %s", exc)
                    hit = None
                _SERVED[recognizer][key] = hit
    return hit


def cascade_calibration(recognizer: FaceRecognizer, settings: Settings, fit: bool = True) -> CascadeCalibration:
    """The stored cascade calibration of the model in service for ``recognition.cascade_member``, or
    fitted now (once per model, seconds from the feature cache) and kept in the state folder."""
    member, name, version = settings.recognition.cascade_member, recognizer.embedder_name, recognizer.embedder_version
    member_slice(recognizer.model, member)  # a member the model has, or ValueError now
    for base in (pretrained_file(name, version), local_file(name, version)):
        path = cascade_file(base, member)
        if path.is_file():
            cal = CascadeCalibration.load(path)
            if (
                cal.embedder_version == version
                and cal.target_fpir == settings.gallery.target_fpir
                and cal.target_far == settings.gallery.target_far
            ):
                return cal
    if not fit:
        raise FileNotFoundError(
            f"no cascade calibration is stored for {name} {version} (member {member}): `facegate calibrate` fits it"
        )
    log.info("fitting the cascade band for %s (%s) on the held-out calibration faces", name, member)
    cal = fit_served_cascade(recognizer, settings, member)
    cal.save(cascade_file(local_file(name, version), member))
    return cal


def fit_served_cascade(recognizer: FaceRecognizer, settings: Settings, member: str) -> CascadeCalibration:
    """Both embeddings of the held-out identities of the calibration set, then the bands."""
    model, cache_dir = recognizer.model, state_dir() / "cache"
    fs = default_face_sets(settings)[0]
    detector, upsample, geometry = settings.faces.detector, settings.faces.upsample, model.backbone.chip_geometry
    if fs.split is not None and not chips_cached(
        fs, cache_dir, detector=detector, upsample=upsample, geometry=geometry
    ):
        fs = fs.subset(np.flatnonzero(fs.split != "train"))  # chip only the held-out images
    attach_chips(fs, cache_dir, detector=detector, upsample=upsample, geometry=geometry)
    rows = fs.rows(fs.split != "train" if fs.split is not None else None)
    full = embed_face_set(model, fs, settings.embedding.flip_tta, cache_dir)[rows]
    where = member_slice(model, member)
    if backbone_is_pretrained(model):
        cheap = member_from_features(model, set_features(model, fs, cache_dir)[0], where)[rows]
    else:
        chips = np.asarray(fs.chips)[rows]
        cheap = np.concatenate([member_embed_chips(model, chips[i : i + 64], where) for i in range(0, len(chips), 64)])
    return fit_cascade(
        full,
        cheap,
        fs.identities[rows],
        member,
        recognizer.embedder_version,
        settings.gallery.target_fpir,
        settings.gallery.target_far,
    )


__all__ = ["CHEAP", "FULL", "Band", "CheapVerdict", "ServedCascade", "served_cascade", "cascade_calibration"]
