"""Which faiss index a gallery searches and how it is built: one policy for the gallery and for the
scaling benchmark (benchmarks/gallery_scaling.py), so the benchmark measures what is served.

Every kind uses the inner-product metric on unit vectors. ``flat`` is exact; ``hnsw`` and ``ivf`` are
approximate, for large galleries. HNSW cannot remove vectors and IVF under an id map keeps stale ids,
so removal rebuilds (HNSW) or refills (IVF) from the gallery's copy of the vectors.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import faiss
import numpy as np

from facegate.components.core.errors import DeviceUnavailable, GalleryError, SettingsError

if TYPE_CHECKING:
    from facegate.components.gallery.manifest import GalleryManifest

INDEX_KINDS = ("flat", "ivf", "hnsw")
FAISS_DEVICES = ("cpu", "gpu", "auto")
IVF_MIN_POINTS_PER_CENTROID = 39  # faiss k-means warns (and clusters badly) below this
IVF_TRAIN_POINTS_PER_LIST = 64  # the benchmark's k-means sample: at most this many vectors per list
DEFAULT_IVF_NLIST = 64
DEFAULT_IVF_NPROBE = 8
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
DEFAULT_HNSW_EF_SEARCH = 128


def ip_to_distance(ip: np.ndarray | float) -> np.ndarray:
    """Euclidean distance between unit vectors from their inner product (clipped: rounding)."""
    return np.sqrt(np.maximum(2.0 - 2.0 * np.asarray(ip, dtype=np.float64), 0.0))


# ---------------------------------------------------------------------------------- bare indexes


def flat_index(dim: int) -> faiss.IndexFlatIP:
    return faiss.IndexFlatIP(dim)


def hnsw_index(dim: int, m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION) -> faiss.IndexHNSWFlat:
    index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    return index


def ivf_index(dim: int, nlist: int) -> faiss.IndexIVFFlat:
    """An untrained IVF index; ``train_ivf`` it before adding."""
    return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)


def train_ivf(
    index: faiss.IndexIVF, vectors: np.ndarray, *, sample_per_list: int | None = None, seed: int | None = None
) -> None:
    """k-means on all ``vectors`` (faiss's defaults), or on a ``seed``-ed sample of at most
    ``sample_per_list * nlist`` of them: training on millions costs minutes and gains little."""
    if seed is not None:
        index.cp.seed = seed
    if sample_per_list is None:
        index.train(vectors)
        return
    n_train = min(len(vectors), sample_per_list * index.nlist)
    index.cp.max_points_per_centroid = max(1, -(-n_train // index.nlist))  # faiss would subsample otherwise
    sample = (
        vectors
        if n_train == len(vectors)
        else vectors[np.sort(np.random.default_rng(seed).choice(len(vectors), n_train, replace=False))]
    )
    index.train(sample)


def ivf_nlist(n: int) -> int:
    """Inverted lists for ``n`` vectors by the usual rule of thumb, 4 * sqrt(n) (the benchmark's
    choice per size; a gallery keeps the ``ivf_nlist`` it was created with)."""
    return max(1, int(round(4 * math.sqrt(n))))


def ivf_trainable(n: int, nlist: int) -> bool:
    """Enough vectors for k-means to place ``nlist`` centroids well."""
    return n >= IVF_MIN_POINTS_PER_CENTROID * nlist


def set_search_params(index: faiss.Index, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
    """Search-time knobs of an IVF (``nprobe``, at most nlist) or HNSW (``ef_search``) index, bare or
    under an id map; a no-op for other kinds."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    if isinstance(inner, faiss.IndexIVF) and nprobe is not None:
        inner.nprobe = min(nprobe, inner.nlist)
    elif isinstance(inner, faiss.IndexHNSW) and ef_search is not None:
        inner.hnsw.efSearch = ef_search


def index_kind(index: faiss.IndexIDMap) -> str | None:
    """The kind inside an id map (None: not one this module builds)."""
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexHNSWFlat):
        return "hnsw"
    if isinstance(inner, faiss.IndexIVFFlat):
        return "ivf"
    if isinstance(inner, faiss.IndexFlat):
        return "flat"
    return None


# ------------------------------------------------------------------------------ gallery indexes


def build_gallery_index(m: GalleryManifest, vectors: np.ndarray, ids: np.ndarray) -> tuple[faiss.IndexIDMap2, str]:
    """A fresh IndexIDMap2 holding ``vectors`` under ``ids``, and the kind actually built.

    IVF is trained on the current vectors once there are enough of them; until then the gallery
    searches exactly with a flat index.
    """
    if m.index_kind == "hnsw":
        inner: faiss.Index = hnsw_index(m.dim, m.hnsw_m, m.hnsw_ef_construction)
        effective = "hnsw"
    elif m.index_kind == "ivf" and ivf_trainable(len(vectors), m.ivf_nlist):
        inner = ivf_index(m.dim, m.ivf_nlist)
        train_ivf(inner, vectors)
        effective = "ivf"
    else:
        inner = flat_index(m.dim)
        effective = "flat"
    index = faiss.IndexIDMap2(inner)
    if len(vectors):
        index.add_with_ids(vectors, ids)
    apply_search_params(index, m)
    return index, effective


def apply_search_params(index: faiss.Index, m: GalleryManifest) -> None:
    set_search_params(index, nprobe=min(m.ivf_nprobe, m.ivf_nlist), ef_search=m.hnsw_ef_search)


def add_to_index(
    index: faiss.IndexIDMap2, m: GalleryManifest, vectors: np.ndarray, ids: np.ndarray, n_new: int
) -> faiss.IndexIDMap2:
    """The index with the last ``n_new`` of ``vectors`` (all the gallery's, new ones last) added.

    An IVF gallery still searching flat is trained here, on everything, once it has enough vectors;
    sets ``m.index_kind_effective`` then.
    """
    if m.index_kind == "ivf" and m.index_kind_effective == "flat" and ivf_trainable(len(vectors), m.ivf_nlist):
        index, m.index_kind_effective = build_gallery_index(m, vectors, ids)  # first training
        return index
    index.add_with_ids(vectors[len(vectors) - n_new :], ids[len(ids) - n_new :])
    return index


def rebuild(
    index: faiss.IndexIDMap2, m: GalleryManifest, vectors: np.ndarray, ids: np.ndarray, retrain: bool = False
) -> faiss.IndexIDMap2:
    """The index rebuilt from ``vectors``; a trained IVF index keeps its centroids unless ``retrain``.

    Sets ``m.index_kind_effective`` (a rebuilt IVF gallery may fall back to flat, or train).
    """
    if m.index_kind_effective == "ivf" and not retrain:
        refill(index, vectors, ids)
        return index
    index, m.index_kind_effective = build_gallery_index(m, vectors, ids)
    return index


def remove_from_index(
    index: faiss.IndexIDMap2,
    m: GalleryManifest,
    removed_ids: np.ndarray,
    kept_vectors: np.ndarray,
    kept_ids: np.ndarray,
    owner: str,
) -> faiss.IndexIDMap2:
    """The index without ``removed_ids``: removed in place (flat), refilled keeping the trained
    centroids (IVF keeps stale internal ids otherwise) or rebuilt (HNSW cannot remove at all)."""
    kind = m.index_kind_effective
    if kind == "flat":
        # faiss's stubs take an IDSelector; its Python wrapper takes an id array too
        n = index.remove_ids(np.ascontiguousarray(removed_ids, dtype=np.int64))  # type: ignore[arg-type]
        if n != len(removed_ids):
            raise GalleryError(f"index removed {n} of {len(removed_ids)} vectors of {owner!r}")
        return index
    if kind == "ivf":
        refill(index, kept_vectors, kept_ids)
        return index
    return build_gallery_index(m, kept_vectors, kept_ids)[0]


def refill(index: faiss.IndexIDMap2, vectors: np.ndarray, ids: np.ndarray) -> None:
    """Empty the index and add ``vectors`` again (an IVF index keeps its centroids)."""
    index.reset()
    if len(vectors):
        index.add_with_ids(vectors, ids)


# ---------------------------------------------------------------------------------------- device


def gpu_available() -> bool:
    """faiss built with GPU support (faiss-gpu, not faiss-cpu) and at least one GPU visible."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def resolve_faiss_device(setting: str) -> str:
    """``gallery.device`` (cpu | gpu | auto) as the device searches run on: 'cpu' or 'gpu'.

    auto takes a GPU when there is one; an explicit gpu without one is a configuration error
    (``DeviceUnavailable``, as for ``embedding.device``), not a silent CPU fallback, so a deployment
    that expects GPU speed learns at start that it has none.
    """
    if setting not in FAISS_DEVICES:
        raise SettingsError(f"gallery.device: {setting!r} is not one of {' | '.join(FAISS_DEVICES)}")
    if setting == "cpu":
        return "cpu"
    if gpu_available():
        return "gpu"
    if setting == "gpu":
        raise DeviceUnavailable(
            "gallery.device: gpu, but faiss has no GPU support (faiss-cpu) or sees no GPU; set cpu or auto"
        )
    return "cpu"


class GpuFlatMirror:
    """Exact search over a copy of ``vectors`` on every visible GPU, answering with the gallery's
    ``ids``: the copy holds row positions, mapped back here. Rebuilt by the gallery after any change."""

    def __init__(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        cpu = flat_index(vectors.shape[1])
        cpu.add(vectors)
        self._index = faiss.index_cpu_to_all_gpus(cpu)
        self._ids = ids

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, pos = self._index.search(q, k)
        return scores, np.where(pos >= 0, self._ids[np.clip(pos, 0, None)], -1)
