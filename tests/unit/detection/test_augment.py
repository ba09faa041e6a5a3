"""Bbox-aware augmentation: boxes move with the pixels (mirroring, cropping), colour leaves them alone."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from facegate.components.core.settings import load_settings
from facegate.components.detection.augment import augment_sample, box_augmentation, letterbox_sample
from facegate.components.detection.train import DetectTrainConfig

PARAMS = DetectTrainConfig.from_settings(load_settings()).augment  # params.yaml's detection section
OFF = dict(flip_p=0.0, crop_p=0.0, colour_p=0.0)


def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 200 x 100 grey image with white squares exactly where the boxes are."""
    img = np.full((100, 200, 3), 60, np.uint8)
    boxes = np.array([[10, 20, 40, 50], [150, 60, 190, 95]], float)
    for x1, y1, x2, y2 in boxes.astype(int):
        img[y1:y2, x1:x2] = 255
    return img, boxes, np.array([0, 2])


def white_inside(img: np.ndarray, box: np.ndarray) -> float:
    x1, y1, x2, y2 = np.round(box).astype(int)
    return float((img[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1, 0] > 200).mean())


def test_mirroring_moves_boxes_with_the_pixels():
    img, boxes, labels = scene()
    pipe = box_augmentation(replace(PARAMS, **{**OFF, "flip_p": 1.0}), 200, seed=0)
    out, b, lab = augment_sample(pipe, img, boxes, labels, 200)
    # letterbox 200 x 100 -> 200 x 100 + padding below; x' = 200 - x
    np.testing.assert_allclose(b, [[160, 20, 190, 50], [10, 60, 50, 95]], atol=1e-4)  # float32 inside
    assert lab.tolist() == [0, 2]
    assert all(white_inside(out, box) == 1.0 for box in b)


def test_random_crop_keeps_boxes_on_their_pixels_and_drops_the_barely_visible():
    img, boxes, labels = scene()
    cfg = replace(PARAMS, **{**OFF, "crop_p": 1.0, "crop_scale_min": 0.3, "min_visibility": 0.4})
    pipe = box_augmentation(cfg, 128, seed=3)
    kept = 0
    for _ in range(20):
        out, b, lab = augment_sample(pipe, img, boxes, labels, 128)
        assert out.shape == (128, 128, 3) and len(b) == len(lab) <= 2
        for box in b:
            assert 0 <= box[0] < box[2] <= 128 and 0 <= box[1] < box[3] <= 128  # clipped to the crop
            assert white_inside(out, box) > 0.9  # the box still sits on its white square
        kept += len(b)
    assert 0 < kept < 40  # some crops cut boxes out (visibility rule), most keep them


def test_colour_shift_changes_pixels_not_boxes():
    img, boxes, labels = scene()
    cfg = replace(PARAMS, **{**OFF, "colour_p": 1.0, "rgb_shift": 40})
    out, b, _ = augment_sample(box_augmentation(cfg, 200, seed=1), img, boxes, labels, 200)
    ref, rb = letterbox_sample(img, boxes, 200)
    np.testing.assert_allclose(b, rb, atol=1e-4)
    assert np.abs(out.astype(int) - ref.astype(int)).mean() > 1


def test_letterbox_sample_scales_boxes():
    img, boxes, _ = scene()
    out, b = letterbox_sample(img, boxes, 100)  # 200 x 100 -> 100 x 50
    assert out.shape == (100, 100, 3)
    np.testing.assert_allclose(b, boxes / 2, atol=1e-4)
    assert pytest.approx(white_inside(out, b[0]), abs=0.05) == 1.0
