"""Detection quality: VOC all-point AP@0.5 and COCO-style AP@[.5:.95], and pycocotools on the same input.

- VOC (2010+ devkit): detections of a class, best score first, each matched to the true box of highest
  IoU; IoU >= 0.5 with a box not yet taken is a true positive, otherwise a false positive (also a
  second detection of a taken box). AP is the area under the precision envelope at every recall step
  ("all-point" interpolation).
- COCO: for each IoU threshold 0.50, 0.55, .., 0.95 a detection takes the best still-free true box with
  IoU >= threshold; at most ``max_dets`` detections per image and class; precision is read at 101
  recall points; AP averages over thresholds and classes. This module re-implements pycocotools'
  ``COCOeval`` (area range "all") step by step, so the two agree to rounding: ``pycocotools_map``
  runs the real library on the same detections to prove it.

IoU uses continuous coordinates (w = x2 - x1), like COCO; the old VOC devkit's "+1" is not used.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np

from facegate.components.detection.decode import Detections
from facegate.components.faces.boxes import iou_matrix, xyxy_to_xywh

__all__ = [
    "Truth",
    "voc_ap",
    "voc_pr",
    "voc_map",
    "coco_map",
    "pycocotools_map",
    "evaluate",
    "COCO_IOU_THRESHOLDS",
    "COCO_RECALL_POINTS",
]

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
COCO_RECALL_POINTS = np.linspace(0.0, 1.0, int(np.round((1.0 - 0.0) / 0.01)) + 1)


@dataclass
class Truth:
    boxes: np.ndarray  # M x 4 xyxy
    labels: np.ndarray  # M


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP: area under the monotone precision envelope."""
    mrec = np.concatenate([[0.0], np.asarray(recall, dtype=np.float64), [1.0]])
    mpre = np.concatenate([[0.0], np.asarray(precision, dtype=np.float64), [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def voc_pr(
    dets: list[Detections], truths: list[Truth], cls: int, iou_threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(recall, precision, scores) over the class's detections sorted by score, and its true-box count."""
    gts = [t.boxes[t.labels == cls] for t in truths]
    taken = [np.zeros(len(g), bool) for g in gts]
    n_gt = int(sum(len(g) for g in gts))
    img_list: list[int] = []
    box_parts, score_parts = [], []
    for i, d in enumerate(dets):
        m = d.labels == cls
        img_list += [i] * int(m.sum())
        box_parts.append(d.boxes[m])
        score_parts.append(d.scores[m])
    if not img_list:
        return np.zeros(0), np.zeros(0), np.zeros(0), n_gt
    boxes, scores, img_idx = np.concatenate(box_parts), np.concatenate(score_parts), np.asarray(img_list)
    order = np.argsort(-scores, kind="stable")
    tp = np.zeros(len(order))
    for rank, j in enumerate(order):
        g = gts[img_idx[j]]
        if not len(g):
            continue
        ious = iou_matrix(boxes[j][None], g)[0]
        best = int(ious.argmax())
        if ious[best] >= iou_threshold and not taken[img_idx[j]][best]:
            tp[rank] = 1
            taken[img_idx[j]][best] = True
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    recall = ctp / max(n_gt, 1)
    precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    return recall, precision, scores[order], n_gt


def voc_map(
    dets: list[Detections], truths: list[Truth], num_classes: int, iou_threshold: float = 0.5
) -> tuple[float, np.ndarray]:
    """(mean AP over classes that have true boxes, AP per class; NaN for a class with none)."""
    aps = np.full(num_classes, np.nan)
    for c in range(num_classes):
        recall, precision, _, n_gt = voc_pr(dets, truths, c, iou_threshold)
        if n_gt:
            aps[c] = voc_ap(recall, precision) if len(recall) else 0.0
    return (float(np.nanmean(aps)) if np.any(~np.isnan(aps)) else float("nan")), aps


def _coco_match(det_boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """T x D: 1 where detection d (score order) is a true positive at IoU threshold t (COCOeval)."""
    matched = np.zeros((len(COCO_IOU_THRESHOLDS), len(det_boxes)))
    if not len(det_boxes) or not len(gt_boxes):
        return matched
    ious = iou_matrix(det_boxes, gt_boxes)
    for t, thr in enumerate(COCO_IOU_THRESHOLDS):
        free = np.ones(len(gt_boxes), bool)
        floor = min(thr, 1 - 1e-10)
        for d in range(len(det_boxes)):
            # COCOeval walks the true boxes in order and keeps the last free one with the highest IoU
            cand = np.flatnonzero(free & (ious[d] >= floor))
            if cand.size:
                vals = ious[d, cand]
                m = cand[len(vals) - 1 - int(np.argmax(vals[::-1]))]
                free[m] = False
                matched[t, d] = 1
    return matched


def coco_map(dets: list[Detections], truths: list[Truth], num_classes: int, max_dets: int = 100) -> dict:
    """COCO AP@[.5:.95], AP@.5, AP@.75 and per-class AP@[.5:.95], as pycocotools computes them."""
    T, R = len(COCO_IOU_THRESHOLDS), len(COCO_RECALL_POINTS)
    precision = -np.ones((T, R, num_classes))
    for c in range(num_classes):
        score_parts, tp_parts = [], []
        n_gt = 0
        for d, t in zip(dets, truths):
            g = t.boxes[t.labels == c]
            n_gt += len(g)
            m = d.labels == c
            order = np.argsort(-d.scores[m], kind="mergesort")[:max_dets]
            score_parts.append(d.scores[m][order])
            tp_parts.append(_coco_match(d.boxes[m][order], g))
        if n_gt == 0:
            continue
        scores = np.concatenate(score_parts)
        tps = np.concatenate(tp_parts, axis=1) if tp_parts else np.zeros((T, 0))
        order = np.argsort(-scores, kind="mergesort")
        tp = np.cumsum(tps[:, order], axis=1)
        fp = np.cumsum(1 - tps[:, order], axis=1)
        for ti in range(T):
            rc = tp[ti] / n_gt
            pr = (tp[ti] / (fp[ti] + tp[ti] + np.spacing(1))).tolist()
            for i in range(len(pr) - 1, 0, -1):
                if pr[i] > pr[i - 1]:
                    pr[i - 1] = pr[i]
            q = np.zeros(R)
            inds = np.searchsorted(rc, COCO_RECALL_POINTS, side="left")
            for ri, pi in enumerate(inds):
                if pi < len(pr):
                    q[ri] = pr[pi]
            precision[ti, :, c] = q

    def mean(p: np.ndarray) -> float:
        p = p[p > -1]
        return float(p.mean()) if p.size else -1.0

    per_class = [mean(precision[:, :, c]) for c in range(num_classes)]
    return {
        "map50_95": mean(precision),
        "map50": mean(precision[0]),
        "map75": mean(precision[5]),
        "per_class_map50_95": per_class,
    }


def to_coco(dets: list[Detections], truths: list[Truth], num_classes: int) -> tuple[dict, list[dict]]:
    """A COCO ground-truth dict and result list for the same images (ids are 1-based)."""
    images = [{"id": i + 1, "width": 1, "height": 1} for i in range(len(truths))]
    anns, n = [], 0
    for i, t in enumerate(truths):
        for box, label in zip(xyxy_to_xywh(t.boxes), t.labels):
            n += 1
            anns.append(
                {
                    "id": n,
                    "image_id": i + 1,
                    "category_id": int(label) + 1,
                    "bbox": [float(v) for v in box],
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                }
            )
    gt = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)],
    }
    results = [
        {"image_id": i + 1, "category_id": int(label) + 1, "bbox": [float(v) for v in box], "score": float(s)}
        for i, d in enumerate(dets)
        for box, label, s in zip(xyxy_to_xywh(d.boxes), d.labels, d.scores)
    ]
    return gt, results


def pycocotools_map(dets: list[Detections], truths: list[Truth], num_classes: int) -> dict:
    """The same figures from pycocotools' own ``COCOeval`` (bbox), for the cross-check."""
    from pycocotools.coco import COCO  # optional: pycocotools only for the cross-check
    from pycocotools.cocoeval import COCOeval  # optional: pycocotools only for the cross-check

    gt_dict, results = to_coco(dets, truths, num_classes)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        if not results:
            return {"map50_95": 0.0, "map50": 0.0, "map75": 0.0}
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map50_95": float(ev.stats[0]), "map50": float(ev.stats[1]), "map75": float(ev.stats[2])}


def evaluate(
    dets: list[Detections], truths: list[Truth], class_names: tuple[str, ...], cross_check: bool = True
) -> dict:
    """Everything the training flow and the benchmark report, in one flat dict."""
    n = len(class_names)
    map50, aps = voc_map(dets, truths, n)
    coco = coco_map(dets, truths, n)
    out = {
        "map50": map50,
        "map50_95": coco["map50_95"],
        "coco_map50": coco["map50"],
        "coco_map75": coco["map75"],
        "ap50_per_class": {name: (None if np.isnan(a) else float(a)) for name, a in zip(class_names, aps)},
        "ap50_95_per_class": {name: float(a) for name, a in zip(class_names, coco["per_class_map50_95"])},
    }
    if cross_check:
        ref = pycocotools_map(dets, truths, n)
        out.update(
            {
                "pycocotools_map50": ref["map50"],
                "pycocotools_map50_95": ref["map50_95"],
                "pycocotools_abs_diff": max(abs(ref["map50"] - coco["map50"]), abs(ref["map50_95"] - coco["map50_95"])),
            }
        )
    return out
