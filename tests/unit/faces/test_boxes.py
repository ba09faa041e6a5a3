"""IoU and non-max suppression on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from facegate.components.faces.boxes import iou, iou_matrix, nms, per_class_nms


def test_iou_hand_computed():
    # overlap 1x1 = 1; union 4 + 4 - 1 = 7
    assert iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert iou([0, 0, 2, 2], [0, 0, 2, 2]) == pytest.approx(1.0)
    assert iou([0, 0, 2, 2], [2, 0, 4, 2]) == 0.0  # touching edges: no area in common
    assert iou([0, 0, 4, 2], [1, 0, 3, 2]) == pytest.approx(0.5)  # contained: 4 / 8
    assert iou([1, 1, 1, 1], [1, 1, 1, 1]) == 0.0  # empty boxes never overlap


def test_iou_matrix_shape_and_symmetry():
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15]])
    b = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [5, 0, 15, 10]])
    m = iou_matrix(a, b)
    assert m.shape == (2, 3)
    np.testing.assert_allclose(m, iou_matrix(b, a).T)
    assert m[1, 0] == pytest.approx(25 / 175)


def test_nms_keeps_one_box_per_object():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 1, 10, 11]], float)
    scores = np.array([0.6, 0.9, 0.8, 0.7])
    # box 1 (0.9) suppresses 0 (IoU 9/11) and 3 (IoU 81/119 = 0.68 > 0.5); box 2 is elsewhere
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    # at threshold 0.7, box 3 (IoU with box 1 = 0.68) survives
    assert nms(boxes, scores, 0.7).tolist() == [1, 2, 3]


def test_per_class_nms_never_suppresses_another_class():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10]], float)
    scores = np.array([0.9, 0.8, 0.7])
    labels = np.array([0, 1, 0])
    assert per_class_nms(boxes, scores, labels, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.5).tolist() == [0]  # class-agnostic: one box
