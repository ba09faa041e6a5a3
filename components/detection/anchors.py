"""Anchor boxes from k-means on the training boxes' widths and heights, with distance 1 - IoU.

Why IoU and not Euclidean distance (YOLOv2): with Euclidean distance large boxes dominate the error,
while what matters for matching is the overlap, which is scale-free. Boxes are compared as if they
shared a centre, so only their shapes count.
"""

from __future__ import annotations

import numpy as np

__all__ = ["shape_iou", "kmeans_anchors", "mean_best_iou"]


def shape_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """N x K IoU of (w, h) shapes against (w, h) anchors, both centred at the same point."""
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(wh[:, None, 1], anchors[None, :, 1])
    union = (wh[:, 0] * wh[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None, :] - inter
    return inter / union


def kmeans_anchors(wh: np.ndarray, k: int, seed: int = 0, iterations: int = 300) -> np.ndarray:
    """``k`` anchors (w, h), smallest area first, clustering ``wh`` with distance 1 - IoU.

    Initialised k-means++ style on that distance (seeded), then Lloyd iterations with the mean of each
    cluster until the assignment stops changing. An empty cluster is re-seeded on the worst-fit box.
    """
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    wh = wh[(wh[:, 0] > 0) & (wh[:, 1] > 0)]
    if len(wh) < k:
        raise ValueError(f"k-means needs at least k={k} boxes with positive size, got {len(wh)}")
    rng = np.random.default_rng(seed)
    seeds = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):
        d = 1.0 - shape_iou(wh, np.asarray(seeds)).max(axis=1)
        p = d / d.sum() if d.sum() > 0 else None
        seeds.append(wh[rng.choice(len(wh), p=p)])
    centres = np.asarray(seeds)
    assign = np.full(len(wh), -1)
    for _ in range(iterations):
        ious = shape_iou(wh, centres)
        new = ious.argmax(axis=1)
        for j in range(k):
            if not np.any(new == j):  # re-seed an empty cluster on the box that fits worst
                worst = int(ious.max(axis=1).argmin())
                new[worst] = j
                ious[worst] = 0
        if np.array_equal(new, assign):
            break
        assign = new
        centres = np.stack([wh[assign == j].mean(axis=0) for j in range(k)])
    return centres[np.argsort(centres[:, 0] * centres[:, 1], kind="stable")]


def mean_best_iou(wh: np.ndarray, anchors: np.ndarray) -> float:
    """Average over boxes of the IoU with their best anchor (YOLOv2's "Avg IOU" of a set of priors)."""
    return float(shape_iou(wh, anchors).max(axis=1).mean())
