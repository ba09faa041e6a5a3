"""k-means anchors with distance 1 - IoU."""

from __future__ import annotations

import numpy as np
import pytest

from facegate.components.detection.anchors import kmeans_anchors, mean_best_iou, shape_iou


def test_shape_iou_hand_computed():
    # (2, 2) vs (1, 4) centred: overlap 1 x 2 = 2, union 4 + 4 - 2 = 6
    assert shape_iou([[2, 2]], [[1, 4]])[0, 0] == pytest.approx(1 / 3)
    assert shape_iou([[3, 5]], [[3, 5]])[0, 0] == pytest.approx(1.0)
    # (2, 2) inside (4, 4): 4 / 16
    assert shape_iou([[2, 2]], [[4, 4]])[0, 0] == pytest.approx(0.25)


def test_kmeans_finds_the_shapes_of_three_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[10, 12], [30, 20], [80, 100]], float)
    wh = np.concatenate([c * rng.uniform(0.9, 1.1, size=(100, 2)) for c in centres])
    anchors = kmeans_anchors(wh, 3, seed=1)
    np.testing.assert_allclose(anchors, centres, rtol=0.05)  # smallest area first
    assert mean_best_iou(wh, anchors) > 0.85
    np.testing.assert_array_equal(anchors, kmeans_anchors(wh, 3, seed=1))  # seeded


def test_kmeans_needs_enough_boxes():
    with pytest.raises(ValueError, match="at least k=3"):
        kmeans_anchors(np.array([[1, 1], [2, 2]]), 3)
