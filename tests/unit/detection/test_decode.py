"""Decoding, the score threshold and per-class NMS on the course's 3 x 3 grid with two anchors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facegate.components.detection.decode import decode_grid, letterbox, postprocess

ANCHORS = np.array([[30.0, 90.0], [90.0, 30.0]])  # tall, wide (w, h)


def course_output() -> np.ndarray:
    """Raw head output: only the bottom-middle cell's wide anchor is sure of a car."""
    raw = np.zeros((3, 3, 2, 8))
    raw[..., 0] = -4.0  # p_c = sigmoid(-4) ~ 0.018 everywhere
    raw[2, 1, 1] = [4.0, 0.0, 0.0, math.log(40 / 30), math.log(100 / 90), 0.0, 5.0, 0.0]
    return raw


def test_decode_grid_hand_computed():
    boxes, p_c, probs = decode_grid(course_output(), ANCHORS, stride=100)
    assert boxes.shape == (18, 4) and p_c.shape == (18,) and probs.shape == (18, 3)
    k = (2 * 3 + 1) * 2 + 1  # row 2, column 1, anchor 1 in row-major order
    # centre ((1 + 0.5) * 100, (2 + 0.5) * 100) = (150, 250); h = 30 * 40/30 = 40, w = 90 * 100/90 = 100
    np.testing.assert_allclose(boxes[k], [100, 230, 200, 270], atol=1e-9)
    assert p_c[k] == pytest.approx(1 / (1 + math.exp(-4)))
    assert probs[k, 1] == pytest.approx(math.exp(5) / (math.exp(5) + 2))
    # the top-left cell's tall anchor: centre (50, 50), the anchor's own size
    np.testing.assert_allclose(boxes[0], [35, 5, 65, 95])


def test_score_threshold_keeps_the_car_only():
    boxes, p_c, probs = decode_grid(course_output(), ANCHORS, stride=100)
    det = postprocess(boxes, p_c, probs, score_threshold=0.6, iou_threshold=0.5)
    assert len(det) == 1
    assert det.labels.tolist() == [1]
    assert det.scores[0] == pytest.approx(1 / (1 + math.exp(-4)) * math.exp(5) / (math.exp(5) + 2))
    np.testing.assert_allclose(det.boxes[0], [100, 230, 200, 270], atol=1e-9)
    # a threshold under p_c x 1/3 of the empty cells lets every anchor through, for every class
    assert len(postprocess(boxes, p_c, probs, score_threshold=0.0, iou_threshold=1.0)) == 18 * 3


def test_nms_after_decoding_one_box_per_object_per_class():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10]], float)
    p_c = np.array([0.9, 0.8, 0.7])
    probs = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    det = postprocess(boxes, p_c, probs, score_threshold=0.5, iou_threshold=0.5)
    assert sorted(zip(det.labels.tolist(), det.scores.round(3).tolist())) == [(0, 0.9), (1, 0.7)]
    agnostic = postprocess(boxes, p_c, probs, score_threshold=0.5, iou_threshold=0.5, class_agnostic=True)
    assert len(agnostic) == 1 and agnostic.scores[0] == pytest.approx(0.9)
    assert len(postprocess(boxes, p_c, probs, 0.5, 0.5, max_detections=1)) == 1


def test_letterbox_keeps_aspect_and_maps_back():
    img = np.zeros((100, 200, 3), np.uint8)
    out, fx, fy = letterbox(img, 64)
    assert out.shape == (64, 64, 3)
    assert (fx, fy) == (200 / 64, 100 / 32)
    assert (out[32:] == out[63, 63]).all() and tuple(out[63, 63]) != (0, 0, 0)  # padded below, mean colour
