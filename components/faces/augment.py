"""Augmentation with albumentations: the course's three — mirroring, random cropping, colour shifting —
and, for faces behind masks, a synthetic mask drawn from the face's landmarks.

Probabilities and strengths come from params; ``describe`` gives albumentations' own serialised form,
which training logs to MLflow so a run can be reproduced exactly. A fused model's paired chips (both
chip geometries of one face, 6 channels) get one draw for both halves: the mask, flip and crop act on
the 6-channel chip, the colour shift on each half with the same parameters.
"""

from __future__ import annotations

import os

import numpy as np

from facegate.components.faces.masks import synthetic_mask

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from facegate.components.core.settings import AugmentSettings, MaskSettings  # noqa: E402

ARCFACE_HALF = "arcface"  # the albumentations target name of a paired chip's second half


class FaceAugmentation:
    """Chip -> augmented chip of the same size (alignment is preserved on average); called like an
    albumentations pipeline (``aug(image=chip)["image"]``) so feature caches can drive it."""

    def __init__(
        self, cfg: AugmentSettings, size: int, seed: int | None = None, masks: MaskSettings | None = None
    ) -> None:
        import albumentations as A  # heavy: albumentations pulls in scipy and more; only augmentation needs it

        shape = [synthetic_mask(masks)] if masks is not None and masks.p > 0 else []
        shape += [
            A.HorizontalFlip(p=cfg.flip_p),
            A.RandomResizedCrop(size=(size, size), scale=(cfg.crop_scale_min, 1.0), ratio=(0.9, 1.1), p=cfg.crop_p),
        ]
        self.shape = A.Compose(shape, seed=seed)
        self.colour = A.Compose(
            colour_shifting(cfg), seed=None if seed is None else seed + 1, additional_targets={ARCFACE_HALF: "image"}
        )

    def __call__(self, image: np.ndarray) -> dict:
        chip = self.shape(image=np.ascontiguousarray(image))["image"]
        if chip.shape[-1] == 6:
            out = self.colour(image=np.ascontiguousarray(chip[..., :3]), arcface=np.ascontiguousarray(chip[..., 3:]))
            return {"image": np.concatenate([out["image"], out[ARCFACE_HALF]], axis=-1)}
        return {"image": self.colour(image=chip)["image"]}

    def describe(self) -> dict:
        import albumentations as A  # heavy: albumentations pulls in scipy and more; only augmentation needs it

        return {"shape": A.to_dict(self.shape), "colour": A.to_dict(self.colour)}


def face_augmentation(
    cfg: AugmentSettings, size: int, seed: int | None = None, masks: MaskSettings | None = None
) -> FaceAugmentation:
    """Chip-level augmentation; ``masks`` adds the synthetic mask step (first: it needs the aligned face)."""
    return FaceAugmentation(cfg, size, seed, masks)


def colour_shifting(cfg) -> list:
    """The course's colour shifting (RGB shift, then jitter), shared by face chips and detector images.

    ``cfg`` is anything with ``rgb_shift``, ``brightness``, ``contrast``, ``saturation``, ``hue`` and
    ``colour_p``; pixel-only, so boxes are unaffected.
    """
    import albumentations as A  # heavy: albumentations pulls in scipy and more; only augmentation needs it

    return [
        A.RGBShift(
            r_shift_limit=cfg.rgb_shift, g_shift_limit=cfg.rgb_shift, b_shift_limit=cfg.rgb_shift, p=cfg.colour_p
        ),
        A.ColorJitter(
            brightness=cfg.brightness, contrast=cfg.contrast, saturation=cfg.saturation, hue=cfg.hue, p=cfg.colour_p
        ),
    ]


def describe(pipeline) -> dict:
    import albumentations as A  # heavy: albumentations pulls in scipy and more; only augmentation needs it

    return pipeline.describe() if isinstance(pipeline, FaceAugmentation) else A.to_dict(pipeline)


def as_function(pipeline):
    """A ``chip -> chip`` callable for the training loop."""

    def apply(chip: np.ndarray) -> np.ndarray:
        return pipeline(image=np.ascontiguousarray(chip))["image"]

    return apply
