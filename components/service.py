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

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from components import registry
from components.calibration import ImpostorScores, deployment_scores, local_impostor_distances
from components.calibration_store import (ModelCalibration, log_version_calibration, registered_version, set_scores,
                                          stored_calibration)
from components.embedding.backbones import make_backbone
from components.embedding.model import EmbeddingModel, upgrade_sface_heads
from components.enrolment import (EnrolmentStore, Photo, check_employee_id, embed_photos, enrol, enrolled_names,
                                  reembed_all, remove)
from components.errors import CalibrationMissing, FacegateError, GalleryNotFound, InvalidEmployee, RegistryError
from components.gallery import Gallery, current_version, gallery_lock
from components.inference import InferenceSlots
from components.recognition import FaceRecognizer
from components.settings import Settings, load_settings


def local_actor() -> str:
    """Who made a change from this machine without an account (the CLI, a flow): ``local:<user>``."""
    import getpass

    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):
        return "local:unknown"

# ----------------------------------------------------------------------------- the model in service


def gallery_store() -> EnrolmentStore:
    """The deployment's enrolment store (photos, gallery versions, calibration copies):
    ``components.paths.gallery_dir`` (``gallery/`` beside ``gallery.dvc``, or under ``FACEGATE_HOME``)."""
    from components.paths import gallery_dir

    return EnrolmentStore(gallery_dir())


def embedder_version_label(name: str, version: str) -> str:
    """How a registered version is named in gallery manifests (``facegate-embedder/3``)."""
    return f"{name}/{version}"


def load_registered_model(name: str, version: str) -> EmbeddingModel:
    """Version ``version`` of ``name``: the local copy when one is kept (components.model_copies), else
    from MLflow, keeping a copy for the next process."""
    from components.model_copies import load_copy, save_copy

    model = load_copy(name, version)
    if model is not None:
        return model
    import mlflow

    from components.paths import mlflow_tracking_uri

    mlflow.set_tracking_uri(mlflow_tracking_uri())
    model = mlflow.pytorch.load_model(f"models:/{name}/{version}")
    if isinstance(model, EmbeddingModel):  # the copy rebuilds this structure from the backbone's name
        model = upgrade_sface_heads(model)
        try:
            save_copy(model, name, version)
        except OSError:  # a read-only state folder: serve anyway, MLflow again next time
            pass
    return model


def tracking_store_exists() -> bool:
    """False on a fresh clone (the default local MLflow store not created yet): no registry, so no
    champion, and the first enrolment does not wait for MLflow to create its database."""
    import os

    from components.paths import state_dir

    return bool(os.environ.get("MLFLOW_TRACKING_URI")) or (state_dir() / "mlflow.db").is_file()


def incumbent_model(settings: Settings, backbone: str | None = None) -> tuple[EmbeddingModel, str | None]:
    """The model in service and its registered version: the champion, or the pretrained ``backbone``
    (default: params) with its own head and version None while the registry has no champion."""
    name = settings.registry.embedder_model
    champ = registry.champion(name) if tracking_store_exists() else None
    if champ is not None:
        return load_registered_model(name, champ.version), champ.version
    return EmbeddingModel(make_backbone(backbone or settings.embedding.backbone)), None


def service_configuration(settings: Settings) -> dict:
    """Backbone and training mode of the model in service: the champion's (its registration tags), else
    params' (the pretrained model the service falls back to)."""
    champ = registry.champion(settings.registry.embedder_model)
    if champ is not None and champ.tags.get("backbone"):
        return {"backbone": champ.tags["backbone"], "mode": champ.tags.get("mode", settings.embedding.mode),
                "source": f"champion v{champ.version}"}
    return {"backbone": settings.embedding.backbone, "mode": "pretrained", "source": "pretrained (no champion)"}


def service_model(settings: Settings) -> tuple[EmbeddingModel, str | None]:
    """The model in service and its gallery label (None for the unregistered pretrained model)."""
    model, version = incumbent_model(settings)
    return model, embedder_version_label(settings.registry.embedder_model, version) if version else None


@lru_cache(maxsize=2)
def service_recognizer(settings: Settings) -> FaceRecognizer:
    """Loaded once per process and settings: weights and fingerprint cost seconds."""
    model, version = service_model(settings)
    return FaceRecognizer(model, settings, version)


def gallery_recognizer(settings: Settings, store: EnrolmentStore) -> FaceRecognizer | None:
    """The model that made the current gallery, without asking the registry: the pretrained one, or a
    registered version whose local copy is kept (components.model_copies); None when the gallery is
    missing, its model's copy is not kept, or the weights no longer match its fingerprint.

    A promotion moves the champion and switches the gallery together (under the gallery lock), so the
    gallery's model is the one in service. A one-item CLI command then skips MLflow entirely (importing
    it and opening its store cost more than the command's own work)."""
    from components.gallery import MANIFEST_FILE, GalleryManifest

    try:
        vdir = store.index_dir / current_version(store.index_dir)
        manifest = GalleryManifest.from_json((vdir / MANIFEST_FILE).read_text(encoding="utf-8"), vdir / MANIFEST_FILE)
    except (FacegateError, OSError, UnicodeDecodeError):
        return None
    if not manifest.embedder_version.startswith("sha256:"):
        name, _, version = manifest.embedder_version.rpartition("/")
        if name != settings.registry.embedder_model or not version:
            return None
        from components.model_copies import load_copy

        model = load_copy(name, version)
        if model is None or model.backbone.name != manifest.embedder_name:
            return None
        return FaceRecognizer(model, settings, manifest.embedder_version)
    try:
        recognizer = FaceRecognizer(EmbeddingModel(make_backbone(manifest.embedder_name)), settings)
    except (KeyError, ValueError, FacegateError):  # a backbone this code does not have
        return None
    return recognizer if recognizer.embedder_version == manifest.embedder_version else None


def calibrate(recognizer: FaceRecognizer, settings: Settings,
              heldout: tuple[np.ndarray, np.ndarray] | None = None) -> ModelCalibration:
    """The model's calibration computed now (minutes; once per model): score sketches of the held-out
    identities of ``gallery.calibration_dataset``, read straight from its source folder (no ingest).

    ``heldout`` (embeddings by this very model, identities) skips re-embedding when the caller (the
    retraining chain) already has them for that dataset's held-out split.
    """
    info = (settings.faces.detector, recognizer.model.backbone.chip_geometry, settings.embedding.flip_tta)
    if heldout is not None:
        return ModelCalibration(recognizer.embedder_name, recognizer.embedder_version,
                                (set_scores(settings.gallery.calibration_dataset, heldout[0], heldout[1]),), *info,
                                meta={"created_by": "retraining chain (held-out split)"})
    from components.calibration_store import compute_model_calibration, default_face_sets
    from components.paths import state_dir

    return compute_model_calibration(recognizer, settings, default_face_sets(settings), state_dir() / "cache")


def model_calibration(recognizer: FaceRecognizer, settings: Settings, store: EnrolmentStore,
                      heldout: tuple[np.ndarray, np.ndarray] | None = None, compute: bool = True) -> ModelCalibration:
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
                "calibrate` once for this model (it embeds LFW's held-out identities, minutes), then enrol")
        cal = calibrate(recognizer, settings, heldout)
        reg = registered_version(version)
        if reg is not None:
            log_version_calibration(*reg, cal, settings.gallery.target_far)
        else:
            from components.calibration_store import local_file

            cal.save(local_file(name, version))
    store.save_calibration(version, cal)
    return cal


def calibrated_gallery(recognizer: FaceRecognizer, settings: Settings, store: EnrolmentStore,
                       data_version: str | None,
                       heldout: tuple[np.ndarray, np.ndarray] | None = None, compute: bool = True) -> Gallery:
    """An empty gallery for the recognizer's model, its tau from the model's stored calibration (a copy
    kept beside the gallery); see :func:`model_calibration`."""
    cal = model_calibration(recognizer, settings, store, heldout, compute).calibration(settings.gallery.target_far)
    return Gallery.new(recognizer.embedding_dim, recognizer.embedder_name, recognizer.embedder_version,
                       settings.gallery.index_kind, tau=cal.tau, target_far=cal.target_far,
                       achieved_far=cal.achieved_far, achieved_tar=cal.achieved_tar, data_version=data_version)


def gallery_impostor_scores(g: Gallery, stored: ModelCalibration, settings: Settings) -> ImpostorScores:
    """The model's stored impostor sketches blended with this gallery's own impostor pairs (employees
    against each other) once there are ``gallery.recalibration_min_pairs`` of them, and shifted for
    identification by their bulk (``components.calibration.deployment_scores``, as bench calibration)."""
    scores = stored.impostors()
    if g.n_employees < 2:
        return scores
    local = local_impostor_distances(g.vectors, g.sidecar["employee_id"].to_numpy(), seed=0)
    gs = settings.gallery
    return deployment_scores(scores, local, gs.recalibration_min_pairs, gs.recalibration_prior_pairs,
                             gs.shift_prior_pairs)


# --------------------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class IdentifiedFace:
    box: list[int]
    employee_id: str | None
    name: str | None
    recognized: bool
    distance: float | None  # None against an empty gallery (nobody to be near)
    tau: float
    target_fpir: float
    mask: str | None = None  # the face-mask detector's class for this face; None: no detector trained
    # estimated chance that a stranger's nearest employee in a gallery of this size is this close (the
    # FPIR at this distance); None without a stored calibration or against an empty gallery
    far_estimate: float | None = None


@dataclass(frozen=True)
class Identification:
    """Every face of a frame: who (or not recognized), how far, against which threshold."""

    faces: list[IdentifiedFace]
    tau: float
    target_fpir: float

    def to_dict(self) -> dict:
        return {"faces": [asdict(f) for f in self.faces], "tau": self.tau, "target_fpir": self.target_fpir}


@dataclass(frozen=True)
class Verification:
    employee_id: str
    accepted: bool
    distance: float
    tau: float
    target_far: float | None
    far_estimate: float | None = None  # share of the stored impostor distances at least this close

    def to_dict(self) -> dict:
        return asdict(self)


def _estimate(p: float) -> float:
    """A probability for an answer: 3 significant digits, never rounded to 0 above 0."""
    return float(f"{p:.3g}")


# ------------------------------------------------------------------------------------- the door


class FaceGate:
    """The recognition service: the model in service, the gallery store, calibration and the verbs.

    Everything is optional so a notebook can write ``FaceGate().identify(pixels)``; tests and the API
    pass their own store or recognizer. ``new_gallery`` makes the first (empty, calibrated) gallery on
    the first enrolment; ``recognizer_for(version)`` brings in the model of a gallery switched by
    another process (default: the registry's champion, reloaded). ``access_log`` records every
    decision and gallery change (``components.access_log``): by default the deployment's log when the
    store is the deployment's (``store`` not given), none for a store of a caller's own; False: none.
    ``inference`` bounds how many requests run the model at once (``components.inference``; a server
    passes one sized to its cores, the default has no limit); enrolment embeds outside the writer lock.
    """

    def __init__(self, settings: Settings | None = None, *, store: EnrolmentStore | None = None,
                 recognizer: FaceRecognizer | None = None, new_gallery: Callable[[], Gallery] | None = None,
                 recognizer_for: Callable[[str], FaceRecognizer] | None = None, access_log=None,
                 inference: InferenceSlots | None = None) -> None:
        self.settings = settings or load_settings()
        self.inference = inference or InferenceSlots(0)  # the API bounds concurrent model runs; 0: no limit
        self._access_log = access_log if access_log is not None else (store is None)
        self.store = store or gallery_store()
        self._recognizer = recognizer
        self._given_recognizer = recognizer  # the caller's model in service (a test, a notebook), if any
        self._new_gallery = new_gallery
        self._recognizer_for = recognizer_for
        self.write_lock = threading.Lock()  # one writer per process; the file lock serialises processes
        self._refresh_lock = threading.Lock()
        self._snapshot: Gallery | None = None
        self._mask_reader = None
        self._version: str | None = None
        self._scores: tuple[Gallery, ImpostorScores | None] | None = None  # the last gallery asked about, its scores
        self._calibrations: dict[str, ModelCalibration | None] = {}

    # -------------------------------------------------------------------------- state in service

    @property
    def access_log(self):
        """The access log (``components.access_log.AccessLog``) or None; opened on first use."""
        if self._access_log is True:
            from components.access_log import AccessLog

            self._access_log = AccessLog.from_settings(self.settings)
        return self._access_log or None

    def _model_label(self) -> str:
        r = self.recognizer
        return f"{r.embedder_name}@{r.embedder_version}"

    def _audit(self, actor: str | None, action: str, employee_id: str | None = None, **detail) -> None:
        if self.access_log is not None:
            self.access_log.audit(actor or local_actor(), action, employee_id, **detail)

    @property
    def recognizer(self) -> FaceRecognizer:
        if self._recognizer is None:
            self._recognizer = gallery_recognizer(self.settings, self.store) or service_recognizer(self.settings)
        return self._recognizer

    def _champion_recognizer(self, _: str) -> FaceRecognizer:
        service_recognizer.cache_clear()
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
            self._calibrations.clear()  # a rebuild may have stored a new calibration copy
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
        return {"status": "ok", "embedder": f"{r.embedder_name}@{r.embedder_version}",
                "employees": g.n_employees if g else 0, "tau": g.manifest.tau if g else None}

    def employees(self) -> list[dict]:
        g = self.snapshot()
        return g.employees().to_dict("records") if g else []

    # ---------------------------------------------------------------------------- calibration

    def impostor_scores(self, g: Gallery) -> ImpostorScores | None:
        """What this gallery's decisions rest on: the calibration copy stored beside the gallery for its
        model, blended with the gallery's own impostor pairs (:func:`gallery_impostor_scores`); None for
        a gallery made with a fixed tau (no copy): its manifest's tau decides, with no FAR estimate."""
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
        """The 1:1 threshold: the manifest's tau (the model's calibration at ``target_far``), recalibrated
        when the gallery's own impostor pairs are blended in."""
        scores = self.impostor_scores(g)
        if scores is None or not scores.blended:
            return float(g.manifest.tau)
        return scores.tau_for_far(g.manifest.target_far or self.settings.gallery.target_far)

    def identify_tau(self, g: Gallery, target_fpir: float) -> float:
        scores = self.impostor_scores(g)
        return scores.tau_for_fpir(target_fpir, g.n_employees) if scores else float(g.manifest.tau)

    # --------------------------------------------------------------------------------- readers

    def identify(self, pixels: np.ndarray, *, entrance: str | None = None, actor: str | None = None) -> Identification:
        """Who is this? Every face in the frame against the tau for ``gallery.target_fpir`` at this size,
        with the estimated chance a stranger comes this close (``far_estimate``: FPIR at this distance).
        Each face is an access-log row (entrance, actor) before the answer is returned."""
        result = self._identify(pixels)
        if self.access_log is not None:
            self.access_log.record_identification(result.to_dict(), entrance=entrance, model=self._model_label(),
                                                   gallery_version=self._version, actor=actor or local_actor())
        return result

    def _identify(self, pixels: np.ndarray) -> Identification:
        g = self.gallery()
        recognizer = self.recognizer
        target = self.settings.gallery.target_fpir
        tau = self.identify_tau(g, target)
        scores = self.impostor_scores(g)
        with self.inference():
            found = recognizer.embed_all(pixels)
            masks = self.mask_states(pixels, [f.box for f in found])
        faces = []
        for face, mask in zip(found, masks):
            eid, dist, name = g.identify(face.embedding[None], tau)
            distance = round(float(dist), 6) if math.isfinite(dist) else None
            far = _estimate(scores.fpir(float(dist), g.n_employees)) if scores and distance is not None else None
            faces.append(IdentifiedFace(face.box.as_list(), eid, name, eid is not None, distance, tau, target, mask,
                                        far))
        return Identification(faces, tau, target)

    def mask_states(self, pixels: np.ndarray, boxes: list) -> list[str | None]:
        """Per face, the face-mask detector's class (``faces.mask_state: auto``; None when none is trained)."""
        if self.settings.faces.mask_state == "off" or not boxes:
            return [None] * len(boxes)
        if self._mask_reader is None:
            from components.faces.mask_state import MaskStateReader

            self._mask_reader = MaskStateReader(self.settings)
        return self._mask_reader.read(pixels, boxes)

    def verify(self, employee_id: str, pixels: np.ndarray, source: str | Path = "photo", *,
               entrance: str | None = None, actor: str | None = None) -> Verification:
        """Is this the claimed employee? 1:1 at the calibrated false-accept rate (one face required).
        The answer is an access-log row (entrance, actor) before it is returned."""
        g = self.gallery()
        with self.inference():
            face = self.recognizer.embed_one(pixels, source)
        tau = self.verify_tau(g)
        accepted, dist = g.verify(employee_id, face.embedding[None], tau)
        scores = self.impostor_scores(g)
        result = Verification(employee_id, bool(accepted), round(float(dist), 6), tau, g.manifest.target_far,
                              _estimate(scores.far(float(dist))) if scores else None)
        if self.access_log is not None:
            self.access_log.record_verification(result.to_dict(), entrance=entrance, model=self._model_label(),
                                                gallery_version=self._version, actor=actor or local_actor())
        return result

    # --------------------------------------------------------------------------------- writers

    def new_gallery(self) -> Gallery:
        """The first, empty gallery: calibrated for the model in service."""
        if self._new_gallery is not None:
            return self._new_gallery()
        from components import data_version

        return calibrated_gallery(self.recognizer, self.settings, self.store, data_version.read_version(),
                                  compute=False)

    def check_name(self, name: str) -> str:
        """A display name: printable, at most ``api.max_name_length`` characters (every adapter's limit)."""
        limit = self.settings.api.max_name_length
        if len(name) > limit:
            raise InvalidEmployee(f"name: {len(name)} characters, the limit is {limit}")
        if not name.isprintable():
            raise InvalidEmployee("name: control characters are not allowed")
        return name

    def enrol(self, employee_id: str, name: str, photos: Sequence[Photo], replace: bool = False,
              force: bool = False, *, actor: str | None = None) -> Gallery:
        """One employee from one or more photos (one face each): a new gallery version, no retraining.
        A face already enrolled under another id is refused (DuplicateFace) unless ``force``."""
        check_employee_id(employee_id)
        self.check_name(name or employee_id)
        if not photos:
            raise InvalidEmployee(f"{employee_id}: at least one photo is required")
        self.refresh()
        recognizer = self.recognizer  # the gallery check under the lock refuses it if a switch came between
        with self.inference():  # the model runs outside the writer lock: writers wait only for each other's I/O
            embedded = embed_photos(recognizer, list(photos), self.settings.images.max_pixels)
        with self.write_lock:
            self.refresh()
            g = enrol(self.store, recognizer, employee_id, name or employee_id, list(photos),
                      max_pixels=self.settings.images.max_pixels, new_gallery=self.new_gallery,
                      replace=replace, keep_versions=self.settings.gallery.keep_versions, force=force,
                      duplicate_tau=self.verify_tau, embedded=embedded)
            self.reload()
            self._audit(actor, "enrol", employee_id, photos=len(photos), replace=replace, force=force,
                        gallery_version=self._version, model=self._model_label())
        return g

    def remove(self, employee_id: str, *, actor: str | None = None) -> int:
        """Delete the employee's embeddings (every local version) and photos; vectors removed."""
        return self.remove_employee(employee_id, actor=actor)["vectors_removed"]

    def remove_employee(self, employee_id: str, *, actor: str | None = None) -> dict:
        """``remove``, with the access log's part of an erasure request: with ``access_log.erase_on_remove``
        the employee's decision rows are deleted too; the answer says what was erased and what was kept
        (the audit rows of the employee's enrolment and removal: who changed the gallery, and when)."""
        with self.write_lock:
            n = remove(self.store, employee_id)
            self.reload()
        out = {"employee_id": employee_id, "vectors_removed": n, "access_rows_erased": 0, "access_rows_kept": 0}
        log = self.access_log
        if log is not None:
            if self.settings.access_log.erase_on_remove:
                out["access_rows_erased"] = log.erase_employee(employee_id)
            else:
                out["access_rows_kept"] = log.count(employee_id=employee_id)
            log.audit(actor or local_actor(), "remove", employee_id, vectors_removed=n,
                      access_rows_erased=out["access_rows_erased"], access_rows_kept=out["access_rows_kept"],
                      gallery_version=self._version)
            out["kept"] = ("the audit rows of this employee's enrolment and removal" +
                           ("" if self.settings.access_log.erase_on_remove else
                            f", and {out['access_rows_kept']} decision rows (access_log.erase_on_remove is off)"))
        return out

    def prepare_gallery(self, model: EmbeddingModel, label: str, data_version: str | None,
                        heldout: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[FaceRecognizer, Gallery]:
        """A model's calibrated, still empty gallery: nothing in service changes."""
        recognizer = FaceRecognizer(model, self.settings, label)
        return recognizer, calibrated_gallery(recognizer, self.settings, self.store, data_version, heldout)

    def rebuild_gallery(self, recognizer: FaceRecognizer | None = None,
                        data_version: str | None = None) -> Gallery:
        """Re-embed every enrolled employee's stored photos with ``recognizer`` (default: the model given to
        this FaceGate, else the registry's champion, asked for here: not the model that made the current
        gallery) into a freshly calibrated gallery: the only way to a gallery after the model changes."""
        recognizer = recognizer or self._given_recognizer or service_recognizer(self.settings)
        fresh = calibrated_gallery(recognizer, self.settings, self.store, data_version)
        with self.write_lock, gallery_lock(self.store.index_dir):
            reembed_all(self.store, recognizer, fresh, self.settings.images.max_pixels, enrolled_names(self.store))
            fresh.save(self.store.index_dir, keep=self.settings.gallery.keep_versions)
            self.reload()
        return fresh

    def promote(self, recognizer: FaceRecognizer, fresh: Gallery, version: str, reason: str, *,
                action: str = "promote", actor: str | None = None) -> dict:
        """Under the gallery lock: re-embed every enrolled employee, move ``champion``, switch the gallery.

        Re-embedding comes first (a bad stored photo fails here, before anything moves); if the gallery
        save fails after the alias moved, the alias goes back to the previous champion.
        """
        name = self.settings.registry.embedder_model
        with self.write_lock, gallery_lock(self.store.index_dir):
            reembed_all(self.store, recognizer, fresh, self.settings.images.max_pixels, enrolled_names(self.store))
            previous = registry.promote(name, version, reason)
            try:
                path = fresh.save(self.store.index_dir, keep=self.settings.gallery.keep_versions)
            except BaseException:
                registry.restore_champion(name, previous)
                raise
            service_recognizer.cache_clear()  # this process now serves the new champion
            self._recognizer = recognizer
            self.reload()
            self._audit(actor, action, None, version=version, previous=previous, reason=reason,
                        gallery_version=self._version, employees=fresh.n_employees)
        return {"previous_champion": previous, "champion": version, "gallery_index_version": path.name,
                "employees": fresh.n_employees}

    def switch_champion(self, version: str | None = None, rollback: bool = False, reason: str = "",
                        data_version: str | None = None) -> dict:
        """A human's promotion (``version``) or rollback: the model and its re-embedded gallery move
        together. No gate: the operator decides."""
        name = self.settings.registry.embedder_model
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
        recognizer, fresh = self.prepare_gallery(model, embedder_version_label(name, target.version), data_version)
        promoted = self.promote(recognizer, fresh, target.version, why, action="rollback" if rollback else "promote")
        if rollback and current is not None:
            registry.mark_rolled_back(name, current.version, why)
        return {**promoted, "reason": why, "previous": current.version if current else None,
                "tau": fresh.manifest.tau}
