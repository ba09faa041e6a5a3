"""VOC all-point AP on a hand-computed case; COCO-style mAP against pycocotools on the same detections."""

from __future__ import annotations

import numpy as np
import pytest

from facegate.components.detection.decode import Detections
from facegate.components.detection.metrics import Truth, coco_map, evaluate, pycocotools_map, voc_ap, voc_map


def det(boxes, scores, labels):
    return Detections(np.array(boxes, float).reshape(-1, 4), np.array(scores, float), np.array(labels, int))


def test_voc_all_point_ap_hand_computed():
    truths = [Truth(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), np.array([0, 0]))]
    dets = [det([[0, 0, 10, 10], [50, 50, 60, 60], [21, 21, 31, 31]], [0.9, 0.8, 0.7], [0, 0, 0])]
    # ranks: TP (P 1, R .5), FP (P .5, R .5), TP (P 2/3, R 1); IoU of the third = 81/119 > 0.5
    # envelope: precision 1 up to recall .5, 2/3 up to 1 -> AP = .5 * 1 + .5 * 2/3
    mean, aps = voc_map(dets, truths, 1)
    assert aps[0] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert mean == pytest.approx(aps[0])


def test_voc_duplicates_are_false_positives_and_missing_classes_are_skipped():
    truths = [Truth(np.array([[0, 0, 10, 10]], float), np.array([0]))]
    dets = [det([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8], [0, 0])]
    mean, aps = voc_map(dets, truths, 2)
    assert aps[0] == pytest.approx(1.0)  # the duplicate comes after full recall
    assert np.isnan(aps[1]) and mean == pytest.approx(1.0)  # class 1 has no true boxes
    assert voc_ap(np.array([0.5, 0.5]), np.array([1.0, 0.5])) == pytest.approx(0.5)


def random_fixture(seed: int, images: int = 30, classes: int = 3):
    rng = np.random.default_rng(seed)
    truths, dets = [], []
    for _ in range(images):
        n = rng.integers(0, 6)
        xy = rng.uniform(0, 300, (n, 2))
        wh = rng.uniform(8, 80, (n, 2))
        gt = np.concatenate([xy, xy + wh], axis=1)
        labels = rng.integers(0, classes, n)
        truths.append(Truth(gt, labels))
        # detections: jittered true boxes (some with a wrong class), duplicates and random false alarms
        jitter = gt + rng.normal(0, 6, gt.shape)
        jitter[:, 2:] = np.maximum(jitter[:, 2:], jitter[:, :2] + 1)  # boxes keep a positive size, as decoded ones do
        wrong = np.where(rng.random(n) < 0.2, rng.integers(0, classes, n), labels)
        fa = rng.integers(0, 4)
        fxy = rng.uniform(0, 300, (fa, 2))
        boxes = np.concatenate([jitter, jitter[: n // 2] + 3, np.concatenate([fxy, fxy + 30], axis=1)])
        lab = np.concatenate([wrong, labels[: n // 2], rng.integers(0, classes, fa)])
        dets.append(det(boxes, rng.random(len(boxes)).round(2), lab))  # rounded: ties in score too
    return dets, truths


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_map_agrees_with_pycocotools(seed):
    dets, truths = random_fixture(seed)
    ours = coco_map(dets, truths, 3)
    ref = pycocotools_map(dets, truths, 3)
    assert 0.05 < ref["map50_95"] < 0.95  # a fixture where matching matters
    assert abs(ours["map50_95"] - ref["map50_95"]) < 1e-3
    assert abs(ours["map50"] - ref["map50"]) < 1e-3
    assert abs(ours["map75"] - ref["map75"]) < 1e-3


def test_coco_map_of_perfect_detections_is_one():
    truths = [Truth(np.array([[0, 0, 10, 10], [20, 20, 40, 50]], float), np.array([0, 1]))]
    dets = [det([[0, 0, 10, 10], [20, 20, 40, 50]], [0.9, 0.8], [0, 1])]
    out = evaluate(dets, truths, ("a", "b"))
    assert out["map50"] == pytest.approx(1.0) and out["map50_95"] == pytest.approx(1.0)
    assert out["pycocotools_map50_95"] == pytest.approx(1.0)
    assert out["pycocotools_abs_diff"] < 1e-3
