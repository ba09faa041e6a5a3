"""FaceGate: the one front door for recognition.

The CLI, the REST API, the Prefect flows and a notebook all go through one ``FaceGate``: it owns the
model in service (the registry's champion, or the pretrained model while there is none), the gallery
store (photos, versioned FAISS index, calibration tails) and the verbs identify / verify / enrol /
remove / rebuild_gallery / switch_champion. No Prefect here: flows wrap these calls with logging,
MLflow runs and DVC snapshots.

Readers answer from an immutable snapshot of the current gallery version; another process (a CLI
enrolment, a retraining chain) may switch it, so each read compares the on-disk CURRENT pointer with
the snapshot (one small file read) and reloads. A gallery made by another model brings that model in
too, so a promotion reaches a running server without a restart; a gallery no model in service can
read is refused (``gallery_model_mismatch``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from facegate.components.calibration.thresholds import ImpostorScores
from facegate.components.core.errors import FacegateError, GalleryNotFound
from facegate.components.core.inference import InferenceSlots
from facegate.components.core.settings import Settings, load_settings
from facegate.components.embedding.model import EmbeddingModel
from facegate.components.gallery import Gallery, current_version
from facegate.components.gallery.enrolment import EnrolmentStore, Photo
from facegate.components.lifecycle.data_version import read_version
from facegate.components.lifecycle.model_loading import (
    forget_service_recognizer,
    gallery_recognizer,
    service_recognizer,
)
from facegate.components.pad.models import PadModel
from facegate.components.recognition.recognizer import FaceRecognizer
from facegate.components.service import answering, enrolling, erasure, promotion
from facegate.components.service.access_log import AccessLog
from facegate.components.service.answers import Identification, Verification
from facegate.components.service.batching import EmbeddingBatching
from facegate.components.service.calibrations import GalleryThresholds, calibrated_gallery
from facegate.components.service.captures import CaptureStore
from facegate.components.service.deployment import gallery_store, local_actor
from facegate.components.service.liveness import LivenessCheck
from facegate.components.service.mask_state import MaskStateReader


class FaceGate:
    """The recognition service: the model in service, the gallery store, calibration and the verbs.

    Everything is optional so a notebook can write ``FaceGate().identify(pixels)``; tests and the API
    pass their own store or recognizer. ``new_gallery`` makes the first (empty, calibrated) gallery on
    the first enrolment; ``recognizer_for(version)`` brings in the model of a gallery switched by
    another process (default: the registry's champion, reloaded). ``access_log`` records every
    decision and gallery change (``facegate.components.service.access_log``): by default the deployment's log when the
    store is the deployment's (``store`` not given), none for a store of a caller's own; False: none.
    ``inference`` bounds how many requests run the model at once (``facegate.components.core.inference``; a server
    passes one sized to its cores, the default has no limit); enrolment embeds outside the writer lock.
    ``batching`` (a server's, ``facegate.components.service.batching``): identify and verify embed the
    faces of concurrent requests in one forward pass; default none, each request embeds its own.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: EnrolmentStore | None = None,
        recognizer: FaceRecognizer | None = None,
        new_gallery: Callable[[], Gallery] | None = None,
        recognizer_for: Callable[[str], FaceRecognizer] | None = None,
        access_log=None,
        inference: InferenceSlots | None = None,
        pad_model: PadModel | None = None,
        batching: EmbeddingBatching | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self.inference = inference or InferenceSlots(0)  # the API bounds concurrent model runs; 0: no limit
        self.batching = batching  # a server's: faces of concurrent requests embedded together; None: each alone
        self._access_log = access_log if access_log is not None else (store is None)
        self.store = store or gallery_store()
        self._recognizer = recognizer
        self._given_recognizer = recognizer  # the caller's model in service (a test, a notebook), if any
        self._new_gallery = new_gallery
        self._recognizer_for = recognizer_for
        self.write_lock = threading.Lock()  # one writer per process; the file lock serialises processes
        self._refresh_lock = threading.Lock()
        self._snapshot: Gallery | None = None
        self._mask_reader: MaskStateReader | None = None  # built on the first frame that asks
        self._version: str | None = None
        self.thresholds = GalleryThresholds(self.settings, self.store)
        self.liveness = LivenessCheck(self.settings, pad_model)  # pad.mode; pad_model: a caller's own (a test)

    # -------------------------------------------------------------------------- state in service

    @property
    def access_log(self):
        """The access log (``facegate.components.service.access_log.AccessLog``) or None; opened on first use."""
        if self._access_log is True:
            self._access_log = AccessLog.from_settings(self.settings)
        return self._access_log or None

    @property
    def captures(self) -> CaptureStore | None:
        """Deployment captures (service/captures.py), in the access log's database; None without one."""
        if getattr(self, "_captures", None) is None and self.access_log is not None:
            self._captures = CaptureStore(self.access_log.url, self.settings.capture.retention_days)
        return getattr(self, "_captures", None)

    def model_label(self) -> str:
        """The model in service as the access log names it."""
        r = self.recognizer
        return f"{r.embedder_name}@{r.embedder_version}"

    @property
    def gallery_version(self) -> str | None:
        """The gallery version this process serves (None before the first enrolment)."""
        return self._version

    @property
    def given_recognizer(self) -> FaceRecognizer | None:
        """The caller's model in service (a test, a notebook), if one was given."""
        return self._given_recognizer

    def serve(self, recognizer: FaceRecognizer) -> None:
        """Serve ``recognizer`` from now on, with the gallery it made (a promotion just switched both)."""
        self._recognizer = recognizer
        self.reload()

    def audit(self, actor: str | None, action: str, employee_id: str | None = None, **detail) -> None:
        """One audit row (who changed what), when this gate keeps an access log."""
        if self.access_log is not None:
            self.access_log.audit(actor or local_actor(), action, employee_id, **detail)

    @property
    def recognizer(self) -> FaceRecognizer:
        if self._recognizer is None:
            self._recognizer = gallery_recognizer(self.settings, self.store) or service_recognizer(self.settings)
        return self._recognizer

    def _champion_recognizer(self, _: str) -> FaceRecognizer:
        forget_service_recognizer()
        return service_recognizer(self.settings)

    def _disk_version(self) -> str | None:
        try:
            return current_version(self.store.index_dir) if self.store.exists() else None
        except FacegateError:
            return self._version  # a pointer mid-write: keep serving the snapshot

    def refresh(self) -> None:
        """Load the current gallery version if it moved; bring in its model if another one made it."""
        if self._disk_version() == self._version:
            return
        with self._refresh_lock:
            now = self._disk_version()
            if now == self._version or now is None:
                return
            g = Gallery.load(self.store.index_dir, version=now, device=self.settings.gallery.device)
            if g.manifest.embedder_version != self.recognizer.embedder_version:
                self._recognizer = (self._recognizer_for or self._champion_recognizer)(g.manifest.embedder_version)
            self.thresholds.clear()  # a rebuild may have stored a new calibration copy
            self._snapshot, self._version = g, now

    def reload(self) -> None:
        self._version = None
        self.refresh()

    def snapshot(self) -> Gallery | None:
        """The current gallery version (None before the first enrolment); never half an update."""
        self.refresh()
        return self._snapshot

    def gallery(self) -> Gallery:
        """The current gallery, checked against the model in service."""
        g = self.snapshot()
        if g is None:
            raise GalleryNotFound(f"{self.store.index_dir}: no gallery yet: enrol an employee first")
        g.check_model(self.recognizer.embedder_name, self.recognizer.embedder_version)
        return g

    def status(self) -> dict:
        g, r = self.snapshot(), self.recognizer
        return {
            "status": "ok",
            "embedder": f"{r.embedder_name}@{r.embedder_version}",
            "employees": g.n_employees if g else 0,
            "tau": g.manifest.tau if g else None,
            "pad": self.liveness.status(),
            "inference": r.inference,  # backend and precision each backbone runs on (embedding.backend)
        }

    def employees(self) -> list[dict]:
        g = self.snapshot()
        return g.employees().to_dict("records") if g else []

    # ---------------------------------------------------------------------------- calibration

    def impostor_scores(self, g: Gallery) -> ImpostorScores | None:
        return self.thresholds.impostor_scores(g)

    def verify_tau(self, g: Gallery) -> float:
        return self.thresholds.verify_tau(g)

    def identify_tau(self, g: Gallery, target_fpir: float) -> float:
        return self.thresholds.identify_tau(g, target_fpir)

    # --------------------------------------------------------------------------------- readers

    def identify(self, pixels: np.ndarray, *, entrance: str | None = None, actor: str | None = None) -> Identification:
        """Who is this? Every face in the frame (service/answering.py), an access-log row each."""
        return answering.identify(self, pixels, entrance=entrance, actor=actor)

    def mask_states(self, pixels: np.ndarray, boxes: list) -> list[str | None]:
        """Per face, the face-mask detector's class (``faces.mask_state: auto``; None when none is trained)."""
        if self.settings.faces.mask_state == "off" or not boxes:
            return [None] * len(boxes)
        if self._mask_reader is None:
            self._mask_reader = MaskStateReader(self.settings)
        return self._mask_reader.read(pixels, boxes)

    def verify(
        self,
        employee_id: str,
        pixels: np.ndarray,
        source: str | Path = "photo",
        *,
        entrance: str | None = None,
        actor: str | None = None,
    ) -> Verification:
        """Is this the claimed employee? 1:1 (service/answering.py), an access-log row."""
        return answering.verify(self, employee_id, pixels, source, entrance=entrance, actor=actor)

    # --------------------------------------------------------------------------------- writers

    def new_gallery(self) -> Gallery:
        """The first, empty gallery: calibrated for the model in service."""
        if self._new_gallery is not None:
            return self._new_gallery()
        return calibrated_gallery(self.recognizer, self.settings, self.store, read_version(), compute=False)

    def check_name(self, name: str) -> str:
        """A display name: printable, at most ``api.max_name_length`` characters (every adapter's limit)."""
        return enrolling.check_name(name, self.settings.api.max_name_length)

    def enrol(
        self,
        employee_id: str,
        name: str,
        photos: Sequence[Photo],
        replace: bool = False,
        force: bool = False,
        *,
        actor: str | None = None,
    ) -> Gallery:
        """One employee from one or more photos: a new gallery version, no retraining (service/enrolling.py)."""
        return enrolling.enrol(self, employee_id, name, photos, replace, force, actor=actor)

    def remove(self, employee_id: str, *, actor: str | None = None) -> int:
        """Delete the employee's embeddings (every local version) and photos; vectors removed."""
        return self.remove_employee(employee_id, actor=actor)["vectors_removed"]

    def remove_employee(self, employee_id: str, *, actor: str | None = None) -> dict:
        """``remove``, with the access log's part of an erasure request (service/erasure.py)."""
        return erasure.erase_employee(self, employee_id, actor=actor)

    def prepare_gallery(
        self,
        model: EmbeddingModel,
        label: str,
        data_version: str | None,
        heldout: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[FaceRecognizer, Gallery]:
        return promotion.prepare_gallery(self, model, label, data_version, heldout)

    def rebuild_gallery(self, recognizer: FaceRecognizer | None = None, data_version: str | None = None) -> Gallery:
        return promotion.rebuild_gallery(self, recognizer, data_version)

    def promote(
        self,
        recognizer: FaceRecognizer,
        fresh: Gallery,
        version: str,
        reason: str,
        *,
        action: str = "promote",
        actor: str | None = None,
    ) -> dict:
        return promotion.promote(self, recognizer, fresh, version, reason, action=action, actor=actor)

    def switch_champion(
        self, version: str | None = None, rollback: bool = False, reason: str = "", data_version: str | None = None
    ) -> dict:
        return promotion.switch_champion(self, version, rollback, reason, data_version)
