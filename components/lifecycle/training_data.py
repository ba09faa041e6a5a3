"""One identity dataset's aligned chips and its train / held-out split: what every training stage reads,
with, when the deployment has confirmed captures, their chips and split beside it.

Chips come from the content-addressed chip cache, so a second run (or the next retraining chain)
detects and aligns nothing again. Captures are chips already (aligned at the entrance): they are read
as they are, never detected again. Everything computed from captures (features of their chips and of
their augmented copies) is cached in a folder of its own, ``deploy_cache_dir``, which an employee's
erasure empties: a removed employee's face must not survive in a cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegate.components.core.datasets import read_manifest
from facegate.components.core.paths import data_dir, state_dir
from facegate.components.core.settings import Settings
from facegate.components.embedding.backbones import chip_geometry
from facegate.components.faces.align import PAIRED_GEOMETRY, split_paired
from facegate.components.faces.chip_png import decode_chip
from facegate.components.faces.chips import ChipSet, cached_chips

Log = Callable[[str], None]
DEPLOY_CACHE = "captures"  # under the chip cache: whatever is computed from captures


def deploy_cache_dir() -> Path:
    """Where features of captures (and of their augmented copies) are cached: emptied by an erasure."""
    return state_dir() / "cache" / DEPLOY_CACHE


def _inverse(ids: np.ndarray) -> np.ndarray:
    return np.unique(ids, return_inverse=True)[1].astype(np.int64) if len(ids) else np.zeros(0, np.int64)


@dataclass
class DeployData:
    """The deployment's confirmed captures (an ingested ``captures`` dataset) in the backbone's geometry."""

    dataset: str
    chips: np.ndarray  # N x S x S x C uint8, as aligned at the entrance
    key: str  # content key of the chips (feature caches)
    identities: np.ndarray  # employee id per chip
    train_rows: np.ndarray
    val_rows: np.ndarray
    skipped: int = 0  # captures aligned in a geometry the backbone cannot read

    @property
    def labels(self) -> np.ndarray:
        return _inverse(self.identities[self.train_rows])

    @property
    def val_labels(self) -> np.ndarray:
        return _inverse(self.identities[self.val_rows])

    def evaluable(self) -> bool:
        """Held-out captures make genuine and impostor pairs: two employees, one with two captures."""
        counts = np.unique(self.identities[self.val_rows], return_counts=True)[1]
        return len(counts) >= 2 and bool((counts >= 2).any())

    def summary(self) -> dict[str, float]:
        """Counts only (captures are biometric data: no image and no employee id goes to MLflow)."""
        return {
            "deploy_train_captures": float(len(self.train_rows)),
            "deploy_train_employees": float(len(np.unique(self.identities[self.train_rows]))),
            "deploy_heldout_captures": float(len(self.val_rows)),
            "deploy_heldout_employees": float(len(np.unique(self.identities[self.val_rows]))),
            "deploy_skipped_captures": float(self.skipped),
        }


@dataclass
class TrainingData:
    """One identity dataset's chips with its train / held-out split (what every stage reads), and the
    deployment's captures (``deploy``): their training split trains beside it, their held-out employees
    give ``val_deploy_*``."""

    dataset: str
    chips: ChipSet
    train_rows: np.ndarray
    val_rows: np.ndarray
    labels: np.ndarray  # train identities as 0..n-1
    val_labels: np.ndarray  # held-out identities as 0..m-1
    deploy: DeployData | None = None

    @property
    def deploy_trains(self) -> bool:
        return self.deploy is not None and len(self.deploy.train_rows) > 0

    @property
    def train_key(self) -> str:
        """Cache key of the training subset's chips (features of augmented copies are cached by it)."""
        h = hashlib.sha256(self.chips.key.encode() + self.train_rows.tobytes())
        if self.deploy is not None and self.deploy_trains:
            h.update(self.deploy.key.encode() + self.deploy.train_rows.tobytes())
        return h.hexdigest()[:16]

    @property
    def cache_dir(self) -> Path:
        """Where what is computed from the training chips is cached (captures': ``deploy_cache_dir``)."""
        return deploy_cache_dir() if self.deploy_trains else state_dir() / "cache"

    def all_train_chips(self) -> np.ndarray:
        """The training chips in memory: the dataset's, then the captures'."""
        n = len(self.train_rows)
        extra = self.deploy.chips[self.deploy.train_rows] if self.deploy is not None and self.deploy_trains else None
        if extra is None:
            return np.asarray(self.chips.chips[self.train_rows])
        out = np.empty((n + len(extra), *self.chips.chips.shape[1:]), np.uint8)
        np.take(self.chips.chips, self.train_rows, axis=0, out=out[:n])
        out[n:] = extra
        return out

    def all_train_labels(self) -> np.ndarray:
        """Training identities as 0..k-1: the dataset's, then the captures' employees after them."""
        if self.deploy is None or not self.deploy_trains:
            return self.labels
        offset = int(self.labels.max()) + 1 if len(self.labels) else 0
        return np.concatenate([self.labels, self.deploy.labels + offset])

    def all_train_features(self, feats: np.ndarray, deploy_feats: np.ndarray | None) -> np.ndarray:
        """Training rows of the dataset's features (every chip), then of the captures' (every capture)."""
        if deploy_feats is None or self.deploy is None or not self.deploy_trains:
            return feats[self.train_rows]
        return np.concatenate([feats[self.train_rows], deploy_feats[self.deploy.train_rows]])


def read_training_data(
    dataset: str,
    settings: Settings,
    log: Log = lambda message: None,
    backbone: str | None = None,
    deploy: str | None = None,
) -> TrainingData:
    """Detected and aligned chips of every manifest image (cached by content) in the geometry of
    ``backbone`` (default: params'), and the split; with ``deploy``, that ingested captures dataset."""
    manifest = read_manifest(data_dir(), dataset)
    chips = cached_chips(
        state_dir() / "cache",
        [data_dir() / p for p in manifest["path"]],
        manifest["sha256"].tolist(),
        detector=settings.faces.detector,
        upsample=settings.faces.upsample,
        geometry=chip_geometry(backbone or settings.embedding.backbone),
        progress=lambda i, n: log(f"chips {i}/{n}") if i == n or i % 1000 < 8 else None,
    )
    log(f"{len(chips)} chips ({int(chips.table['fallback'].sum())} without a detected face)")
    split = manifest["split"].to_numpy()
    ids = manifest["identity"].to_numpy()
    train_rows, val_rows = np.flatnonzero(split == "train"), np.flatnonzero(split != "train")
    _, labels = np.unique(ids[train_rows], return_inverse=True)
    _, val_labels = np.unique(ids[val_rows], return_inverse=True)
    captures = read_deploy_data(deploy, backbone or settings.embedding.backbone, log) if deploy else None
    return TrainingData(dataset, chips, train_rows, val_rows, labels, val_labels, captures)


def convert_chip(chip: np.ndarray, have: str, want: str) -> np.ndarray | None:
    """A capture's chip in the geometry ``want``: as it is, or one half of a fused model's paired chip;
    None when it cannot be had (a single geometry never becomes another)."""
    if have == want:
        return chip
    if have == PAIRED_GEOMETRY and want in ("dlib_150", "arcface_112"):
        dlib, arcface = split_paired(chip[None])
        return np.ascontiguousarray((dlib if want == "dlib_150" else arcface)[0])
    return None


def read_deploy_data(dataset: str, backbone: str, log: Log = lambda message: None) -> DeployData | None:
    """The ingested captures' chips in ``backbone``'s geometry and their split; None when there is none."""
    manifest = read_manifest(data_dir(), dataset)
    want = chip_geometry(backbone)
    chips, keep = [], []
    for i, (path, have) in enumerate(zip(manifest["path"], manifest["chip_geometry"])):
        chip = convert_chip(decode_chip((data_dir() / path).read_bytes()), str(have), want)
        if chip is not None:
            chips.append(chip)
            keep.append(i)
    skipped = len(manifest) - len(keep)
    if skipped:
        log(f"{dataset}: {skipped} captures aligned for another geometry than {want}: left out")
    if not keep:
        return None
    m = manifest.iloc[keep]
    key = hashlib.sha256(("|".join(m["sha256"]) + f"|{want}").encode()).hexdigest()[:20]
    split = m["split"].to_numpy()
    data = DeployData(
        dataset,
        np.stack(chips),
        f"captures-{key}",
        m["identity"].astype(str).to_numpy(),
        np.flatnonzero(split == "train"),
        np.flatnonzero(split != "train"),
        skipped,
    )
    log(f"{dataset}: {data.summary()}")
    deploy_cache_dir().mkdir(parents=True, exist_ok=True)  # the feature caches write into it
    return data
