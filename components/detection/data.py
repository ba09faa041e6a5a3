"""Detection samples from an ingested VOC manifest: pixels through the one image loader, boxes, labels."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from facegate.components.core.errors import DatasetError
from facegate.components.core.images import load_image
from facegate.components.detection.metrics import Truth

__all__ = ["DetectionSample", "load_samples", "truths_of"]


@dataclass
class DetectionSample:
    path: str
    image: np.ndarray  # H x W x 3 uint8 RGB
    boxes: np.ndarray  # M x 4 xyxy pixels
    labels: np.ndarray  # M class indices

    @property
    def truth(self) -> Truth:
        return Truth(self.boxes, self.labels)


def parse_boxes(raw: str | None, class_names: tuple[str, ...], where: str) -> tuple[np.ndarray, np.ndarray]:
    items = json.loads(raw) if raw else []
    boxes, labels = [], []
    for b in items:
        if b["label"] not in class_names:
            raise DatasetError(f"{where}: unknown class {b['label']!r} (known: {list(class_names)})")
        boxes.append([b["xmin"], b["ymin"], b["xmax"], b["ymax"]])
        labels.append(class_names.index(b["label"]))
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(labels, dtype=np.int64)


def load_samples(
    manifest: pd.DataFrame,
    data_root: Path,
    class_names: tuple[str, ...],
    split: str | None = None,
    max_pixels: int = 50_000_000,
    limit: int | None = None,
) -> list[DetectionSample]:
    """Rows of ``split`` (all when None), in manifest order; every image read by ``load_image``."""
    rows = manifest if split is None else manifest[manifest["split"] == split]
    if limit is not None:
        rows = rows.iloc[:limit]
    out = []
    for path, raw in zip(rows["path"], rows["boxes"]):
        boxes, labels = parse_boxes(raw, class_names, str(data_root / path))
        out.append(DetectionSample(str(path), load_image(data_root / path, max_pixels), boxes, labels))
    return out


def truths_of(samples: list[DetectionSample]) -> list[Truth]:
    return [s.truth for s in samples]
