"""The FAISS gallery of enrolled employees: who may open the door, and how close a face must be.

Embeddings are float32, L2-normalised, so similarity is the inner product and every distance this
module reports is the Euclidean distance between unit vectors, ``d = sqrt(max(2 - 2*ip, 0))``
(0 = identical, sqrt(2) = orthogonal); a face is accepted when ``d <= tau``.

In memory a gallery is three aligned pieces: a faiss ``IndexIDMap2`` (flat, IVF or HNSW inside, inner
product metric), a copy of the vectors (so any index can be rebuilt: HNSW cannot remove vectors, IVF
is retrained on demand) and a sidecar table mapping each vector id to an employee. Vector ids are
never reused, so an id seen in an old log line or an old version can never point at someone else.

On disk a gallery is a directory of immutable versions plus a ``CURRENT`` pointer::

    gallery/CURRENT        "v000007"
    gallery/v000007/       index.faiss, vectors.npy, sidecar.parquet, manifest.json
    gallery/.lock          writers' flock

A save writes a hidden temp directory, fsyncs it, renames it to the next ``vNNNNNN`` and only then
swaps ``CURRENT`` with ``os.replace``; a writer killed at any instant leaves the previous version
current and complete. Readers never lock: they read whichever version ``CURRENT`` names.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import faiss
import numpy as np
import pandas as pd

from components.errors import FacegateError, PathError

FORMAT_VERSION = 1
INDEX_KINDS = ("flat", "ivf", "hnsw")
IVF_MIN_POINTS_PER_CENTROID = 39  # faiss k-means warns (and clusters badly) below this
NORM_TOLERANCE = 1e-3

CURRENT_FILE = "CURRENT"
LOCK_FILE = ".lock"
INDEX_FILE = "index.faiss"
VECTORS_FILE = "vectors.npy"
SIDECAR_FILE = "sidecar.parquet"
MANIFEST_FILE = "manifest.json"
GALLERY_FILES = (MANIFEST_FILE, VECTORS_FILE, SIDECAR_FILE, INDEX_FILE)
SIDECAR_COLUMNS = ("vector_id", "employee_id", "name", "photo", "added_at")
DEFAULT_KEEP_VERSIONS = 3

_VERSION_RE = re.compile(r"^v(\d{6,})$")
_TMP_PREFIX = ".tmp-"


# ----------------------------------------------------------------------------------------- errors


class GalleryError(FacegateError):
    """Base of the gallery's errors (also: a save that failed and left the previous version current)."""

    code = "gallery_error"


class InvalidGalleryInput(GalleryError):
    """An argument cannot go into (or be searched in) the gallery; ``field`` names the argument."""

    code = "invalid_gallery_input"

    def __init__(self, field_name: str, reason: str) -> None:
        self.field = field_name
        self.reason = reason
        super().__init__(f"{field_name}: {reason}")


class UnknownEmployee(GalleryError):
    """The employee id is not enrolled in this gallery."""

    code = "unknown_employee"

    def __init__(self, employee_id: str) -> None:
        self.employee_id = employee_id
        super().__init__(f"employee_id: {employee_id!r} is not enrolled in the gallery")


class GalleryNotFound(GalleryError):
    """No gallery has ever been saved in this directory."""

    code = "gallery_not_found"


class GalleryLocked(GalleryError):
    """Another writer held the gallery lock for longer than the caller was willing to wait."""

    code = "gallery_locked"


class GalleryCorrupt(GalleryError, PathError):
    """A stored version is incomplete or inconsistent; ``path`` names the offending file."""

    code = "gallery_corrupt"


class GalleryModelMismatch(GalleryError):
    """The gallery was embedded by another model: its distances mean nothing to the current one."""

    code = "gallery_model_mismatch"


# --------------------------------------------------------------------------------------- manifest


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class GalleryManifest:
    """What a gallery holds and how it was built; saved as ``manifest.json`` beside the index.

    ``index_kind`` is what was asked for, ``index_kind_effective`` what is searched: an IVF gallery
    with too few vectors to train falls back to exact flat search. ``next_vector_id`` persists so ids
    stay unique across saves.
    """

    embedder_name: str
    embedder_version: str
    dim: int
    index_kind: str = "flat"
    tau: float | None = None
    target_far: float | None = None
    achieved_far: float | None = None
    achieved_tar: float | None = None
    data_version: str | None = None
    created_at: str = field(default_factory=_utc_now)
    n_vectors: int = 0
    n_employees: int = 0
    format_version: int = FORMAT_VERSION
    index_kind_effective: str = "flat"
    next_vector_id: int = 0
    ivf_nlist: int = 64
    ivf_nprobe: int = 8
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 128
    updated_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: Path | str = MANIFEST_FILE) -> GalleryManifest:
        """Strict parse: unknown or missing keys and wrong types raise GalleryCorrupt naming ``source``."""
        if not isinstance(data, dict):
            raise GalleryCorrupt(source, "manifest is not a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GalleryCorrupt(source, f"unknown manifest keys {unknown}")
        missing = sorted(k for k in ("embedder_name", "embedder_version", "dim") if k not in data)
        if missing:
            raise GalleryCorrupt(source, f"missing manifest keys {missing}")
        manifest = cls(**data)
        problem = manifest._problem()
        if problem:
            raise GalleryCorrupt(source, problem)
        return manifest

    @classmethod
    def from_json(cls, text: str, source: Path | str = MANIFEST_FILE) -> GalleryManifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GalleryCorrupt(source, f"not valid JSON ({exc})") from exc
        return cls.from_dict(data, source)

    def _problem(self) -> str | None:
        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))

        if self.format_version != FORMAT_VERSION:
            return f"format_version {self.format_version!r} is not supported (expected {FORMAT_VERSION})"
        if not isinstance(self.embedder_name, str) or not isinstance(self.embedder_version, str):
            return "embedder_name and embedder_version must be strings"
        if not is_int(self.dim) or self.dim <= 0:
            return f"dim must be a positive integer, got {self.dim!r}"
        if self.index_kind not in INDEX_KINDS or self.index_kind_effective not in INDEX_KINDS:
            return f"index_kind {self.index_kind!r}/{self.index_kind_effective!r} not in {INDEX_KINDS}"
        for name in ("n_vectors", "n_employees", "next_vector_id", "ivf_nlist", "ivf_nprobe",
                     "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                return f"{name} must be a non-negative integer, got {getattr(self, name)!r}"
        for name in ("tau", "target_far", "achieved_far", "achieved_tar"):
            if not is_num(getattr(self, name)):
                return f"{name} must be a number or null, got {getattr(self, name)!r}"
        return None


# ------------------------------------------------------------------------------------------ index


def _opt_float(value: float | None) -> float | None:
    """numpy scalars are not JSON serialisable: the manifest stores plain floats."""
    return None if value is None else float(value)


def _distance(ip: np.ndarray | float) -> np.ndarray:
    """Euclidean distance between unit vectors from their inner product (clipped: rounding)."""
    return np.sqrt(np.maximum(2.0 - 2.0 * np.asarray(ip, dtype=np.float64), 0.0))


def _build_index(m: GalleryManifest, vectors: np.ndarray,
                 ids: np.ndarray) -> tuple[faiss.IndexIDMap2, str]:
    """A fresh IndexIDMap2 holding ``vectors`` under ``ids``, and the kind actually built.

    IVF is trained on the current vectors once there are enough of them; until then the gallery
    searches exactly with a flat index.
    """
    if m.index_kind == "hnsw":
        inner: faiss.Index = faiss.IndexHNSWFlat(m.dim, m.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = m.hnsw_ef_construction
        effective = "hnsw"
    elif m.index_kind == "ivf" and len(vectors) >= IVF_MIN_POINTS_PER_CENTROID * m.ivf_nlist:
        quantizer = faiss.IndexFlatIP(m.dim)
        inner = faiss.IndexIVFFlat(quantizer, m.dim, m.ivf_nlist, faiss.METRIC_INNER_PRODUCT)
        inner.train(vectors)
        effective = "ivf"
    else:
        inner = faiss.IndexFlatIP(m.dim)
        effective = "flat"
    index = faiss.IndexIDMap2(inner)
    if len(vectors):
        index.add_with_ids(vectors, ids)
    _apply_search_params(index, m)
    return index, effective


def _apply_search_params(index: faiss.Index, m: GalleryManifest) -> None:
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexIVF):
        inner.nprobe = min(m.ivf_nprobe, m.ivf_nlist)
    elif isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = m.hnsw_ef_search


def _inner_kind(index: faiss.Index) -> str | None:
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexHNSWFlat):
        return "hnsw"
    if isinstance(inner, faiss.IndexIVFFlat):
        return "ivf"
    if isinstance(inner, faiss.IndexFlat):
        return "flat"
    return None


def _empty_sidecar() -> pd.DataFrame:
    return pd.DataFrame({
        "vector_id": pd.Series([], dtype="int64"),
        "employee_id": pd.Series([], dtype=str),
        "name": pd.Series([], dtype=str),
        "photo": pd.Series([], dtype=str),
        "added_at": pd.Series([], dtype=str),
    })


# ---------------------------------------------------------------------------------------- gallery


Match = tuple[str, str, float]  # (employee_id, name, distance)


class Gallery:
    """Enrolled employees' embeddings, searchable by face; build with ``new`` or ``load``."""

    def __init__(self, manifest: GalleryManifest, vectors: np.ndarray, sidecar: pd.DataFrame,
                 index: faiss.IndexIDMap2, *, use_gpu: bool = False) -> None:
        self.manifest = manifest
        self._vectors = vectors
        self._sidecar = sidecar.reset_index(drop=True)
        self._index = index
        self._use_gpu = use_gpu and faiss.get_num_gpus() > 0
        self._gpu_index: faiss.Index | None = None
        _apply_search_params(self._index, manifest)
        self._refresh()

    # ------------------------------------------------------------------ construction

    @classmethod
    def new(cls, dim: int, embedder_name: str, embedder_version: str, index_kind: str = "flat", *,
            ivf_nlist: int = 64, ivf_nprobe: int = 8, hnsw_m: int = 32, hnsw_ef_construction: int = 200,
            hnsw_ef_search: int = 128, tau: float | None = None, target_far: float | None = None,
            achieved_far: float | None = None, achieved_tar: float | None = None,
            data_version: str | None = None, use_gpu: bool = False) -> Gallery:
        """An empty gallery for embeddings of ``dim`` floats from the named model version."""
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0:
            raise InvalidGalleryInput("dim", f"must be a positive integer, got {dim!r}")
        if index_kind not in INDEX_KINDS:
            raise InvalidGalleryInput("index_kind", f"{index_kind!r} is not one of {INDEX_KINDS}")
        for name, value, low in (("ivf_nlist", ivf_nlist, 1), ("ivf_nprobe", ivf_nprobe, 1),
                                 ("hnsw_m", hnsw_m, 2), ("hnsw_ef_construction", hnsw_ef_construction, 1),
                                 ("hnsw_ef_search", hnsw_ef_search, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidGalleryInput(name, f"must be an integer >= {low}, got {value!r}")
        for name, text in (("embedder_name", embedder_name), ("embedder_version", embedder_version)):
            if not isinstance(text, str) or not text:
                raise InvalidGalleryInput(name, "must be a non-empty string")
        manifest = GalleryManifest(
            embedder_name=embedder_name, embedder_version=embedder_version, dim=int(dim),
            index_kind=index_kind, tau=_opt_float(tau), target_far=_opt_float(target_far),
            achieved_far=_opt_float(achieved_far), achieved_tar=_opt_float(achieved_tar),
            data_version=data_version, ivf_nlist=ivf_nlist,
            ivf_nprobe=ivf_nprobe, hnsw_m=hnsw_m, hnsw_ef_construction=hnsw_ef_construction,
            hnsw_ef_search=hnsw_ef_search)
        vectors = np.empty((0, manifest.dim), dtype=np.float32)
        index, manifest.index_kind_effective = _build_index(manifest, vectors, np.empty(0, np.int64))
        return cls(manifest, vectors, _empty_sidecar(), index, use_gpu=use_gpu)

    # ------------------------------------------------------------------ views

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def n_vectors(self) -> int:
        return len(self._vectors)

    @property
    def n_employees(self) -> int:
        return len(self._positions)

    @property
    def vectors(self) -> np.ndarray:
        """Read-only view of the stored vectors, row-aligned with ``sidecar``."""
        view = self._vectors.view()
        view.flags.writeable = False
        return view

    @property
    def sidecar(self) -> pd.DataFrame:
        return self._sidecar.copy()

    @property
    def index(self) -> faiss.IndexIDMap2:
        """The CPU faiss index (what gets saved)."""
        return self._index

    def __contains__(self, employee_id: object) -> bool:
        return employee_id in self._positions

    def __len__(self) -> int:
        return self.n_employees

    def employees(self) -> pd.DataFrame:
        """One row per enrolled employee: employee_id, name, n_vectors (sorted by employee_id)."""
        if self._sidecar.empty:
            return pd.DataFrame({"employee_id": pd.Series([], dtype=str), "name": pd.Series([], dtype=str),
                                 "n_vectors": pd.Series([], dtype="int64")})
        out = (self._sidecar.groupby("employee_id", sort=True)
               .agg(name=("name", "first"), n_vectors=("vector_id", "size")).reset_index())
        out["n_vectors"] = out["n_vectors"].astype("int64")
        return out

    def set_threshold(self, tau: float, *, target_far: float | None = None,
                      achieved_far: float | None = None, achieved_tar: float | None = None) -> None:
        """Record the calibrated acceptance threshold (and what it achieved) in the manifest."""
        if isinstance(tau, bool) or not isinstance(tau, (int, float, np.floating)) or not math.isfinite(tau) \
                or tau < 0:
            raise InvalidGalleryInput("tau", f"must be a finite distance >= 0, got {tau!r}")
        self.manifest.tau = float(tau)
        self.manifest.target_far = _opt_float(target_far)
        self.manifest.achieved_far = _opt_float(achieved_far)
        self.manifest.achieved_tar = _opt_float(achieved_tar)

    def check_model(self, expected_embedder_name: str, expected_version: str | None = None) -> None:
        """Raise GalleryModelMismatch unless the gallery was embedded by this model (and version)."""
        m = self.manifest
        if m.embedder_name != expected_embedder_name or (
                expected_version is not None and m.embedder_version != expected_version):
            want = expected_embedder_name + (f" version {expected_version}" if expected_version else "")
            raise GalleryModelMismatch(
                f"gallery was built with {m.embedder_name} version {m.embedder_version}, but the "
                f"current model is {want}: re-enrol the employees with the current model")

    # ------------------------------------------------------------------ mutation

    def add(self, employee_id: str, name: str, embeddings: np.ndarray,
            photos: Sequence[str] | None = None) -> np.ndarray:
        """Enrol ``embeddings`` (n x dim) for an employee; returns their new vector ids.

        Adding to an already enrolled employee appends vectors and renames all their rows to ``name``
        (one employee, one name).
        """
        emb = self._check_vectors(embeddings, "embeddings")
        self._check_identity(employee_id, name)
        photo_list = self._check_photos(photos, len(emb))
        return self._add(employee_id, name, emb, photo_list)

    def replace(self, employee_id: str, name: str, embeddings: np.ndarray,
                photos: Sequence[str] | None = None) -> np.ndarray:
        """Swap an employee's vectors for new ones (new ids); enrols them if absent.

        Inputs are validated before anything is removed, so bad input never drops an employee.
        """
        emb = self._check_vectors(embeddings, "embeddings")
        self._check_identity(employee_id, name)
        photo_list = self._check_photos(photos, len(emb))
        if employee_id in self._positions:
            self.remove(employee_id)
        return self._add(employee_id, name, emb, photo_list)

    def remove(self, employee_id: str) -> int:
        """Drop every vector of an employee; returns how many.

        This changes the in-memory gallery and, once saved, the current version only: older saved
        versions still hold the employee's embeddings until pruned. For erasure, save and then call
        ``purge_old_versions(directory)``.
        """
        positions = self._positions.get(employee_id)
        if positions is None:
            raise UnknownEmployee(employee_id)
        keep = np.ones(len(self._vectors), dtype=bool)
        keep[positions] = False
        removed_ids = self._ids[positions]
        kind = self.manifest.index_kind_effective
        if kind == "flat":
            n = self._index.remove_ids(np.ascontiguousarray(removed_ids, dtype=np.int64))
            if n != len(removed_ids):
                raise GalleryError(f"index removed {n} of {len(removed_ids)} vectors of {employee_id!r}")
        elif kind == "ivf":
            # IVF under IndexIDMap2 cannot remove (IVF keeps stale internal ids): refill, keeping
            # the trained centroids.
            self._index.reset()
            if keep.any():
                self._index.add_with_ids(np.ascontiguousarray(self._vectors[keep]), self._ids[keep])
        else:  # HNSW cannot remove at all: rebuild the graph from the stored vectors
            self._index, _ = _build_index(self.manifest, np.ascontiguousarray(self._vectors[keep]),
                                          self._ids[keep])
        self._vectors = np.ascontiguousarray(self._vectors[keep])
        self._sidecar = self._sidecar.loc[keep].reset_index(drop=True)
        self._refresh()
        return int(len(removed_ids))

    def rebuild_index(self, retrain: bool = False) -> None:
        """Rebuild the faiss index from the stored vectors (``retrain``: fresh IVF centroids)."""
        if self.manifest.index_kind_effective == "ivf" and not retrain:
            self._index.reset()
            if len(self._vectors):
                self._index.add_with_ids(self._vectors, self._ids)
        else:
            self._index, self.manifest.index_kind_effective = _build_index(
                self.manifest, self._vectors, self._ids)
        self._refresh()

    def _add(self, employee_id: str, name: str, emb: np.ndarray, photos: list[str]) -> np.ndarray:
        start = self.manifest.next_vector_id
        ids = np.arange(start, start + len(emb), dtype=np.int64)
        vectors = np.concatenate([self._vectors, emb])
        all_ids = np.concatenate([self._ids, ids])
        m = self.manifest
        if m.index_kind == "ivf" and m.index_kind_effective == "flat" and \
                len(vectors) >= IVF_MIN_POINTS_PER_CENTROID * m.ivf_nlist:
            self._index, m.index_kind_effective = _build_index(m, vectors, all_ids)  # first training
        else:
            self._index.add_with_ids(emb, ids)
        now = _utc_now()
        rows = pd.DataFrame({
            "vector_id": pd.Series(ids, dtype="int64"),
            "employee_id": pd.Series([employee_id] * len(emb), dtype=str),
            "name": pd.Series([name] * len(emb), dtype=str),
            "photo": pd.Series(photos, dtype=str),
            "added_at": pd.Series([now] * len(emb), dtype=str),
        })
        sidecar = pd.concat([self._sidecar, rows], ignore_index=True) if len(self._sidecar) else rows
        sidecar.loc[sidecar["employee_id"] == employee_id, "name"] = name
        self._vectors = vectors
        self._sidecar = sidecar
        m.next_vector_id = start + len(emb)
        self._refresh()
        return ids

    def _refresh(self) -> None:
        """Recompute the lookup arrays and manifest counts after any change."""
        self._ids = self._sidecar["vector_id"].to_numpy(dtype=np.int64)
        self._emp = self._sidecar["employee_id"].to_numpy(dtype=object)
        self._names = self._sidecar["name"].to_numpy(dtype=object)
        self._positions: dict[str, np.ndarray] = {
            str(k): np.asarray(v) for k, v in self._sidecar.groupby("employee_id", sort=False).indices.items()
        } if len(self._sidecar) else {}
        self._max_per_employee = max((len(v) for v in self._positions.values()), default=0)
        self.manifest.n_vectors = len(self._vectors)
        self.manifest.n_employees = len(self._positions)
        self._gpu_index = None

    # ------------------------------------------------------------------ search

    def search(self, queries: np.ndarray, k: int = 5) -> list[list[Match]]:
        """For each query, up to ``k`` employees as (employee_id, name, distance), best first.

        Each employee counts once, at their best-matching enrolled vector.
        """
        q = self._check_vectors(queries, "queries")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidGalleryInput("k", f"must be a positive integer, got {k!r}")
        if self.n_vectors == 0:
            return [[] for _ in range(len(q))]
        # k employees are guaranteed among the top k * (most vectors any employee has) neighbours.
        kk = int(min(self.n_vectors, k * self._max_per_employee))
        scores, ids = self._raw_search(q, kk)
        dists = _distance(scores)
        out: list[list[Match]] = []
        for row_d, row_i in zip(dists, ids):
            valid = row_i >= 0
            pos = np.searchsorted(self._ids, row_i[valid])
            found: list[Match] = []
            seen: set[str] = set()
            for p, d in zip(pos, row_d[valid]):
                eid = self._emp[p]
                if eid in seen:
                    continue
                seen.add(eid)
                found.append((eid, self._names[p], float(d)))
                if len(found) == k:
                    break
            out.append(found)
        return out

    def identify(self, query: np.ndarray, tau: float | None = None) -> tuple[str | None, float, str | None]:
        """Who is this? (employee_id, distance, name) of the nearest employee if within ``tau``, else
        (None, distance to the nearest, None); ``tau`` defaults to the manifest's."""
        threshold = self._tau(tau)
        q = self._one_query(query)
        best = self.search(q, k=1)[0]
        if not best:
            return None, math.inf, None
        employee_id, name, d = best[0]
        if d <= threshold:
            return employee_id, d, name
        return None, d, None

    def verify(self, employee_id: str, query: np.ndarray, tau: float | None = None) -> tuple[bool, float]:
        """Is this the claimed employee? (accepted, distance to their best-matching enrolled vector).

        Exact (brute force over the employee's own vectors) whatever the index kind.
        """
        threshold = self._tau(tau)
        q = self._one_query(query)
        positions = self._positions.get(employee_id)
        if positions is None:
            raise UnknownEmployee(employee_id)
        ip = float(np.max(self._vectors[positions] @ q[0]))
        d = float(_distance(ip))
        return d <= threshold, d

    def _raw_search(self, q: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        if self._use_gpu and self.manifest.index_kind_effective == "flat":
            if self._gpu_index is None:
                cpu = faiss.IndexFlatIP(self.dim)
                cpu.add(self._vectors)
                self._gpu_index = faiss.index_cpu_to_all_gpus(cpu)
            scores, pos = self._gpu_index.search(q, kk)
            return scores, np.where(pos >= 0, self._ids[np.clip(pos, 0, None)], -1)
        return self._index.search(q, kk)

    def _tau(self, tau: float | None) -> float:
        value = self.manifest.tau if tau is None else tau
        if value is None:
            raise InvalidGalleryInput("tau", "no threshold given and the gallery manifest has none "
                                             "(calibrate it first)")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or math.isnan(value):
            raise InvalidGalleryInput("tau", f"must be a number, got {value!r}")
        return float(value)

    def _one_query(self, query: np.ndarray) -> np.ndarray:
        q = self._check_vectors(query, "query")
        if len(q) != 1:
            raise InvalidGalleryInput("query", f"expected one embedding, got {len(q)}")
        return q

    # ------------------------------------------------------------------ validation

    def _check_vectors(self, arr: np.ndarray, field_name: str) -> np.ndarray:
        a = np.asarray(arr)
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2:
            raise InvalidGalleryInput(field_name, f"expected an (n x {self.dim}) array, got shape {a.shape}")
        if a.shape[1] != self.dim:
            raise InvalidGalleryInput(field_name, f"dimension {a.shape[1]} does not match the gallery's {self.dim}")
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
            raise InvalidGalleryInput(field_name, f"row {int(bad[0])} has L2 norm {norms[bad[0]]:.4f}; "
                                                  "embeddings must be L2-normalised")
        return a

    @staticmethod
    def _check_identity(employee_id: str, name: str) -> None:
        if not isinstance(employee_id, str) or not employee_id.strip():
            raise InvalidGalleryInput("employee_id", f"must be a non-empty string, got {employee_id!r}")
        if not isinstance(name, str):
            raise InvalidGalleryInput("name", f"must be a string, got {name!r}")

    @staticmethod
    def _check_photos(photos: Sequence[str] | None, n: int) -> list[str]:
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
                raise InvalidGalleryInput("photos", f"{p!r} must be a relative path (or \"\")")
        return photo_list

    # ------------------------------------------------------------------ persistence

    def save(self, directory: Path | str, keep: int = DEFAULT_KEEP_VERSIONS) -> Path:
        """Write a new version atomically, make it current, keep the newest ``keep`` versions.

        Takes the writer lock (re-entrant: callers doing read-modify-write may already hold it). A
        failure or a kill at any point leaves the previous version current and complete.
        """
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise InvalidGalleryInput("keep", f"must be an integer >= 1, got {keep!r}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with gallery_lock(directory):
            name = _version_name(max(_version_numbers(directory), default=0) + 1)
            final = directory / name
            tmp = directory / f"{_TMP_PREFIX}{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self.manifest.updated_at = _utc_now()
            try:
                tmp.mkdir()
                self._write_files(tmp)
                _fsync_dir(tmp)
                os.rename(tmp, final)  # directories cannot be os.replace'd over; final never exists
                _fsync_dir(directory)
                _write_pointer(directory, name)
            except Exception as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                if _read_pointer_or_none(directory) != name:
                    shutil.rmtree(final, ignore_errors=True)
                if not isinstance(exc, (OSError, RuntimeError)):
                    raise
                raise GalleryError(f"{directory}: could not save the gallery ({exc}); "
                                   "the previous version is still current") from exc
            _prune(directory, keep)
        return final

    def _write_files(self, target: Path) -> None:
        faiss.write_index(self._index, str(target / INDEX_FILE))
        _fsync_path(target / INDEX_FILE)
        with open(target / VECTORS_FILE, "wb") as f:
            np.save(f, self._vectors, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        with open(target / SIDECAR_FILE, "wb") as f:
            self._sidecar.to_parquet(f, index=False)
            f.flush()
            os.fsync(f.fileno())
        with open(target / MANIFEST_FILE, "w", encoding="utf-8") as f:
            f.write(self.manifest.to_json())
            f.flush()
            os.fsync(f.fileno())

    @classmethod
    def load(cls, directory: Path | str, *, version: str | None = None, use_gpu: bool = False) -> Gallery:
        """Load and validate the current version (or a named one); GalleryCorrupt names any bad file."""
        directory = Path(directory)
        if version is not None:
            if not _VERSION_RE.match(version) or not (directory / version).is_dir():
                raise GalleryNotFound(f"{directory / version}: no such gallery version")
            return cls._load_version(directory / version, use_gpu)
        for attempt in range(3):
            name = _read_pointer(directory)
            try:
                return cls._load_version(directory / name, use_gpu)
            except GalleryCorrupt:
                # A writer may have swapped and pruned this version while we read it: retry then.
                if attempt < 2 and _read_pointer_or_none(directory) != name:
                    continue
                raise
        raise AssertionError("unreachable")

    @classmethod
    def _load_version(cls, vdir: Path, use_gpu: bool) -> Gallery:
        for fname in GALLERY_FILES:
            if not (vdir / fname).is_file():
                raise GalleryCorrupt(vdir / fname, "missing")
        mpath, vpath, spath, ipath = (vdir / f for f in (MANIFEST_FILE, VECTORS_FILE, SIDECAR_FILE, INDEX_FILE))
        try:
            text = mpath.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise GalleryCorrupt(mpath, f"unreadable ({exc})") from exc
        m = GalleryManifest.from_json(text, mpath)

        try:
            vectors = np.load(vpath, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise GalleryCorrupt(vpath, f"unreadable ({exc})") from exc
        if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[1] != m.dim:
            raise GalleryCorrupt(vpath, f"expected float32 (n x {m.dim}), got {vectors.dtype} {vectors.shape}")
        if len(vectors) != m.n_vectors:
            raise GalleryCorrupt(vpath, f"{len(vectors)} vectors, manifest says {m.n_vectors}")
        if len(vectors) and (not np.isfinite(vectors).all() or
                             np.abs(np.linalg.norm(vectors, axis=1) - 1.0).max() > NORM_TOLERANCE):
            raise GalleryCorrupt(vpath, "holds non-finite or non-normalised vectors")
        vectors = np.ascontiguousarray(vectors)

        try:
            sidecar = pd.read_parquet(spath)
        except Exception as exc:  # pyarrow raises several unrelated types on damaged files
            raise GalleryCorrupt(spath, f"unreadable ({exc})") from exc
        if list(sidecar.columns) != list(SIDECAR_COLUMNS):
            raise GalleryCorrupt(spath, f"columns {list(sidecar.columns)}, expected {list(SIDECAR_COLUMNS)}")
        if len(sidecar) != m.n_vectors:
            raise GalleryCorrupt(spath, f"{len(sidecar)} rows, manifest says {m.n_vectors}")
        if not pd.api.types.is_integer_dtype(sidecar["vector_id"]):
            raise GalleryCorrupt(spath, f"vector_id has dtype {sidecar['vector_id'].dtype}")
        ids = sidecar["vector_id"].to_numpy(dtype=np.int64)
        if len(ids) and (np.any(np.diff(ids) <= 0) or ids[0] < 0 or ids[-1] >= m.next_vector_id):
            raise GalleryCorrupt(spath, "vector ids are not unique, increasing and below next_vector_id")
        if sidecar["employee_id"].isna().any() or sidecar["employee_id"].nunique() != m.n_employees:
            raise GalleryCorrupt(spath, f"employee ids disagree with manifest's n_employees={m.n_employees}")
        for col in ("employee_id", "name", "photo", "added_at"):
            sidecar[col] = sidecar[col].fillna("").astype(str)

        try:
            index = faiss.read_index(str(ipath))
        except RuntimeError as exc:
            raise GalleryCorrupt(ipath, f"unreadable ({str(exc).strip().splitlines()[-1]})") from exc
        if not isinstance(index, faiss.IndexIDMap2):
            raise GalleryCorrupt(ipath, f"expected an IndexIDMap2, got {type(index).__name__}")
        kind = _inner_kind(index)
        if kind != m.index_kind_effective or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise GalleryCorrupt(ipath, f"holds a {kind} index (metric {index.metric_type}), manifest says "
                                        f"{m.index_kind_effective} with inner product")
        if index.d != m.dim or index.ntotal != m.n_vectors:
            raise GalleryCorrupt(ipath, f"d={index.d}, ntotal={index.ntotal}; manifest says "
                                        f"dim={m.dim}, n_vectors={m.n_vectors}")
        if not np.array_equal(np.sort(faiss.vector_to_array(index.id_map)), ids):
            raise GalleryCorrupt(ipath, "its vector ids differ from sidecar.parquet's")
        return cls(m, vectors, sidecar, index, use_gpu=use_gpu)


# ------------------------------------------------------------------------------ versions on disk


def _version_name(number: int) -> str:
    return f"v{number:06d}"


def _version_numbers(directory: Path) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(int(m.group(1)) for p in directory.iterdir()
                  if p.is_dir() and (m := _VERSION_RE.match(p.name)))


def list_versions(directory: Path | str) -> list[str]:
    """Saved version names, oldest first (the current one included)."""
    return [_version_name(n) for n in _version_numbers(Path(directory))]


def _read_pointer_or_none(directory: Path) -> str | None:
    try:
        return (directory / CURRENT_FILE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_pointer(directory: Path) -> str:
    pointer = directory / CURRENT_FILE
    if not pointer.is_file():
        if not _version_numbers(directory):
            raise GalleryNotFound(f"{directory}: no gallery has been saved here")
        raise GalleryCorrupt(pointer, "missing")
    name = _read_pointer_or_none(directory)
    if name is None or not _VERSION_RE.match(name):
        raise GalleryCorrupt(pointer, f"does not name a version ({name!r})")
    if not (directory / name).is_dir():
        raise GalleryCorrupt(pointer, f"points at {name}, which does not exist")
    return name


def current_version(directory: Path | str) -> str:
    """Name of the version ``load`` would read."""
    return _read_pointer(Path(directory))


def _write_pointer(directory: Path, name: str) -> None:
    tmp = directory / f"{CURRENT_FILE}{_TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(name + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / CURRENT_FILE)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(directory)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on directories
        _fsync_path(path)


def _prune(directory: Path, keep: int) -> list[str]:
    """Delete all but the current and the ``keep - 1`` newest older versions, plus leftovers of dead
    writers (temp dirs, uncommitted versions). Caller holds the lock, so nothing here is in flight."""
    current = _read_pointer(directory)
    current_n = int(_VERSION_RE.match(current).group(1))  # type: ignore[union-attr]
    older = [n for n in _version_numbers(directory) if n < current_n]
    # Only complete versions count as kept history (a dead writer may leave an empty one behind).
    older = [n for n in older if all((directory / _version_name(n) / f).is_file() for f in GALLERY_FILES)]
    kept = {current_n, *older[max(0, len(older) - (keep - 1)):]} if keep > 1 else {current_n}
    removed: list[str] = []
    for n in _version_numbers(directory):
        if n not in kept:
            shutil.rmtree(directory / _version_name(n), ignore_errors=True)
            removed.append(_version_name(n))
    for p in directory.iterdir():
        if p.name.startswith(_TMP_PREFIX) or p.name.startswith(CURRENT_FILE + _TMP_PREFIX):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
    if removed:
        _fsync_dir(directory)
    return removed


def purge_old_versions(directory: Path | str) -> list[str]:
    """Delete every non-current version (and dead writers' leftovers); returns the names removed.

    Use after removing an employee to erase their embeddings from disk: older versions keep them
    until pruned. Files are unlinked, not scrubbed from the underlying blocks.
    """
    directory = Path(directory)
    with gallery_lock(directory):
        return _prune(directory, keep=1)


# ------------------------------------------------------------------------------------------- lock

_held = threading.local()


@contextlib.contextmanager
def gallery_lock(directory: Path | str, timeout: float | None = None) -> Iterator[None]:
    """Exclusive cross-process writer lock (flock on ``directory/.lock``); readers never take it.

    Re-entrant within a thread, so ``save`` can lock while a caller already holds the lock for a
    load-modify-save cycle. The kernel drops it when the holder dies, so a killed writer never
    leaves the gallery locked. ``timeout`` (seconds) raises GalleryLocked instead of waiting forever.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = str(directory.resolve())
    counts: dict[str, int] = _held.__dict__.setdefault("counts", {})
    if counts.get(key, 0) > 0:
        counts[key] += 1
        try:
            yield
        finally:
            counts[key] -= 1
        return
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise GalleryLocked(f"{directory}: another writer holds the gallery lock") from None
                    time.sleep(0.05)
        counts[key] = 1
        try:
            yield
        finally:
            counts.pop(key, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
