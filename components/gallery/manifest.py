"""A gallery version's ``manifest.json``: which model embedded it, how it is indexed, its threshold.

Parsing is strict (unknown or missing keys, wrong types and other format versions are refused) so a
damaged or foreign manifest is reported by name instead of loading a gallery that answers wrongly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from facegate.components.core.errors import GalleryCorrupt, GalleryModelMismatch
from facegate.components.gallery.checks import check_tau, opt_float
from facegate.components.gallery.index_kinds import (
    DEFAULT_HNSW_EF_SEARCH,
    DEFAULT_IVF_NLIST,
    DEFAULT_IVF_NPROBE,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    INDEX_KINDS,
)

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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
    created_at: str = field(default_factory=utc_now)
    n_vectors: int = 0
    n_employees: int = 0
    format_version: int = FORMAT_VERSION
    index_kind_effective: str = "flat"
    next_vector_id: int = 0
    ivf_nlist: int = DEFAULT_IVF_NLIST
    ivf_nprobe: int = DEFAULT_IVF_NPROBE
    hnsw_m: int = HNSW_M
    hnsw_ef_construction: int = HNSW_EF_CONSTRUCTION
    hnsw_ef_search: int = DEFAULT_HNSW_EF_SEARCH
    updated_at: str | None = None

    def set_threshold(
        self,
        tau: float,
        target_far: float | None = None,
        achieved_far: float | None = None,
        achieved_tar: float | None = None,
    ) -> None:
        """Record the calibrated acceptance threshold (and what it achieved)."""
        self.tau = check_tau(tau)
        self.target_far, self.achieved_far, self.achieved_tar = map(opt_float, (target_far, achieved_far, achieved_tar))

    def check_model(self, expected_embedder_name: str, expected_version: str | None = None) -> None:
        """Raise GalleryModelMismatch unless this model (and version) embedded the gallery."""
        if self.embedder_name != expected_embedder_name or (
            expected_version is not None and self.embedder_version != expected_version
        ):
            want = expected_embedder_name + (f" version {expected_version}" if expected_version else "")
            raise GalleryModelMismatch(
                f"gallery was built with {self.embedder_name} version {self.embedder_version}, but the "
                f"current model is {want}: re-enrol the employees with the current model"
            )

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
        for name in (
            "n_vectors",
            "n_employees",
            "next_vector_id",
            "ivf_nlist",
            "ivf_nprobe",
            "hnsw_m",
            "hnsw_ef_construction",
            "hnsw_ef_search",
        ):
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                return f"{name} must be a non-negative integer, got {getattr(self, name)!r}"
        for name in ("tau", "target_far", "achieved_far", "achieved_tar"):
            if not is_num(getattr(self, name)):
                return f"{name} must be a number or null, got {getattr(self, name)!r}"
        return None
