"""One identity dataset's aligned chips and its train / held-out split: what every training stage reads.

Chips come from the content-addressed chip cache, so a second run (or the next retraining chain)
detects and aligns nothing again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from facegate.components.core.datasets import read_manifest
from facegate.components.core.paths import data_dir, state_dir
from facegate.components.core.settings import Settings
from facegate.components.embedding.backbones import chip_geometry
from facegate.components.faces.chips import ChipSet, cached_chips

Log = Callable[[str], None]


@dataclass
class TrainingData:
    """One identity dataset's chips with its train / held-out split (what every stage reads)."""

    dataset: str
    chips: ChipSet
    train_rows: np.ndarray
    val_rows: np.ndarray
    labels: np.ndarray  # train identities as 0..n-1
    val_labels: np.ndarray  # held-out identities as 0..m-1

    @property
    def train_key(self) -> str:
        """Cache key of the training subset's chips (features of augmented copies are cached by it)."""
        return hashlib.sha256(self.chips.key.encode() + self.train_rows.tobytes()).hexdigest()[:16]


def read_training_data(
    dataset: str, settings: Settings, log: Log = lambda message: None, backbone: str | None = None
) -> TrainingData:
    """Detected and aligned chips of every manifest image (cached by content) in the geometry of
    ``backbone`` (default: params'), and the split."""
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
    return TrainingData(dataset, chips, train_rows, val_rows, labels, val_labels)
