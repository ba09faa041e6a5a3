"""The FAISS gallery of enrolled employees, in memory (index) and on disk (store).

    index.py        Gallery: add, replace, remove, search, identify, verify
    index_kinds.py  flat / ivf / hnsw: the policy and builders, shared with the scaling benchmark
    store.py        the versioned directory: CURRENT pointer, atomic save, pruning, strict load
    manifest.py     GalleryManifest (manifest.json)
    sidecar.py      the vector id -> employee table
    checks.py       argument checks (InvalidGalleryInput)

Everything callers use is importable from ``facegate.components.gallery``.
"""

from facegate.components.core.errors import (
    GalleryCorrupt,
    GalleryError,
    GalleryLocked,
    GalleryModelMismatch,
    GalleryNotFound,
    InvalidGalleryInput,
    UnknownEmployee,
)
from facegate.components.core.locks import LOCK_FILE
from facegate.components.gallery.checks import NORM_TOLERANCE
from facegate.components.gallery.index import Gallery
from facegate.components.gallery.index_kinds import (
    FAISS_DEVICES,
    INDEX_KINDS,
    IVF_MIN_POINTS_PER_CENTROID,
    resolve_faiss_device,
)
from facegate.components.gallery.manifest import FORMAT_VERSION, MANIFEST_FILE, GalleryManifest
from facegate.components.gallery.sidecar import SIDECAR_COLUMNS, Match
from facegate.components.gallery.store import (
    CURRENT_FILE,
    DEFAULT_KEEP_VERSIONS,
    GALLERY_FILES,
    INDEX_FILE,
    SIDECAR_FILE,
    VECTORS_FILE,
    current_version,
    gallery_lock,
    list_versions,
    purge_old_versions,
)

__all__ = [
    "CURRENT_FILE",
    "DEFAULT_KEEP_VERSIONS",
    "FAISS_DEVICES",
    "FORMAT_VERSION",
    "GALLERY_FILES",
    "INDEX_FILE",
    "INDEX_KINDS",
    "IVF_MIN_POINTS_PER_CENTROID",
    "LOCK_FILE",
    "MANIFEST_FILE",
    "NORM_TOLERANCE",
    "SIDECAR_COLUMNS",
    "SIDECAR_FILE",
    "VECTORS_FILE",
    "Gallery",
    "GalleryCorrupt",
    "GalleryError",
    "GalleryLocked",
    "GalleryManifest",
    "GalleryModelMismatch",
    "GalleryNotFound",
    "InvalidGalleryInput",
    "Match",
    "UnknownEmployee",
    "current_version",
    "gallery_lock",
    "list_versions",
    "purge_old_versions",
    "resolve_faiss_device",
]
