"""Synthetic masks: drawn where the landmarks say, seeded, and serialisable as an albumentations step."""

from __future__ import annotations

import numpy as np
import pytest

from facegate.components.core.settings import load_settings
from facegate.components.faces.masks import chip_landmarks, draw_mask, mask_chips, mask_polygon, synthetic_mask


def masks(**overrides):
    """params' masks section with ``overrides``."""
    return load_settings(overrides={"masks": overrides}).masks


@pytest.fixture(scope="module")
def chip():
    rng = np.random.default_rng(0)
    return (rng.integers(90, 110, (150, 150, 3))).astype(np.uint8)


@pytest.fixture(scope="module")
def pts(chip):
    return chip_landmarks(chip)


def changed(a, b, x, y, r=2):
    return bool(
        np.abs(a[y - r : y + r + 1, x - r : x + r + 1].astype(int) - b[y - r : y + r + 1, x - r : x + r + 1]).sum() > 0
    )


def test_landmarks_fall_where_a_chip_has_its_face(pts):
    assert pts.shape == (68, 2)
    eyes_y, mouth_y, chin_y = pts[36:48, 1].mean(), pts[48:60, 1].mean(), pts[8, 1]
    assert 30 < eyes_y < mouth_y < chin_y < 150


@pytest.mark.parametrize("below_nose", [False, True])
def test_mask_covers_mouth_never_eyes_and_nose_only_when_worn_properly(chip, pts, below_nose):
    cfg = masks(styles=["surgical"], below_nose_p=1.0 if below_nose else 0.0, tilt_deg=0.0, strap_p=0.0)
    out, drawn = draw_mask(chip, np.random.default_rng(3), cfg, pts)
    assert drawn.below_nose is below_nose and drawn.style == "surgical"
    mouth = pts[62].astype(int)
    assert changed(chip, out, *mouth)
    for eye in (pts[36:42].mean(0), pts[42:48].mean(0)):
        assert not changed(chip, out, *eye.astype(int))
    nose_bridge = pts[29].astype(int)
    assert bool(changed(chip, out, *nose_bridge, r=0)) is (not below_nose)


def test_polygon_top_follows_the_nose(pts):
    over = mask_polygon(pts, "surgical", below_nose=False)
    under = mask_polygon(pts, "surgical", below_nose=True)
    assert over[:, 1].min() < pts[30, 1] < under[:, 1].min()
    assert over[:, 1].max() > pts[8, 1]  # past the chin


def test_masks_are_seeded_per_row(chip):
    cfg = masks()
    chips = np.stack([chip, chip, chip])
    a = mask_chips(chips, seed=7, cfg=cfg, rows=np.array([0, 1, 2]))
    b = mask_chips(chips, seed=7, cfg=cfg, rows=np.array([0, 1, 2]))
    c = mask_chips(chips, seed=8, cfg=cfg, rows=np.array([0, 1, 2]))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a[0], a[1])  # each row its own mask


def test_albumentations_step_serialises_and_replays(chip):
    import albumentations as A

    pipe = A.Compose([synthetic_mask(masks(p=1.0, styles=["n95", "cloth"]))], seed=5)
    spec = A.to_dict(pipe)
    assert spec["transform"]["transforms"][0]["styles"] == ("n95", "cloth") or list(
        spec["transform"]["transforms"][0]["styles"]
    ) == ["n95", "cloth"]
    first = pipe(image=chip)["image"]
    again = A.Compose([synthetic_mask(masks(p=1.0, styles=["n95", "cloth"]))], seed=5)(image=chip)["image"]
    assert first.shape == chip.shape and first.dtype == np.uint8
    assert np.array_equal(first, again) and not np.array_equal(first, chip)


def test_paired_chips_get_the_same_mask_on_both_faces(chip):
    from facegate.components.faces.align import paired_chip, split_paired
    from facegate.components.faces.masks import mask_chip

    arc = chip[19:131, 19:131]
    paired = paired_chip(chip, arc)
    out = mask_chip(paired, 4, masks(styles=["n95"], strap_p=0.0))
    d, a = split_paired(out[None])
    assert not np.array_equal(d[0], chip) and not np.array_equal(a[0], arc)
    # the same colour on both halves (one draw), each on its own face
    assert np.allclose(
        np.median(d[0][d[0] != chip].reshape(-1), 0), np.median(a[0][a[0] != arc].reshape(-1), 0), atol=25
    )


def test_face_augmentation_handles_plain_and_paired_chips(chip):
    from facegate.components.faces.align import paired_chip
    from facegate.components.faces.augment import describe, face_augmentation

    aug = face_augmentation(load_settings().augment, 150, seed=3, masks=masks(p=1.0))
    out = aug(image=chip)["image"]
    assert out.shape == chip.shape and not np.array_equal(out, chip)
    paired = paired_chip(chip, chip[19:131, 19:131])
    assert aug(image=paired)["image"].shape == (150, 150, 6)
    spec = describe(aug)
    assert spec["shape"]["transform"]["transforms"][0]["__class_fullname__"].endswith("SyntheticMask")
