"""Bbox-aware augmentation (albumentations): the boxes move with the pixels.

The course's three: mirroring (boxes flip with the image), random cropping (a random part of the image
is resized to the model's input; boxes are clipped to the crop and a box keeping less than
``min_visibility`` of its area is dropped), colour shifting (RGB shift and colour jitter; boxes
unchanged). Every image, augmented or not, then goes through the same letterbox as at inference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from facegate.components.detection.decode import letterbox  # noqa: E402
from facegate.components.faces.augment import colour_shifting  # noqa: E402

__all__ = ["BoxAugmentSettings", "box_augmentation", "augment_sample", "letterbox_sample"]


@dataclass(frozen=True)
class BoxAugmentSettings:
    """The detector's augmentation knobs, named as in params' ``detection`` section (which holds their values)."""

    flip_p: float
    crop_p: float
    crop_scale_min: float
    min_visibility: float
    colour_p: float
    rgb_shift: int
    brightness: float
    contrast: float
    saturation: float
    hue: float


def box_augmentation(cfg: BoxAugmentSettings, size: int, seed: int | None = None):
    import albumentations as A  # heavy: albumentations pulls in scipy and more; only augmentation needs it

    return A.Compose(
        [
            A.HorizontalFlip(p=cfg.flip_p),
            A.RandomResizedCrop(size=(size, size), scale=(cfg.crop_scale_min, 1.0), ratio=(0.75, 4 / 3), p=cfg.crop_p),
            *colour_shifting(cfg),
        ],
        bbox_params=A.BboxParams(
            format="pascal_voc", label_fields=["labels"], min_visibility=cfg.min_visibility, clip=True
        ),
        seed=seed,
    )


def letterbox_sample(image: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The inference letterbox, with the boxes mapped into it."""
    boxed, fx, fy = letterbox(image, size)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / np.array([fx, fy, fx, fy])
    return boxed, b


def augment_sample(
    pipeline, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Augment (pixels and boxes together), then letterbox to ``size``; returns image, boxes, labels."""
    h, w = image.shape[:2]
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
    ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    out = pipeline(image=np.ascontiguousarray(image), bboxes=b[ok], labels=np.asarray(labels)[ok].tolist())
    aug_boxes = np.asarray(out["bboxes"], dtype=np.float64).reshape(-1, 4)
    aug_labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
    boxed, mapped = letterbox_sample(out["image"], aug_boxes, size)
    return boxed, mapped, aug_labels
