"""Grid targets: each true box becomes one (p_c, b_x, b_y, b_h, b_w, c_1..c_C) vector.

The box goes to the cell that holds its centre and to the anchor whose shape overlaps it best (IoU of
centred boxes), searched over every anchor of every scale, so the scale follows from the anchor: small
faces land on the stride-8 grid, larger ones on the stride-16 grid. ``b_x, b_y`` are the centre's
offset inside the cell (0..1), ``b_h, b_w`` the box's height and width relative to the anchor's.
When two boxes want the same cell and anchor (crowds), the later one takes its next-best free anchor;
a box that finds no free anchor is dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facegate.components.detection.anchors import shape_iou

__all__ = ["GridLayout", "Targets", "encode_targets", "N_BOX_FIELDS"]

N_BOX_FIELDS = 5  # p_c, b_x, b_y, b_h, b_w; class scores follow


@dataclass(frozen=True)
class GridLayout:
    """Input size, one stride per scale, B anchors (w, h) in input pixels per scale, C classes."""

    input_size: tuple[int, int]  # (height, width)
    strides: tuple[int, ...]
    anchors: tuple[tuple[tuple[float, float], ...], ...]  # [scale][anchor] -> (w, h)
    num_classes: int

    def __post_init__(self) -> None:
        if len(self.anchors) != len(self.strides):
            raise ValueError(f"{len(self.strides)} strides but anchors for {len(self.anchors)} scales")
        if len({len(a) for a in self.anchors}) != 1:
            raise ValueError("every scale needs the same number of anchors")
        for s in self.strides:
            if self.input_size[0] % s or self.input_size[1] % s:
                raise ValueError(f"input size {self.input_size} is not a multiple of stride {s}")

    @property
    def anchors_per_scale(self) -> int:
        return len(self.anchors[0])

    @property
    def channels(self) -> int:
        return N_BOX_FIELDS + self.num_classes

    def grid_shape(self, scale: int) -> tuple[int, int]:
        s = self.strides[scale]
        return self.input_size[0] // s, self.input_size[1] // s

    def anchor_array(self) -> np.ndarray:
        """n_scales x B x 2 (w, h)."""
        return np.asarray(self.anchors, dtype=np.float64)

    @staticmethod
    def split_anchors(anchors: np.ndarray, strides: tuple[int, ...]) -> tuple[tuple[tuple[float, float], ...], ...]:
        """Anchors sorted by area, split evenly over the scales: the smallest go to the finest grid."""
        a = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
        if len(a) % len(strides):
            raise ValueError(f"{len(a)} anchors cannot be split evenly over {len(strides)} scales")
        a = a[np.argsort(a[:, 0] * a[:, 1], kind="stable")]
        per = len(a) // len(strides)
        order = np.argsort(strides)
        out: list = [None] * len(strides)
        for rank, scale in enumerate(order):
            out[scale] = tuple((round(float(w), 3), round(float(h), 3)) for w, h in a[rank * per : (rank + 1) * per])
        return tuple(out)


@dataclass
class Targets:
    grids: list[np.ndarray]  # per scale: S_h x S_w x B x (5 + C), float32
    dropped: int  # boxes that found no free cell/anchor (or had no area)


def encode_targets(boxes: np.ndarray, labels: np.ndarray, layout: GridLayout) -> Targets:
    """Targets for one image; ``boxes`` xyxy in input pixels, ``labels`` class indices."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    grids = [
        np.zeros((*layout.grid_shape(s), layout.anchors_per_scale, layout.channels), np.float32)
        for s in range(len(layout.strides))
    ]
    anchors = layout.anchor_array().reshape(-1, 2)
    B = layout.anchors_per_scale
    dropped = 0
    wh = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
    for i in range(len(boxes)):
        w, h = wh[i]
        if w <= 0 or h <= 0:
            dropped += 1
            continue
        cx, cy = (boxes[i, 0] + boxes[i, 2]) / 2.0, (boxes[i, 1] + boxes[i, 3]) / 2.0
        placed = False
        for k in np.argsort(-shape_iou(wh[i][None], anchors)[0], kind="stable"):
            scale, a = divmod(int(k), B)
            stride = layout.strides[scale]
            gh, gw = layout.grid_shape(scale)
            col = min(max(int(np.floor(cx / stride)), 0), gw - 1)
            row = min(max(int(np.floor(cy / stride)), 0), gh - 1)
            cell = grids[scale][row, col, a]
            if cell[0] > 0:
                continue  # taken by an earlier box: try the next-best anchor
            aw, ah = anchors[k]
            cell[0] = 1.0
            cell[1] = cx / stride - col
            cell[2] = cy / stride - row
            cell[3] = h / ah
            cell[4] = w / aw
            cell[N_BOX_FIELDS + labels[i]] = 1.0
            placed = True
            break
        dropped += not placed
    return Targets(grids, dropped)
