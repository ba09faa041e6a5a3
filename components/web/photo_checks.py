"""Enrolment photo checks for the console: what an operator needs to hear before anything is written.

The enrolment itself refuses a photo without exactly one face (``NoFaceFound`` / ``MultipleFaces``);
these checks run the same detector of the model in service (``FaceGate.recognizer``) on each photo as
soon as it is chosen, and add what makes a poor template: a face too small (shorter box side under
``console.min_face_px``) or blurred (variance of the Laplacian of the face, scaled to 112 px, under
``console.min_sharpness``). Nothing is stored.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from facegate.components.core.errors import FacegateError
from facegate.components.core.images import decode_image
from facegate.components.gallery.enrolment import Photo

SHARPNESS_SIDE = 112  # the face is scaled to this before the Laplacian, so the figure does not follow its size


def sharpness(gray_face: np.ndarray) -> float:
    """Variance of the Laplacian of a grey face crop scaled to SHARPNESS_SIDE: low means blurred."""
    face = cv2.resize(gray_face, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(face, cv2.CV_64F).var())


def check_photo(gate, photo: Photo) -> dict:  # noqa: ANN001 - a FaceGate
    """One photo's verdict: ``ok`` and, when not, ``problems`` in words that name the photo."""
    settings = gate.settings
    out: dict = {"name": photo.name, "ok": False, "faces": 0, "problems": []}
    try:
        decoded = decode_image(photo.data, photo.name, settings.images.max_pixels)
    except FacegateError as exc:
        out["problems"].append(f"{exc.code}: {exc.message}")
        return out
    pixels = np.ascontiguousarray(decoded.pixels)
    h, w = pixels.shape[:2]
    boxes = gate.recognizer.finder.detector.detect(pixels)
    out.update(width=w, height=h, faces=len(boxes))
    if not boxes:
        out["problems"].append(f"no_face_found: {photo.name}: no face found")
        return out
    if len(boxes) > 1:
        out["problems"].append(f"multiple_faces: {photo.name}: {len(boxes)} faces, enrolment needs exactly one")
        out["boxes"] = [b.as_list() for b in boxes]
        return out
    b = boxes[0]
    left, top, right, bottom = max(0, b.left), max(0, b.top), min(w, b.right), min(h, b.bottom)
    side = int(min(right - left, bottom - top))
    gray = cv2.cvtColor(pixels[top:bottom, left:right], cv2.COLOR_RGB2GRAY) if side > 0 else None
    sharp = round(sharpness(gray), 1) if gray is not None and gray.size else 0.0
    out.update(box=b.as_list(), face_px=side, sharpness=sharp)
    if side < settings.console.min_face_px:
        out["problems"].append(
            f"face_too_small: {photo.name}: the face is {side} px, at least {settings.console.min_face_px} px needed"
        )
    if sharp < settings.console.min_sharpness:
        out["problems"].append(
            f"face_blurred: {photo.name}: sharpness {sharp}, at least {settings.console.min_sharpness} needed"
        )
    out["ok"] = not out["problems"]
    return out


def thumbnail(path: Path, side: int = 128) -> bytes:
    """A stored enrolment photo as a small JPEG for the employees page."""
    with Image.open(path) as opened:
        im = opened.convert("RGB")
        im.thumbnail((side, side))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
    return buf.getvalue()
