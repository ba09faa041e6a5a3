"""Augmentation with albumentations: the course's three — mirroring, random cropping, colour shifting.

Probabilities and strengths come from params; ``describe`` gives albumentations' own serialised form,
which training logs to MLflow so a run can be reproduced exactly.
"""
from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from components.settings import AugmentSettings  # noqa: E402


def face_augmentation(cfg: AugmentSettings, size: int, seed: int | None = None):
    """Chip-level augmentation: the output keeps the chip's size so alignment is preserved on average."""
    import albumentations as A

    return A.Compose([
        A.HorizontalFlip(p=cfg.flip_p),
        A.RandomResizedCrop(size=(size, size), scale=(cfg.crop_scale_min, 1.0), ratio=(0.9, 1.1), p=cfg.crop_p),
        *colour_shifting(cfg),
    ], seed=seed)


def colour_shifting(cfg) -> list:
    """The course's colour shifting (RGB shift, then jitter), shared by face chips and detector images.

    ``cfg`` is anything with ``rgb_shift``, ``brightness``, ``contrast``, ``saturation``, ``hue`` and
    ``colour_p``; pixel-only, so boxes are unaffected.
    """
    import albumentations as A

    return [
        A.RGBShift(r_shift_limit=cfg.rgb_shift, g_shift_limit=cfg.rgb_shift, b_shift_limit=cfg.rgb_shift,
                   p=cfg.colour_p),
        A.ColorJitter(brightness=cfg.brightness, contrast=cfg.contrast, saturation=cfg.saturation, hue=cfg.hue,
                      p=cfg.colour_p),
    ]


def describe(pipeline) -> dict:
    import albumentations as A

    return A.to_dict(pipeline)


def as_function(pipeline):
    """A ``chip -> chip`` callable for the training loop."""
    def apply(chip: np.ndarray) -> np.ndarray:
        return pipeline(image=np.ascontiguousarray(chip))["image"]
    return apply
