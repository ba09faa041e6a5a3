"""The gallery's input checks: each refuses a bad argument with InvalidGalleryInput naming it.

Checked before anything changes, so a bad call never leaves a gallery half-modified.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import PurePosixPath, PureWindowsPath

import numpy as np

from facegate.components.core.errors import InvalidGalleryInput
from facegate.components.gallery.index_kinds import INDEX_KINDS

NORM_TOLERANCE = 1e-3


def check_new(dim: object, index_kind: str, embedder_name: str, embedder_version: str, **params: int) -> None:
    """``Gallery.new``'s arguments; ``params`` are the index knobs (``hnsw_m`` >= 2, others >= 1)."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0:
        raise InvalidGalleryInput("dim", f"must be a positive integer, got {dim!r}")
    if index_kind not in INDEX_KINDS:
        raise InvalidGalleryInput("index_kind", f"{index_kind!r} is not one of {INDEX_KINDS}")
    for name, value in params.items():
        low = 2 if name == "hnsw_m" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidGalleryInput(name, f"must be an integer >= {low}, got {value!r}")
    for name, text in (("embedder_name", embedder_name), ("embedder_version", embedder_version)):
        if not isinstance(text, str) or not text:
            raise InvalidGalleryInput(name, "must be a non-empty string")


def check_vectors(arr: np.ndarray, dim: int, field_name: str) -> np.ndarray:
    """(n x dim) finite, L2-normalised rows as contiguous float32; one vector becomes one row."""
    a = np.asarray(arr)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise InvalidGalleryInput(field_name, f"expected an (n x {dim}) array, got shape {a.shape}")
    if a.shape[1] != dim:
        raise InvalidGalleryInput(field_name, f"dimension {a.shape[1]} does not match the gallery's {dim}")
    if len(a) == 0:
        raise InvalidGalleryInput(field_name, "no vectors")
    if not (np.issubdtype(a.dtype, np.floating)):
        raise InvalidGalleryInput(field_name, f"expected floats, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise InvalidGalleryInput(field_name, "contains NaN or infinite values")
    norms = np.linalg.norm(a.astype(np.float64), axis=1)
    bad = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOLERANCE)
    if len(bad):
        raise InvalidGalleryInput(
            field_name, f"row {int(bad[0])} has L2 norm {norms[bad[0]]:.4f}; embeddings must be L2-normalised"
        )
    return a


def check_one_query(query: np.ndarray, dim: int) -> np.ndarray:
    q = check_vectors(query, dim, "query")
    if len(q) != 1:
        raise InvalidGalleryInput("query", f"expected one embedding, got {len(q)}")
    return q


def check_identity(employee_id: str, name: str) -> None:
    if not isinstance(employee_id, str) or not employee_id.strip():
        raise InvalidGalleryInput("employee_id", f"must be a non-empty string, got {employee_id!r}")
    if not isinstance(name, str):
        raise InvalidGalleryInput("name", f"must be a string, got {name!r}")


def check_photos(photos: Sequence[str] | None, n: int) -> list[str]:
    """One relative photo path (or "") per embedding."""
    if photos is None:
        return [""] * n
    if isinstance(photos, str):
        photos = [photos]
    photo_list = list(photos)
    if len(photo_list) != n:
        raise InvalidGalleryInput("photos", f"{len(photo_list)} photos for {n} embeddings")
    for p in photo_list:
        if not isinstance(p, str):
            raise InvalidGalleryInput("photos", f"must be strings, got {p!r}")
        # Relative only: galleries move between machines and must not leak host paths.
        if PurePosixPath(p).is_absolute() or PureWindowsPath(p).is_absolute():
            raise InvalidGalleryInput("photos", f'{p!r} must be a relative path (or "")')
    return photo_list


def check_k(k: object) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidGalleryInput("k", f"must be a positive integer, got {k!r}")


def check_tau(tau: object) -> float:
    """A threshold to record: a finite distance >= 0."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.floating)) or not math.isfinite(tau) or tau < 0:
        raise InvalidGalleryInput("tau", f"must be a finite distance >= 0, got {tau!r}")
    return float(tau)


def threshold(tau: object, manifest_tau: float | None) -> float:
    """The threshold a search decides with: the caller's, else the manifest's calibrated one."""
    value = manifest_tau if tau is None else tau
    if value is None:
        raise InvalidGalleryInput("tau", "no threshold given and the gallery manifest has none (calibrate it first)")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or math.isnan(value):
        raise InvalidGalleryInput("tau", f"must be a number, got {value!r}")
    return float(value)


def check_keep(keep: object) -> None:
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise InvalidGalleryInput("keep", f"must be an integer >= 1, got {keep!r}")


def opt_float(value: float | None) -> float | None:
    """numpy scalars are not JSON serialisable: the manifest stores plain floats."""
    return None if value is None else float(value)
