"""PAD data: live and attack frames by subject, their faces found once, and folds by subject.

A subject's frames are near-duplicates (same person, light, session), so every split here is by
subject, never by frame: a frame-level split would let a model recognise the person instead of the
attack. ``nuaa-dev`` is laid out ``live/<subject>/*.jpg`` and ``print/<subject>/*.jpg``; a site's own
folders are any ``live`` folder and one folder per attack kind (sub-folders, if any, are subjects).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegate.components.core.errors import DatasetError, FacegateError
from facegate.components.core.images import load_image
from facegate.components.core.settings import Settings
from facegate.components.faces.detectors import detector_from_settings
from facegate.components.faces.types import FaceBox, FaceDetector
from facegate.components.pad.minifasnet import V1SE_SPEC, V2_SPEC, ModelSpec, crop_face, source_box

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
NUAA_ATTACKS = {"print": "print"}  # folder -> attack kind: nuaa-dev holds printed photographs only


@dataclass(frozen=True)
class PadSample:
    path: Path
    subject: str | None
    live: bool
    kind: str  # "live", or the attack kind ("print", "screen", ...)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _subject(folder: Path, path: Path) -> str | None:
    rel = path.relative_to(folder)
    return rel.parts[0] if len(rel.parts) > 1 else None


def folder_samples(live: Path | None, attacks: Mapping[str, Path]) -> list[PadSample]:
    """Every image under ``live`` and under each attack kind's folder; a first-level sub-folder names the
    subject (None for images directly in the folder). A missing or empty folder is a DatasetError."""
    out: list[PadSample] = []
    for kind, folder in ([("live", live)] if live is not None else []) + list(attacks.items()):
        folder = Path(folder)
        files = _images(folder) if folder.is_dir() else []
        if not files:
            raise DatasetError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) for {kind!r}")
        out += [PadSample(p, _subject(folder, p), kind == "live", kind) for p in files]
    return out


def nuaa_samples(root: Path) -> list[PadSample]:
    """``nuaa-dev``: ``live/<subject>/*.jpg`` and ``print/<subject>/*.jpg`` (printed-photo attacks only)."""
    if not (root / "live").is_dir():
        raise DatasetError(f"{root}: not a PAD set (expected live/<subject>/ and print/<subject>/)")
    return folder_samples(root / "live", {kind: root / folder for folder, kind in NUAA_ATTACKS.items()})


def subjects_of(samples: Sequence[PadSample]) -> list[str]:
    return sorted({s.subject for s in samples if s.subject is not None})


def subject_folds(subjects: Sequence[str], k: int, seed: int) -> list[list[str]]:
    """``k`` folds of subjects (seeded shuffle, dealt round-robin); ``k >= len(subjects)``: leave one out."""
    order = sorted(subjects)
    random.Random(seed).shuffle(order)
    k = max(2, min(k, len(order)))
    return [sorted(order[i::k]) for i in range(k)]


def heldout_subjects(subjects: Sequence[str], n_heldout: int, seed: int) -> tuple[list[str], list[str]]:
    """(training, held-out) subjects: ``n_heldout`` drawn seeded, the rest train."""
    order = sorted(subjects)
    random.Random(seed).shuffle(order)
    if not 0 < n_heldout < len(order):
        raise DatasetError(f"{n_heldout} held-out subjects out of {len(order)}: at least one must train")
    return sorted(order[n_heldout:]), sorted(order[:n_heldout])


@dataclass
class PadFaces:
    """The samples whose frame holds a face, its largest face's box, and each member's crop of it.

    Detected once per run: every model is then scored on the very same boxes. ``crops[spec.name]`` is
    ``Nx80x80x3`` BGR uint8 (31 MB for 800 frames and two members, instead of the frames' 700 MB).
    """

    samples: list[PadSample]
    boxes: list[FaceBox]
    crops: dict[str, np.ndarray]
    no_face: list[PadSample]
    detect_ms: list[float]

    @property
    def live(self) -> np.ndarray:
        return np.array([s.live for s in self.samples])

    @property
    def subjects(self) -> np.ndarray:
        return np.array([s.subject or "" for s in self.samples])

    def rows(self, subjects: Sequence[str]) -> np.ndarray:
        return np.flatnonzero(np.isin(self.subjects, list(subjects)))

    def member_crops(self, specs: Sequence[ModelSpec], rows: np.ndarray | None = None) -> list[np.ndarray]:
        """Per member, its crops (of ``rows``) as the ``Nx3x80x80`` float batch the network takes."""
        sel = slice(None) if rows is None else rows
        return [np.ascontiguousarray(self.crops[s.name][sel].transpose(0, 3, 1, 2), dtype=np.float32) for s in specs]


def find_faces(
    samples: Sequence[PadSample],
    detector: FaceDetector,
    specs: Sequence[ModelSpec],
    max_pixels: int,
    progress: Callable[[int, int], None] | None = None,
) -> PadFaces:
    """Detect each frame's faces with the product's detector, keep the largest, crop it for every member.
    An unreadable frame is a failure to acquire, like a frame without a face (``no_face``)."""
    kept, boxes, no_face, detect_ms = [], [], [], []
    crops: dict[str, list[np.ndarray]] = {s.name: [] for s in specs}
    for i, sample in enumerate(samples):
        try:
            frame = load_image(sample.path, max_pixels)
        except FacegateError:
            no_face.append(sample)
            continue
        t = time.perf_counter()
        found = detector.detect(frame)
        detect_ms.append((time.perf_counter() - t) * 1e3)
        if not found:
            no_face.append(sample)
            continue
        box = max(found, key=lambda b: b.area)
        kept.append(sample)
        boxes.append(box)
        for spec in specs:
            crops[spec.name].append(crop_face(frame, source_box(box), spec, rgb=True))
        if progress is not None and (i + 1) % 100 == 0:
            progress(i + 1, len(samples))
    shape = {s.name: (0, *s.input_hw, 3) for s in specs}
    return PadFaces(
        kept,
        boxes,
        {k: np.stack(v) if v else np.zeros(shape[k], np.uint8) for k, v in crops.items()},
        no_face,
        detect_ms,
    )


def product_faces(
    settings: Settings, samples: Sequence[PadSample], log: Callable[[str], None] = lambda message: None
) -> PadFaces:
    """:func:`find_faces` with the product's detector (``faces.*``) and both shipped members' crops."""
    detector = detector_from_settings(settings.faces)
    faces = find_faces(
        samples,
        detector,
        (V2_SPEC, V1SE_SPEC),
        settings.images.max_pixels,
        progress=lambda i, n: log(f"faces: {i}/{n} frames"),
    )
    log(f"{len(faces.samples)} frames with a face, {len(faces.no_face)} without ({settings.faces.detector})")
    return faces
