"""The gallery on disk: a directory of immutable versions plus a ``CURRENT`` pointer::

    gallery/CURRENT        "v000007"
    gallery/v000007/       index.faiss, vectors.npy, sidecar.parquet, manifest.json
    gallery/.lock          writers' flock

A save writes a hidden temp directory, fsyncs it, renames it to the next ``vNNNNNN`` and only then
swaps ``CURRENT`` with ``os.replace``; a writer killed at any instant leaves the previous version
current and complete. Readers never lock: they read whichever version ``CURRENT`` names, and a load
checks every file against the manifest (GalleryCorrupt names the bad file) rather than search a
gallery whose pieces disagree.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import faiss
import numpy as np
import pandas as pd

from facegate.components.core.errors import GalleryCorrupt, GalleryError, GalleryLocked, GalleryNotFound
from facegate.components.core.locks import file_lock
from facegate.components.gallery.checks import NORM_TOLERANCE, check_keep
from facegate.components.gallery.index_kinds import index_kind
from facegate.components.gallery.manifest import MANIFEST_FILE, GalleryManifest, utc_now
from facegate.components.gallery.sidecar import SIDECAR_COLUMNS

CURRENT_FILE = "CURRENT"
INDEX_FILE = "index.faiss"
VECTORS_FILE = "vectors.npy"
SIDECAR_FILE = "sidecar.parquet"
GALLERY_FILES = (MANIFEST_FILE, VECTORS_FILE, SIDECAR_FILE, INDEX_FILE)
DEFAULT_KEEP_VERSIONS = 3

_VERSION_RE = re.compile(r"^v(\d{6,})$")
_TMP_PREFIX = ".tmp-"


class GalleryParts(NamedTuple):
    """A gallery's three aligned pieces and its manifest, as saved and as loaded."""

    manifest: GalleryManifest
    vectors: np.ndarray
    sidecar: pd.DataFrame
    index: faiss.IndexIDMap2  # type: ignore[assignment]  # shadows tuple.index; callers read parts.index


@contextlib.contextmanager
def gallery_lock(directory: Path | str, timeout: float | None = None) -> Iterator[None]:
    """Exclusive cross-process writer lock (flock on ``directory/.lock``); readers never take it.

    Re-entrant within a thread, so ``save`` can lock while a caller already holds the lock for a
    load-modify-save cycle. The kernel drops it when the holder dies, so a killed writer never
    leaves the gallery locked. ``timeout`` (seconds) raises GalleryLocked instead of waiting forever.
    """
    with file_lock(directory, timeout, error=lambda d: GalleryLocked(f"{d}: another writer holds the gallery lock")):
        yield


# ------------------------------------------------------------------------------------------ save


def save(directory: Path | str, parts: GalleryParts, keep: int = DEFAULT_KEEP_VERSIONS) -> Path:
    """Write a new version atomically, make it current, keep the newest ``keep`` versions.

    Stamps ``parts.manifest.updated_at``. A failure or a kill at any point leaves the previous version
    current and complete.
    """
    check_keep(keep)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with gallery_lock(directory):
        name = _version_name(max(_version_numbers(directory), default=0) + 1)
        final = directory / name
        tmp = directory / f"{_TMP_PREFIX}{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        parts.manifest.updated_at = utc_now()
        try:
            tmp.mkdir()
            _write_files(tmp, parts)
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
            raise GalleryError(
                f"{directory}: could not save the gallery ({exc}); the previous version is still current"
            ) from exc
        _prune(directory, keep)
    return final


def _write_files(target: Path, parts: GalleryParts) -> None:
    faiss.write_index(parts.index, str(target / INDEX_FILE))
    _fsync_path(target / INDEX_FILE)
    with open(target / VECTORS_FILE, "wb") as f:
        np.save(f, parts.vectors, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    with open(target / SIDECAR_FILE, "wb") as f:
        parts.sidecar.to_parquet(f, index=False)
        f.flush()
        os.fsync(f.fileno())
    with open(target / MANIFEST_FILE, "w", encoding="utf-8") as f:
        f.write(parts.manifest.to_json())
        f.flush()
        os.fsync(f.fileno())


# ------------------------------------------------------------------------------------------ load


def load(directory: Path | str, version: str | None = None) -> GalleryParts:
    """Read and validate the current version (or a named one); GalleryCorrupt names any bad file."""
    directory = Path(directory)
    if version is not None:
        if not _VERSION_RE.match(version) or not (directory / version).is_dir():
            raise GalleryNotFound(f"{directory / version}: no such gallery version")
        return load_version(directory / version)
    for attempt in range(3):
        name = _read_pointer(directory)
        try:
            return load_version(directory / name)
        except GalleryCorrupt:
            # A writer may have swapped and pruned this version while we read it: retry then.
            if attempt < 2 and _read_pointer_or_none(directory) != name:
                continue
            raise
    raise AssertionError("unreachable")


def load_version(vdir: Path) -> GalleryParts:
    """One version directory, every file checked against the manifest and the others."""
    for fname in GALLERY_FILES:
        if not (vdir / fname).is_file():
            raise GalleryCorrupt(vdir / fname, "missing")
    try:
        text = (vdir / MANIFEST_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GalleryCorrupt(vdir / MANIFEST_FILE, f"unreadable ({exc})") from exc
    m = GalleryManifest.from_json(text, vdir / MANIFEST_FILE)
    vectors = _load_vectors(vdir / VECTORS_FILE, m)
    sidecar = _load_sidecar(vdir / SIDECAR_FILE, m)
    index = _load_index(vdir / INDEX_FILE, m, sidecar["vector_id"].to_numpy(dtype=np.int64))
    return GalleryParts(m, vectors, sidecar, index)


def _load_vectors(vpath: Path, m: GalleryManifest) -> np.ndarray:
    try:
        vectors = np.load(vpath, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise GalleryCorrupt(vpath, f"unreadable ({exc})") from exc
    if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[1] != m.dim:
        raise GalleryCorrupt(vpath, f"expected float32 (n x {m.dim}), got {vectors.dtype} {vectors.shape}")
    if len(vectors) != m.n_vectors:
        raise GalleryCorrupt(vpath, f"{len(vectors)} vectors, manifest says {m.n_vectors}")
    if len(vectors) and (
        not np.isfinite(vectors).all() or np.abs(np.linalg.norm(vectors, axis=1) - 1.0).max() > NORM_TOLERANCE
    ):
        raise GalleryCorrupt(vpath, "holds non-finite or non-normalised vectors")
    return np.ascontiguousarray(vectors)


def _load_sidecar(spath: Path, m: GalleryManifest) -> pd.DataFrame:
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
    return sidecar


def _load_index(ipath: Path, m: GalleryManifest, ids: np.ndarray) -> faiss.IndexIDMap2:
    try:
        index = faiss.read_index(str(ipath))
    except RuntimeError as exc:
        raise GalleryCorrupt(ipath, f"unreadable ({str(exc).strip().splitlines()[-1]})") from exc
    if not isinstance(index, faiss.IndexIDMap2):
        raise GalleryCorrupt(ipath, f"expected an IndexIDMap2, got {type(index).__name__}")
    kind = index_kind(index)
    if kind != m.index_kind_effective or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise GalleryCorrupt(
            ipath,
            f"holds a {kind} index (metric {index.metric_type}), manifest says "
            f"{m.index_kind_effective} with inner product",
        )
    if index.d != m.dim or index.ntotal != m.n_vectors:
        raise GalleryCorrupt(
            ipath, f"d={index.d}, ntotal={index.ntotal}; manifest says dim={m.dim}, n_vectors={m.n_vectors}"
        )
    if not np.array_equal(np.sort(faiss.vector_to_array(index.id_map)), ids):
        raise GalleryCorrupt(ipath, "its vector ids differ from sidecar.parquet's")
    return index


# -------------------------------------------------------------------------------------- versions


def _version_name(number: int) -> str:
    return f"v{number:06d}"


def _version_numbers(directory: Path) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(int(m.group(1)) for p in directory.iterdir() if p.is_dir() and (m := _VERSION_RE.match(p.name)))


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
    kept = {current_n, *older[max(0, len(older) - (keep - 1)) :]} if keep > 1 else {current_n}
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
