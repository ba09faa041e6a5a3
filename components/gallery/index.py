"""The gallery in memory: who may open the door, and how close a face must be.

Embeddings are L2-normalised float32, so similarity is the inner product; distances are Euclidean
between unit vectors (0 = identical, sqrt(2) = orthogonal) and a face is accepted at ``d <= tau``.
The faiss index (index_kinds), a copy of the vectors (to rebuild any index) and the sidecar naming
each vector's employee stay aligned; ids are never reused, so an old id never names someone else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd

from facegate.components.gallery import checks, store
from facegate.components.gallery import index_kinds as kinds
from facegate.components.gallery import sidecar as table
from facegate.components.gallery.manifest import GalleryManifest


class Gallery:
    """Enrolled employees' embeddings, searchable by face; build with ``new`` or ``load``. ``device``
    (cpu | gpu | auto: ``index_kinds.resolve_faiss_device``): gpu searches flat galleries on a GPU copy."""

    def __init__(
        self,
        manifest: GalleryManifest,
        vectors: np.ndarray,
        sidecar: pd.DataFrame,
        index: faiss.IndexIDMap2,
        *,
        device: str = "cpu",
    ) -> None:
        self.manifest, self.device = manifest, kinds.resolve_faiss_device(device)
        self._vectors, self._sidecar, self._index = vectors, sidecar.reset_index(drop=True), index
        kinds.apply_search_params(self._index, manifest)
        self._refresh()

    @classmethod
    def new(
        cls,
        dim: int,
        embedder_name: str,
        embedder_version: str,
        index_kind: str = "flat",
        *,
        ivf_nlist: int = kinds.DEFAULT_IVF_NLIST,
        ivf_nprobe: int = kinds.DEFAULT_IVF_NPROBE,
        hnsw_m: int = kinds.HNSW_M,
        hnsw_ef_construction: int = kinds.HNSW_EF_CONSTRUCTION,
        hnsw_ef_search: int = kinds.DEFAULT_HNSW_EF_SEARCH,
        tau: float | None = None,
        target_far: float | None = None,
        achieved_far: float | None = None,
        achieved_tar: float | None = None,
        data_version: str | None = None,
        device: str = "cpu",
    ) -> Gallery:
        """An empty gallery for embeddings of ``dim`` floats from the named model version."""
        knobs: dict[str, Any] = dict(
            ivf_nlist=ivf_nlist,
            ivf_nprobe=ivf_nprobe,
            hnsw_m=hnsw_m,
            hnsw_ef_construction=hnsw_ef_construction,
            hnsw_ef_search=hnsw_ef_search,
        )
        checks.check_new(dim, index_kind, embedder_name, embedder_version, **knobs)
        m = GalleryManifest(
            embedder_name=embedder_name,
            embedder_version=embedder_version,
            dim=int(dim),
            index_kind=index_kind,
            data_version=data_version,
            **knobs,
        )
        m.tau, m.target_far, m.achieved_far, m.achieved_tar = map(
            checks.opt_float, (tau, target_far, achieved_far, achieved_tar)
        )
        vectors = np.empty((0, m.dim), dtype=np.float32)
        index, m.index_kind_effective = kinds.build_gallery_index(m, vectors, np.empty(0, np.int64))
        return cls(m, vectors, table.empty_sidecar(), index, device=device)

    @classmethod
    def load(cls, directory: Path | str, *, version: str | None = None, device: str = "cpu") -> Gallery:
        """The current (or the named) version, validated: ``store.load``. ``device`` is the
        ``gallery.device`` setting, passed in by the service layer: this module never reads params."""
        return cls(*store.load(directory, version), device=device)

    def save(self, directory: Path | str, keep: int = store.DEFAULT_KEEP_VERSIONS) -> Path:
        """A new current version, written atomically under the (re-entrant) writer lock: ``store.save``."""
        return store.save(directory, store.GalleryParts(self.manifest, self._vectors, self._sidecar, self._index), keep)

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def n_vectors(self) -> int:
        return len(self._vectors)

    @property
    def n_employees(self) -> int:
        return len(self._roster.positions)

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
        return employee_id in self._roster.positions

    def __len__(self) -> int:
        return self.n_employees

    def employees(self) -> pd.DataFrame:
        """One row per enrolled employee: employee_id, name, n_vectors (sorted by employee_id)."""
        return table.employees(self._sidecar)

    def set_threshold(
        self,
        tau: float,
        *,
        target_far: float | None = None,
        achieved_far: float | None = None,
        achieved_tar: float | None = None,
    ) -> None:
        """Record the calibrated acceptance threshold (and what it achieved) in the manifest."""
        self.manifest.set_threshold(tau, target_far, achieved_far, achieved_tar)

    def check_model(self, expected_embedder_name: str, expected_version: str | None = None) -> None:
        """Raise GalleryModelMismatch unless the gallery was embedded by this model (and version)."""
        self.manifest.check_model(expected_embedder_name, expected_version)

    def add(
        self, employee_id: str, name: str, embeddings: np.ndarray, photos: Sequence[str] | None = None
    ) -> np.ndarray:
        """Enrol ``embeddings`` (n x dim) for an employee; returns their new vector ids. An enrolled
        employee gets more vectors, and all their rows take ``name`` (one employee, one name)."""
        return self._enrol(employee_id, name, embeddings, photos, replace=False)

    def replace(
        self, employee_id: str, name: str, embeddings: np.ndarray, photos: Sequence[str] | None = None
    ) -> np.ndarray:
        """Swap an employee's vectors for new ones (new ids), enrolling them if absent; inputs are
        checked before anything is removed, so bad input never drops an employee."""
        return self._enrol(employee_id, name, embeddings, photos, replace=True)

    def _enrol(
        self, employee_id: str, name: str, embeddings: np.ndarray, photos: Sequence[str] | None, replace: bool
    ) -> np.ndarray:
        emb = checks.check_vectors(embeddings, self.dim, "embeddings")
        checks.check_identity(employee_id, name)
        photo_list = checks.check_photos(photos, len(emb))
        if replace and employee_id in self:
            self.remove(employee_id)
        m, start = self.manifest, self.manifest.next_vector_id
        ids = np.arange(start, start + len(emb), dtype=np.int64)
        vectors = np.concatenate([self._vectors, emb])
        self._index = kinds.add_to_index(self._index, m, vectors, np.concatenate([self._roster.ids, ids]), len(emb))
        self._vectors, m.next_vector_id = vectors, start + len(emb)
        self._sidecar = table.with_rows(self._sidecar, ids, employee_id, name, photo_list)
        self._refresh()
        return ids

    def remove(self, employee_id: str) -> int:
        """Drop every vector of an employee; returns how many.

        Only from memory and, once saved, from the current version: older versions keep the
        embeddings until pruned. To erase them, save and then ``purge_old_versions(directory)``.
        """
        positions = self._roster.rows_of(employee_id)
        keep = np.ones(len(self._vectors), dtype=bool)
        keep[positions] = False
        kept, ids = np.ascontiguousarray(self._vectors[keep]), self._roster.ids
        self._index = kinds.remove_from_index(self._index, self.manifest, ids[positions], kept, ids[keep], employee_id)
        self._vectors, self._sidecar = kept, self._sidecar.loc[keep].reset_index(drop=True)
        self._refresh()
        return int(len(positions))

    def rebuild_index(self, retrain: bool = False) -> None:
        """Rebuild the faiss index from the stored vectors (``retrain``: fresh IVF centroids)."""
        self._index = kinds.rebuild(self._index, self.manifest, self._vectors, self._roster.ids, retrain)
        self._refresh()

    def _refresh(self) -> None:
        """Recompute the lookups and manifest counts after any change."""
        self._roster = table.Roster(self._sidecar)
        self.manifest.n_vectors = len(self._vectors)
        self.manifest.n_employees = len(self._roster.positions)
        self._gpu_index: kinds.GpuFlatMirror | None = None

    def search(self, queries: np.ndarray, k: int = 5) -> list[list[table.Match]]:
        """For each query, up to ``k`` employees as (employee_id, name, distance), best first; each
        employee counts once, at their best-matching enrolled vector."""
        q = checks.check_vectors(queries, self.dim, "queries")
        checks.check_k(k)
        if self.n_vectors == 0:
            return [[] for _ in range(len(q))]
        # k employees are guaranteed among the top k * (most vectors any employee has) neighbours.
        scores, ids = self._raw_search(q, int(min(self.n_vectors, k * self._roster.max_per_employee)))
        return [self._roster.best_per_employee(d, i, k) for d, i in zip(kinds.ip_to_distance(scores), ids)]

    def identify(self, query: np.ndarray, tau: float | None = None) -> tuple[str | None, float, str | None]:
        """Who is this? (employee_id, distance, name) of the nearest employee if within ``tau``, else
        (None, distance to the nearest, None); ``tau`` defaults to the manifest's."""
        threshold = checks.threshold(tau, self.manifest.tau)
        best = self.search(checks.check_one_query(query, self.dim), k=1)[0]
        employee_id, name, d = best[0] if best else (None, None, math.inf)
        return (employee_id, d, name) if d <= threshold else (None, d, None)

    def verify(self, employee_id: str, query: np.ndarray, tau: float | None = None) -> tuple[bool, float]:
        """Is this the claimed employee? (accepted, distance to their best-matching enrolled vector);
        exact, brute force over the employee's own vectors, whatever the index kind."""
        threshold = checks.threshold(tau, self.manifest.tau)
        q = checks.check_one_query(query, self.dim)
        d = float(kinds.ip_to_distance(float(np.max(self._vectors[self._roster.rows_of(employee_id)] @ q[0]))))
        return d <= threshold, d

    def _raw_search(self, q: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        if self.device == "gpu" and self.manifest.index_kind_effective == "flat":
            self._gpu_index = self._gpu_index or kinds.GpuFlatMirror(self._vectors, self._roster.ids)
            return self._gpu_index.search(q, kk)
        return self._index.search(q, kk)
