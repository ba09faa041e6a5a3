"""An aligned chip as a PNG and back: how deployment captures keep their chips (in the capture store and
in the exported captures dataset), so the training data reads exactly the pixels the entrance aligned.

PNG holds at most 4 channels: a fused model's 6-channel chip (two geometries stacked, faces/align.py
``PAIRED_GEOMETRY``) is laid out side by side, and chips are square, so a 2:1 PNG is always a stacked one.
"""

from __future__ import annotations

import cv2
import numpy as np


def encode_chip(chip: np.ndarray) -> bytes:
    """PNG of an RGB chip (a 6-channel chip side by side)."""
    chip = np.ascontiguousarray(chip, dtype=np.uint8)
    if chip.ndim == 3 and chip.shape[2] > 4:
        chip = np.concatenate([chip[..., i : i + 3] for i in range(0, chip.shape[2], 3)], axis=1)
    ok, png = cv2.imencode(".png", np.ascontiguousarray(chip[..., ::-1]))
    if not ok:
        raise ValueError("chip: PNG encoding failed")
    return png.tobytes()


def decode_chip(png: bytes) -> np.ndarray:
    """The aligned chip, uint8 RGB (a 2:1 PNG: the fused model's two geometries, stacked back to 6 channels)."""
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise ValueError("chip: PNG decoding failed")
    img = decoded[..., ::-1]
    h, w = img.shape[:2]
    if w == 2 * h:
        img = np.concatenate([img[:, :h], img[:, h:]], axis=2)
    return img.copy()
