"""Synthetic face masks drawn on aligned chips from 68 facial landmarks.

At the entrance people wear masks; LFW has none. A mask drawn from the face's own landmarks (dlib's
68-point model: jaw line, nose bridge, nose tip) follows pose and face shape, so a model trained on
masked copies learns to rely on the eyes and brows rather than on a mouth it will not see. Three
shapes (surgical with pleats, cloth with a pattern, N95 with a seam), random colours, shading taken
from the face underneath, a tilt, straps, and a chance that the mask sits below the nose (the
face-mask set's ``mask_weared_incorrect``).

Everything is driven by a numpy Generator, so a seeded protocol draws the same masks every run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from facegate.components.core.weights import weight_path
from facegate.components.faces.align import ARCFACE_OFFSET, ARCFACE_SIZE

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from albumentations import ImageOnlyTransform  # noqa: E402

from facegate.components.core.settings import MaskSettings  # noqa: E402

# Where the 68-point model should look on a chip: the box dlib's HOG detector finds on the chip
# geometry (measured: mean HOG box over LFW chips; dlib's 150 px chips with 0.25 padding, ArcFace 112).
CHIP_FACE_BOX = {"dlib_150": (10, 8, 138, 137), "arcface_112": (12, 27, 95, 111)}

PALETTES = {  # RGB
    "surgical": [(160, 200, 230), (120, 170, 215), (235, 235, 240), (90, 150, 140), (230, 170, 190)],
    "cloth": [(30, 30, 35), (60, 60, 70), (200, 60, 60), (50, 80, 150), (220, 200, 150), (90, 120, 60)],
    "n95": [(240, 240, 235), (225, 225, 215), (200, 205, 210)],
}


@dataclass(frozen=True)
class DrawnMask:
    style: str
    below_nose: bool
    tilt_deg: float


@lru_cache(maxsize=1)
def _predictor():
    import dlib  # heavy: dlib's native module; only the dlib detectors and the landmark model need it

    return dlib.shape_predictor(str(weight_path("dlib_shape_predictor_68")))


def chip_landmarks(chip: np.ndarray, geometry: str | None = None) -> np.ndarray:
    """68 x 2 landmarks of an aligned chip (the face sits where the alignment put it)."""
    import dlib  # heavy: dlib's native module; only the dlib detectors and the landmark model need it

    geometry = geometry or ("arcface_112" if chip.shape[0] == 112 else "dlib_150")
    left, top, right, bottom = CHIP_FACE_BOX[geometry]
    shape = _predictor()(np.ascontiguousarray(chip), dlib.rectangle(left, top, right, bottom))
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


def mask_polygon(pts: np.ndarray, style: str, below_nose: bool) -> np.ndarray:
    """The mask's outline: up to the nose bridge (or just under the nose), down the jaw, past the chin."""
    nose_bridge, nose_tip = pts[28], pts[33]
    top_y = nose_tip[1] + 0.15 * (pts[51][1] - nose_tip[1]) if below_nose else nose_bridge[1]
    left, right = pts[1].copy(), pts[15].copy()
    left[1] = max(left[1], top_y)
    right[1] = max(right[1], top_y)
    chin_drop = (pts[8] - pts[57]) * (0.25 if style != "n95" else 0.4)
    jaw = pts[2:15].copy()
    weights = np.sin(np.linspace(0, np.pi, len(jaw)))[:, None]  # push the chin down, not the cheeks
    jaw = jaw + weights * chin_drop
    if style == "cloth":  # a curved top edge, highest over the nose
        xs = np.linspace(left[0], right[0], 9)
        rise = (1 - ((xs - nose_bridge[0]) / max(right[0] - left[0], 1) * 2) ** 2) * 4
        top = np.stack([xs, top_y - rise + (np.abs(xs - nose_bridge[0]) / max(right[0] - left[0], 1)) * 6], 1)
    elif style == "n95":  # pointed over the nose
        top = np.array([left, [nose_bridge[0], top_y - 3], right])
    else:
        top = np.array([left, [nose_bridge[0], top_y], right])
    return np.concatenate([top, jaw[::-1]]).astype(np.float32)


def _rotate(poly: np.ndarray, deg: float) -> np.ndarray:
    c = poly.mean(0)
    a = np.deg2rad(deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], np.float32)
    return (poly - c) @ rot.T + c


def _texture(
    shape: tuple[int, int], style: str, colour: np.ndarray, rng: np.random.Generator, poly: np.ndarray
) -> np.ndarray:
    h, w = shape
    tex = np.broadcast_to(colour, (h, w, 3)).astype(np.float32).copy()
    if style == "surgical":  # three pleats
        y0, y1 = poly[:, 1].min(), poly[:, 1].max()
        for k in (0.3, 0.5, 0.7):
            y = int(y0 + k * (y1 - y0))
            cv2.line(tex, (0, y), (w, y + int(rng.integers(-2, 3))), (colour * 0.8).tolist(), 1)
    elif style == "cloth":  # stripes or speckles
        if rng.random() < 0.5:
            period = int(rng.integers(4, 9))
            stripe = ((np.arange(w)[None, :] + np.arange(h)[:, None]) // period) % 2 == 0
            tex[stripe] = tex[stripe] * 0.75 + 255 * 0.25 * rng.random()
        else:
            tex += rng.normal(0, 12, (h, w, 1)).astype(np.float32)
    else:  # N95: a vertical seam
        x = int(poly[:, 0].mean())
        cv2.line(tex, (x, 0), (x, h), (colour * 0.85).tolist(), 1)
    return tex


def draw_mask(
    chip: np.ndarray, rng: np.random.Generator, cfg: MaskSettings, landmarks: np.ndarray | None = None
) -> tuple[np.ndarray, DrawnMask]:
    """A masked copy of ``chip`` (uint8 RGB) and what was drawn."""
    pts = chip_landmarks(chip) if landmarks is None else landmarks
    style = str(rng.choice(cfg.styles))
    below = bool(rng.random() < cfg.below_nose_p)
    tilt = float(rng.uniform(-cfg.tilt_deg, cfg.tilt_deg))
    poly = _rotate(mask_polygon(pts, style, below), tilt)
    palette = PALETTES[style]
    colour = np.array(palette[int(rng.integers(len(palette)))], np.float32)
    colour = np.clip(colour + rng.normal(0, 10, 3), 0, 255)
    h, w = chip.shape[:2]
    region = np.zeros((h, w), np.uint8)
    cv2.fillPoly(region, [np.round(poly).astype(np.int32)], 1)
    tex = _texture((h, w), style, colour, rng, poly)
    # shading from the face underneath keeps the scene's light on the mask
    lum = cv2.GaussianBlur(chip.astype(np.float32).mean(2), (0, 0), 9)  # light, not the mouth underneath
    inside = region.astype(bool)
    shade = 0.85 + 0.15 * lum / max(float(lum[inside].mean()) if inside.any() else 1.0, 1.0)
    out = chip.astype(np.float32)
    out[inside] = np.clip(tex[inside] * shade[inside, None], 0, 255)
    if rng.random() < cfg.strap_p:  # ear loops from the mask's upper corners towards the ears
        for corner, ear in ((poly[0], pts[0]), (poly[2] if style != "cloth" else poly[8], pts[16])):
            cv2.line(out, tuple(int(v) for v in corner), tuple(int(v) for v in ear), (colour * 0.9).tolist(), 1)
    return out.astype(np.uint8), DrawnMask(style, below, tilt)


def mask_chip(chip: np.ndarray, seed, cfg: MaskSettings) -> np.ndarray:
    """A masked copy of a chip of any geometry; a paired chip gets the same mask on both of its faces
    (each half drawn from its own landmarks with the same random draws)."""
    chip = np.asarray(chip)
    if chip.shape[-1] != 6:
        return draw_mask(chip, np.random.default_rng(seed), cfg)[0]
    out = chip.copy()
    out[..., :3] = draw_mask(np.ascontiguousarray(chip[..., :3]), np.random.default_rng(seed), cfg)[0]
    o, n = ARCFACE_OFFSET, ARCFACE_SIZE
    arc = np.ascontiguousarray(chip[o : o + n, o : o + n, 3:])
    out[o : o + n, o : o + n, 3:] = draw_mask(arc, np.random.default_rng(seed), cfg)[0]
    return out


def mask_chips(chips: np.ndarray, seed: int, cfg: MaskSettings, rows: np.ndarray | None = None) -> np.ndarray:
    """Masked copies of ``chips``: chip i gets the mask of Generator([seed, row i]), the same every run."""
    rows = np.arange(len(chips)) if rows is None else rows
    out = np.empty_like(chips)
    for i, (chip, row) in enumerate(zip(chips, rows)):
        out[i] = mask_chip(chip, [seed, int(row)], cfg)
    return out


class SyntheticMask(ImageOnlyTransform):
    """albumentations transform: a synthetic mask on an aligned chip (serialised with the pipeline)."""

    def __init__(self, styles, below_nose_p: float, tilt_deg: float, strap_p: float, p: float) -> None:
        """Every value from params' ``masks`` section (``synthetic_mask``): no defaults of its own."""
        super().__init__(p=p)
        self.styles = tuple(styles)
        self.below_nose_p = below_nose_p
        self.tilt_deg = tilt_deg
        self.strap_p = strap_p

    def get_params_dependent_on_data(self, params, data):
        return {"mask_seed": int(self.random_generator.integers(2**31))}

    def apply(self, img: np.ndarray, mask_seed: int = 0, **params) -> np.ndarray:
        cfg = MaskSettings(
            p=1.0, styles=self.styles, below_nose_p=self.below_nose_p, tilt_deg=self.tilt_deg, strap_p=self.strap_p
        )
        return mask_chip(img, mask_seed, cfg)

    def get_transform_init_args_names(self):
        return ("styles", "below_nose_p", "tilt_deg", "strap_p")


def synthetic_mask(cfg: MaskSettings) -> SyntheticMask:
    return SyntheticMask(cfg.styles, cfg.below_nose_p, cfg.tilt_deg, cfg.strap_p, p=cfg.p)
