"""Enrolment store: employees' photos and the gallery built from them, in one folder (``gallery/``).

Layout: ``photos/<employee_id>/<sha256>.<ext>`` (the bytes as received) and ``index/`` (the versioned
FAISS gallery). Every change validates all photos first (one face each), then writes photos, then a
new gallery version under the writer lock: a bad photo changes nothing, a crash leaves the previous
version current. Removal deletes the employee's photos and every older gallery version, so their
embeddings are gone from this machine (DVC history is purged separately, see README).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegate.components.calibration.store import ModelCalibration
from facegate.components.core.errors import DuplicateFace, EmployeeExists, FacegateError, InvalidEmployee
from facegate.components.core.images import decode_image
from facegate.components.gallery import Gallery, GalleryNotFound, UnknownEmployee, gallery_lock, purge_old_versions
from facegate.components.gallery.duplicates import DuplicateRule, find_duplicates
from facegate.components.recognition.recognizer import FaceRecognizer

EMPLOYEE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Photo:
    name: str  # where it came from (file name or upload name), for messages
    data: bytes


@dataclass(frozen=True)
class EnrolmentStore:
    root: Path

    @property
    def photos_dir(self) -> Path:
        return self.root / "photos"

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    def exists(self) -> bool:
        return (self.index_dir / "CURRENT").is_file()

    def load(self) -> Gallery:
        if not self.exists():
            raise GalleryNotFound(f"{self.index_dir}: no gallery yet (run `facegate gallery build` or enrol someone)")
        return Gallery.load(self.index_dir)

    def calibration_file(self, embedder_version: str) -> Path:
        return self.root / "calibration" / (re.sub(r"[^A-Za-z0-9_.-]", "_", embedder_version) + ".npz")

    def save_calibration(self, embedder_version: str, cal: ModelCalibration) -> None:
        """A copy of the model's calibration beside its galleries (atomic): a gallery version and the
        score sketches its thresholds come from travel together (DVC)."""
        cal.save(self.calibration_file(embedder_version))

    def load_calibration(self, embedder_version: str) -> ModelCalibration | None:
        """The calibration copy for this embedder (either file format), None when there is none."""
        path = self.calibration_file(embedder_version)
        return ModelCalibration.load(path) if path.is_file() else None

    def employee_photos(self, employee_id: str) -> list[Path]:
        d = self.photos_dir / employee_id
        return sorted(p for p in d.iterdir() if p.is_file()) if d.is_dir() else []


def check_employee_id(employee_id: str) -> str:
    if not EMPLOYEE_ID.match(employee_id or ""):
        raise InvalidEmployee(f"employee id {employee_id!r}: use 1-64 letters, digits, '_', '.', '-'")
    return employee_id


def embed_photos(recognizer: FaceRecognizer, photos: list[Photo], max_pixels: int) -> tuple[np.ndarray, list[str]]:
    """One face per photo, or a typed error naming the photo; nothing is stored before all pass."""
    embs, digests = [], []
    for photo in photos:
        decoded = decode_image(photo.data, photo.name, max_pixels)
        embs.append(recognizer.embed_one(decoded.pixels, photo.name).embedding)
        digests.append(f"{decoded.sha256}.{decoded.format.lower().replace('jpeg', 'jpg')}")
    return np.stack(embs).astype(np.float32), digests


def enrol(
    store: EnrolmentStore,
    recognizer: FaceRecognizer,
    employee_id: str,
    name: str,
    photos: list[Photo],
    *,
    max_pixels: int,
    new_gallery: Callable[[], Gallery],
    replace: bool = False,
    keep_versions: int,
    force: bool = False,
    duplicates: Callable[[Gallery], DuplicateRule] | None = None,
    embedded: tuple[np.ndarray, list[str]] | None = None,
) -> Gallery:
    """Add (or with ``replace``, re-enrol) one employee; returns the new current gallery.

    A photo whose face looks already enrolled under another id (``duplicates(gallery)``'s threshold for the
    other employees: see ``facegate.components.gallery.duplicates``; default the manifest's tau) is refused
    with DuplicateFace naming that id, unless ``force``; the employee's own photos never count. ``embedded``:
    ``embed_photos(recognizer, photos, ...)`` already done by the caller, outside its writer lock (the model
    is the slow part; only the load-check-save below needs the lock)."""
    check_employee_id(employee_id)
    if not photos:
        raise InvalidEmployee(f"{employee_id}: at least one photo is required")
    embs, files = embedded if embedded is not None else embed_photos(recognizer, photos, max_pixels)
    with gallery_lock(store.index_dir):
        gallery = store.load() if store.exists() else new_gallery()
        gallery.check_model(recognizer.embedder_name, recognizer.embedder_version)
        if employee_id in gallery and not replace:
            raise EmployeeExists(f"{employee_id} is already enrolled (use replace to re-enrol)")
        if not force and gallery.n_vectors:
            rule = duplicates(gallery) if duplicates else DuplicateRule(None, 0.0, gallery.manifest.tau)
            suspects = find_duplicates(gallery, embs, employee_id, rule)
            if suspects:
                d = suspects[0]
                raise DuplicateFace(
                    photos[d.photo].name, employee_id, d.other_id, d.distance, d.tau, d.false_alarm, d.photo
                )
        target = store.photos_dir / employee_id
        target.mkdir(parents=True, exist_ok=True)
        for photo, fname in zip(photos, files):  # content-addressed: never overwrites a kept photo
            (target / fname).write_bytes(photo.data)
        rel = [f"photos/{employee_id}/{f}" for f in files]
        if employee_id in gallery:
            gallery.replace(employee_id, name, embs, rel)
        else:
            gallery.add(employee_id, name, embs, rel)
        gallery.save(store.index_dir, keep=keep_versions)
        for old in target.iterdir():  # a re-enrolment's previous photos go only once the new version is current
            if old.name not in files:
                old.unlink()
    return gallery


def remove(store: EnrolmentStore, employee_id: str) -> int:
    """Delete the employee's embeddings (new version, older versions purged) and photos."""
    with gallery_lock(store.index_dir):
        gallery = store.load()
        if employee_id not in gallery:
            raise UnknownEmployee(employee_id)
        n = gallery.remove(employee_id)
        gallery.save(store.index_dir)
        purge_old_versions(store.index_dir)
        shutil.rmtree(store.photos_dir / employee_id, ignore_errors=True)
    return n


def reembed_all(
    store: EnrolmentStore,
    recognizer: FaceRecognizer,
    fresh: Gallery,
    max_pixels: int,
    names: dict[str, str] | None = None,
) -> Gallery:
    """Every enrolled employee's stored photos embedded by ``recognizer`` into ``fresh`` (not saved).

    The only way to a gallery for another model: embeddings of different models never mix. Call it
    under the gallery lock so no enrolment slips in between the embedding and the save.
    """
    employees = sorted(p.name for p in store.photos_dir.iterdir() if p.is_dir()) if store.photos_dir.is_dir() else []
    for eid in employees:
        files = store.employee_photos(eid)
        if not files:
            continue
        embs, _ = embed_photos(recognizer, [Photo(str(f), f.read_bytes()) for f in files], max_pixels)
        fresh.add(eid, (names or {}).get(eid, eid), embs, [f"photos/{eid}/{f.name}" for f in files])
    return fresh


def enrolled_names(store: EnrolmentStore) -> dict[str, str]:
    """employee id -> display name from the current gallery ({} when there is none or it is unreadable:
    the photos are the source of truth, names are a convenience)."""
    if not store.exists():
        return {}
    try:
        emp = store.load().employees()
    except FacegateError:
        return {}
    return dict(zip(emp["employee_id"], emp["name"]))
