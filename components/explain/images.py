"""The images a unit's top patches are cut from: seeded samples of the public training sets only.

LFW's training identities for the embedder (aligned chips from the chip cache) and for the PAD models
(each MiniFASNet's own crop around the face the chip cache found); the face-mask set's training images
for the detector, as its backbone sees them (face crops or the letterboxed image). Never enrolment photos
or captures: nothing here reads the gallery or the access log.
The splits are the ingest's own rules (same seed and fraction), read straight from the source folders, so
no ingest is needed and "training split" means the same images everywhere.

Items are read lazily (chips from a memory-mapped cache, crops from their image when asked), so a run
over thousands of images holds one batch at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facegate.components.calibration.face_sets import lfw_set
from facegate.components.core.datasets import assign_image_splits, list_voc
from facegate.components.core.images import load_image
from facegate.components.detection.decode import letterbox
from facegate.components.detection.two_stage import face_crop
from facegate.components.explain.networks import DetectorInput
from facegate.components.faces.chips import ChipSet, cached_chips
from facegate.components.pad.minifasnet import ModelSpec, crop_face

__all__ = [
    "ImageSet",
    "chip_images",
    "detection_images",
    "facemask_training_faces",
    "facemask_training_images",
    "lfw_training_chips",
    "lfw_training_crops",
    "seeded_sample",
]

CHIP_CHUNK = 500  # chips extracted (and held in memory) per cache entry


@dataclass
class ImageSet:
    """``item(i)``: H x W x C uint8; ``names[i]``: where it comes from (a path, never pixels)."""

    description: str
    names: list[str]
    item: Callable[[int], np.ndarray]

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self.item(i) for i in range(len(self.names)))

    def name(self, i: int) -> str:
        return self.names[i]


def seeded_sample(n_total: int, n: int | None, seed: int) -> np.ndarray:
    """Sorted positions of a seeded sample of ``n`` (all when None or more than there are)."""
    if n is None or n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


def chip_images(
    chips: np.ndarray, names: Sequence[str], rows: np.ndarray, n: int | None, seed: int, description: str
) -> ImageSet:
    """A seeded sample of ``rows`` of an (often memory-mapped) N x S x S x C chip array."""
    pick = np.asarray(rows)[seeded_sample(len(rows), n, seed)]
    return ImageSet(description, [str(names[r]) for r in pick], lambda i: np.asarray(chips[pick[i]]))


def _lfw_training_chunks(
    root: Path,
    n: int | None,
    seed: int,
    val_fraction: float,
    min_train_images: int,
    cache_dir: Path,
    chip_options: dict,
) -> Iterator[tuple[list[Path], ChipSet]]:
    """A seeded sample of LFW's training identities (the ingest's identity split), ``CHIP_CHUNK`` images at a
    time with their chips from the cache (extracted there on the first run)."""
    face_set = lfw_set(root, seed, val_fraction, min_train_images)
    train = np.flatnonzero(face_set.split == "train")
    pick = train[seeded_sample(len(train), n, seed)]
    for start in range(0, len(pick), CHIP_CHUNK):
        rows = pick[start : start + CHIP_CHUNK]
        paths = [face_set.paths[r] for r in rows]
        yield paths, cached_chips(cache_dir, paths, [face_set.hashes[r] for r in rows], **chip_options)


def lfw_training_chips(
    root: Path,
    n: int | None,
    seed: int,
    *,
    val_fraction: float,
    min_train_images: int,
    detector: str,
    upsample: int,
    geometry: str,
    cache_dir: Path,
    progress: Callable[[str], None] = lambda m: None,
) -> ImageSet:
    """``n`` LFW images of training identities, seeded, as aligned chips in ``geometry`` (memory-mapped
    from the chip cache)."""
    parts: list[np.ndarray] = []
    names: list[str] = []
    options = {"detector": detector, "upsample": upsample, "geometry": geometry}
    for paths, chips in _lfw_training_chunks(root, n, seed, val_fraction, min_train_images, cache_dir, options):
        ok = chips.table["error"].isna().to_numpy()
        mapped = np.load(cache_dir / f"chips-{chips.key}.npy", mmap_mode="r")
        parts.append(mapped if ok.all() else mapped[ok])  # an unreadable file's (blank) chip is left out
        names += [str(p.relative_to(root)) for p, good in zip(paths, ok) if good]
        progress(f"chips: {len(names)} images")
    offsets = np.cumsum([0] + [len(p) for p in parts])

    def item(i: int) -> np.ndarray:
        part = int(np.searchsorted(offsets, i, side="right") - 1)
        return np.asarray(parts[part][i - offsets[part]])

    return ImageSet(f"LFW training identities: {len(names)} aligned chips ({geometry}, {detector})", names, item)


def lfw_training_crops(
    root: Path,
    n: int | None,
    seed: int,
    specs: Sequence[ModelSpec],
    *,
    val_fraction: float,
    min_train_images: int,
    detector: str,
    upsample: int,
    cache_dir: Path,
    max_pixels: int,
    progress: Callable[[str], None] = lambda m: None,
) -> ImageSet:
    """``n`` LFW images of training identities, seeded, as each PAD network's crop of the face the chip
    cache found (``spec.crop_scale`` x the box, as the service cuts it): the members' RGB crops stacked."""
    paths: list[Path] = []
    boxes: list[tuple[int, int, int, int]] = []
    options = {"detector": detector, "upsample": upsample}
    for chunk, chips in _lfw_training_chunks(root, n, seed, val_fraction, min_train_images, cache_dir, options):
        t = chips.table
        for p, err, left, top, right, bottom in zip(chunk, t["error"], t["left"], t["top"], t["right"], t["bottom"]):
            if err is None or err != err:  # None or NaN: the file was read
                paths.append(p)
                boxes.append((int(left), int(top), int(right) - int(left) + 1, int(bottom) - int(top) + 1))
        progress(f"faces: {len(paths)} images")

    def item(i: int) -> np.ndarray:
        image = load_image(paths[i], max_pixels)
        return np.concatenate([crop_face(image, boxes[i], spec) for spec in specs], axis=-1)

    scales = ", ".join(f"{s.weights} x{s.crop_scale}" for s in specs)
    return ImageSet(
        f"LFW training identities: {len(paths)} face crops ({scales}; {detector})",
        [str(p.relative_to(root)) for p in paths],
        item,
    )


@dataclass(frozen=True)
class Face:
    image: int  # position in the image list
    box: tuple[float, float, float, float]  # xyxy pixels


def facemask_training_faces(root: Path, seed: int, val_fraction: float) -> tuple[list[Path], list[list[dict]]]:
    """The face-mask set's training images (the ingest's seeded image-level split) and their VOC boxes."""
    items, _ = list_voc(root)
    items = [i for i in items if i.problem is None]
    hashes = [hashlib.sha256((root / i.relpath).read_bytes()).hexdigest() for i in items]
    split = assign_image_splits(pd.DataFrame({"sha256": hashes}), val_fraction, seed).to_numpy()
    train = [i for i, s in zip(items, split) if s == "train"]
    return [root / i.relpath for i in train], [list(i.boxes or ()) for i in train]


class _LastImage:
    """``load(j)`` keeping the last image: a sample sorted by image reads each image once per pass."""

    def __init__(self, load: Callable[[int], np.ndarray]) -> None:
        self.load = load
        self.key: int | None = None
        self.pixels: np.ndarray | None = None

    def __call__(self, j: int) -> np.ndarray:
        if self.key != j or self.pixels is None:
            self.key, self.pixels = j, self.load(j)
        return self.pixels


def detection_images(
    load: Callable[[int], np.ndarray],
    names: Sequence[str],
    boxes: Sequence[Any],
    inp: DetectorInput,
    n: int | None,
    seed: int,
    description: str,
) -> ImageSet:
    """What the detector's backbone sees of a seeded sample: ``n`` face crops (every box of every image is
    a candidate) or ``n`` letterboxed images. ``boxes[j]``: image j's boxes, VOC dicts or xyxy rows."""
    images = _LastImage(load)
    if inp.kind == "letterbox":
        pick = seeded_sample(len(names), n, seed)
        return ImageSet(
            f"{description}: {len(pick)} images letterboxed to {inp.size}",
            [str(names[j]) for j in pick],
            lambda i: letterbox(images(int(pick[i])), inp.size)[0],
        )
    faces = [Face(j, _xyxy(b)) for j, bs in enumerate(boxes) for b in bs]
    chosen = [faces[i] for i in seeded_sample(len(faces), n, seed)]

    def item(i: int) -> np.ndarray:
        f = chosen[i]
        return face_crop(images(f.image), f.box, inp.size, inp.context)

    labels = [f"{names[f.image]}#{','.join(str(round(v)) for v in f.box)}" for f in chosen]
    return ImageSet(f"{description}: {len(chosen)} face crops of {inp.size} px (context {inp.context})", labels, item)


def _xyxy(box) -> tuple[float, float, float, float]:
    if isinstance(box, dict):
        return float(box["xmin"]), float(box["ymin"]), float(box["xmax"]), float(box["ymax"])
    x0, y0, x1, y1 = (float(v) for v in box)
    return x0, y0, x1, y1


def facemask_training_images(
    root: Path, n: int | None, seed: int, *, val_fraction: float, inp: DetectorInput, max_pixels: int
) -> ImageSet:
    """The detector's view of a seeded sample of the face-mask set's training images."""
    paths, boxes = facemask_training_faces(root, seed, val_fraction)
    names = [str(p.relative_to(root)) for p in paths]
    return detection_images(
        lambda j: load_image(paths[j], max_pixels), names, boxes, inp, n, seed, "face-mask training images"
    )
