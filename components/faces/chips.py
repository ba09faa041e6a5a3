"""Aligned chips for a whole image list, computed in parallel once and cached on disk.

Detection and alignment cost far more than a frozen backbone's forward pass and do not depend on the
model being trained, so every training round and benchmark reuses the same chips. The cache key is
built from the images' sha256 and the detector settings: new bytes or settings mean new chips.
``geometry`` is the chip geometry the backbone was trained on (``Backbone.chip_geometry``: dlib_150 or
arcface_112); the default, dlib_150, is left out of the key so existing cache entries stay valid.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from facegate.components.core.errors import ImageError
from facegate.components.core.images import load_image
from facegate.components.core.settings import load_settings
from facegate.components.faces.align import (
    CHIP_GEOMETRIES,
    CHIP_PADDING,
    CHIP_SIZE,
    PAIRED_GEOMETRY,
    FaceAligner,
    chip_channels,
)
from facegate.components.faces.detectors import detector_from_settings
from facegate.components.faces.pipeline import FaceFinder

_WORKER: dict = {}
IN_PROCESS_BELOW = 200  # images: below this, worker start-up costs more than it saves


@dataclass
class ChipSet:
    chips: np.ndarray  # N x S x S x 3 uint8
    table: pd.DataFrame  # path, fallback, left, top, right, bottom, error
    key: str = ""  # cache key (content + settings); features cached from these chips reuse it

    def __len__(self) -> int:
        return len(self.table)


def _init_worker(
    detector: str,
    upsample: int,
    size: int,
    padding: float,
    max_pixels: int,
    geometry: str = "dlib_150",
    detector_options: dict | None = None,
) -> None:
    # the detector's other knobs (YuNet's and RetinaFace's score_threshold, max_side) are params' faces
    # section, unless ``detector_options`` say otherwise; they are not in the cache key
    faces = load_settings().faces
    face_detector = detector_from_settings(faces, detector, upsample=upsample, **(detector_options or {}))
    _WORKER["finder"] = FaceFinder(face_detector, FaceAligner(size, padding, geometry))
    _WORKER["max_pixels"] = max_pixels
    _WORKER["size"] = size
    _WORKER["args"] = (detector, upsample, size, padding, max_pixels, geometry, detector_options)


def _chip_one(path: str) -> tuple[np.ndarray, dict]:
    size = _WORKER["size"]
    try:
        image = load_image(path, _WORKER["max_pixels"])
    except ImageError as exc:  # kept as a row with an error, never dropped
        return np.zeros((size, size, 3), np.uint8), {
            "fallback": True,
            "error": exc.message,
            "left": 0,
            "top": 0,
            "right": 0,
            "bottom": 0,
        }
    crop = _WORKER["finder"].centre_face(image)
    b = crop.box
    return crop.chip, {
        "fallback": crop.fallback,
        "error": None,
        "left": b.left,
        "top": b.top,
        "right": b.right,
        "bottom": b.bottom,
    }


def extract_chips(
    paths: list[Path],
    *,
    detector: str = "dlib_hog",
    upsample: int = 0,
    size: int = CHIP_SIZE,
    padding: float = CHIP_PADDING,
    max_pixels: int = 50_000_000,
    workers: int | None = None,
    progress=None,
    geometry: str = "dlib_150",
    detector_options: dict | None = None,
) -> ChipSet:
    """Centre face of every image (centred-box fallback where none is detected), aligned in ``geometry``
    (``size`` and ``padding`` apply to dlib_150 only); ``detector_options`` go to the detector (YuNet's
    ``score_threshold``, ``max_side``)."""
    workers = workers or os.cpu_count() or 1
    size = size if geometry in ("dlib_150", PAIRED_GEOMETRY) else CHIP_GEOMETRIES[geometry]
    chips = np.zeros((len(paths), size, size, chip_channels(geometry)), np.uint8)
    rows = []
    args = (detector, upsample, size, padding, max_pixels, geometry, detector_options)
    names = [str(p) for p in paths]

    def collect(results) -> None:
        for i, (chip, row) in enumerate(results):
            chips[i] = chip
            rows.append({"path": names[i], **row})
            if progress and ((i + 1) % 1000 == 0 or i + 1 == len(paths)):
                progress(i + 1, len(paths))

    if workers == 1 or len(paths) < IN_PROCESS_BELOW:
        if _WORKER.get("args") != args:  # a process extracting shard after shard loads its detectors once
            _init_worker(*args)
        collect(map(_chip_one, names))
    else:
        # spawn, not fork: the caller may run threads (Prefect, torch), and a forked child can
        # inherit a lock held by one of them and hang forever.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=args) as pool:
            collect(pool.map(_chip_one, names, chunksize=32))
    return ChipSet(chips, pd.DataFrame(rows))


def cache_key(hashes: list[str], **settings) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for x in hashes:
        h.update(x.encode())
    return h.hexdigest()[:20]


def cached_chips(cache_dir: Path, paths: list[Path], hashes: list[str], **settings) -> ChipSet:
    """``extract_chips`` through an on-disk cache keyed by content and settings."""
    progress = settings.pop("progress", None)
    workers = settings.pop("workers", None)
    defaults = {"geometry": "dlib_150", "detector_options": None}  # left out: keys made before them stay valid
    key = cache_key(hashes, **{k: v for k, v in settings.items() if k not in defaults or v != defaults[k]})
    npy, table = cache_dir / f"chips-{key}.npy", cache_dir / f"chips-{key}.parquet"
    if npy.is_file() and table.is_file():
        return ChipSet(np.load(npy, mmap_mode="r"), pd.read_parquet(table), key)
    result = extract_chips(paths, progress=progress, workers=workers, **settings)
    result.key = key
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = npy.with_suffix(".tmp.npy")
    np.save(tmp, result.chips)
    result.table.to_parquet(table.with_suffix(".tmp"), index=False)
    os.replace(tmp, npy)  # table last: its presence marks a complete entry
    os.replace(table.with_suffix(".tmp"), table)
    return result
