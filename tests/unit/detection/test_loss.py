"""The YOLO loss on hand-computed cases (3 x 3 grid, two anchors, the course's person-and-car cell)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facegate.components.detection.encoding import GridLayout, encode_targets
from facegate.components.detection.loss import LossWeights, yolo_loss

COURSE = GridLayout((300, 300), (100,), (((30.0, 90.0), (90.0, 30.0)),), num_classes=3)
ANCHORS = torch.tensor(COURSE.anchor_array(), dtype=torch.float32)
WEIGHTS = LossWeights(lambda_coord=5, lambda_obj=1, lambda_noobj=0.5, lambda_cls=1, ignore_iou=0.5)  # YOLO's


def target_for(boxes, labels):
    return [torch.from_numpy(encode_targets(np.array(boxes, float), np.array(labels), COURSE).grids[0][None])]


def test_all_zero_logits_against_one_box():
    # one box: centre (160, 240) -> cell (2, 1), offsets (0.6, 0.4); size 90 x 30*e (= the wide anchor's
    # height x e): b_h = 1, b_w = e relative to the wide anchor (90 wide, 30 high)
    w = 90 * math.e
    box = [160 - w / 2, 240 - 15, 160 + w / 2, 240 + 15]
    target = target_for([box], [1])
    assert target[0][0, 2, 1, 1, 0] == 1
    pred = [torch.zeros(1, 3, 3, 2, 8)]
    parts = yolo_loss(pred, target, None, ANCHORS, (100,), WEIGHTS)
    # box: sigmoid(0) = 0.5 against (0.6, 0.4): 0.01 + 0.01; log b_h = 0, log b_w = 1: 0 + 1
    assert float(parts["box"]) == pytest.approx(5 * 1.02, rel=1e-5)
    assert float(parts["obj"]) == pytest.approx(math.log(2), rel=1e-5)  # BCE(sigmoid(0), 1)
    assert float(parts["cls"]) == pytest.approx(math.log(3), rel=1e-5)  # uniform over 3 classes
    assert float(parts["noobj"]) == pytest.approx(0.5 * 17 * math.log(2), rel=1e-5)  # 18 anchors - 1
    assert float(parts["total"]) == pytest.approx(5.1 + math.log(2) * 9.5 + math.log(3), rel=1e-5)


def test_a_perfect_prediction_has_near_zero_box_and_class_loss():
    person, car = [140, 190, 180, 290], [90, 240, 190, 280]
    target = target_for([person, car], [0, 1])
    t = target[0]
    pred = torch.full((1, 3, 3, 2, 8), -20.0)  # confident "no object" everywhere else
    pos = t[..., 0] > 0
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    for idx in pos.nonzero():
        i = tuple(idx.tolist())
        v = t[i]
        pred[i] = torch.tensor(
            [
                20.0,
                logit(float(v[1])),
                logit(float(v[2])),
                math.log(float(v[3])),
                math.log(float(v[4])),
                *(20.0 * v[5:] - 10.0).tolist(),
            ]
        )
    parts = yolo_loss([pred], target, None, ANCHORS, (100,), WEIGHTS)
    for k in ("box", "obj", "noobj", "cls"):
        assert float(parts[k]) < 1e-4, k


def test_ignore_rule_spares_a_good_unassigned_prediction():
    box = [140, 190, 180, 290]  # tall: assigned to anchor 0 of cell (2, 1)
    target = target_for([box], [0])
    pred = torch.zeros(1, 3, 3, 2, 8)
    # the wide anchor of the same cell predicts a box that overlaps the face by IoU ~0.6 (> 0.5)
    pred[0, 2, 1, 1, 3] = math.log(100 / 30)  # height 100
    pred[0, 2, 1, 1, 4] = math.log(60 / 90)  # width 60 centred at (150, 250): IoU 40*95/(4000+6000-3800)
    gts = [torch.tensor([box], dtype=torch.float32)]
    with_rule = yolo_loss([pred], target, gts, ANCHORS, (100,), WEIGHTS)
    without = yolo_loss([pred], target, None, ANCHORS, (100,), WEIGHTS)
    assert float(without["noobj"] - with_rule["noobj"]) == pytest.approx(0.5 * math.log(2), rel=1e-5)


def test_loss_is_averaged_over_the_batch_and_has_gradients():
    target = target_for([[140, 190, 180, 290]], [0])
    pred = torch.zeros(2, 3, 3, 2, 8, requires_grad=True)
    parts = yolo_loss([pred], [target[0].repeat(2, 1, 1, 1, 1)], None, ANCHORS, (100,), WEIGHTS)
    single = yolo_loss([torch.zeros(1, 3, 3, 2, 8)], target, None, ANCHORS, (100,), WEIGHTS)
    assert float(parts["total"].detach()) == pytest.approx(float(single["total"]), rel=1e-6)
    parts["total"].backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
