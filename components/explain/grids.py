"""Grids of the patches that most excite each unit, and the JSON beside them.

Each kept entry is cut from its source image (read again through ``load(index) -> H x W x 3 uint8``) at the
unit's true receptive field. The model's input is the image resized to the input size, so boxes are scaled
back to image pixels (rounded outwards); what lies outside the image (the padding a deep unit also sees)
is grey. One PNG per layer (a row per unit, its ``k`` patches best first) and one JSON with each layer's
receptive field, the units shown and their top activations; for two versions of one architecture, the
same units side by side.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facegate.components.explain.units import Collected, LayerResult

__all__ = ["GREY", "compare_grids", "cut_patch", "input_box_to_image", "render", "safe_name"]

GREY = 128
Load = Callable[[int], np.ndarray]
Name = Callable[[int], str]


def input_box_to_image(
    box: tuple[int, int, int, int], input_hw: tuple[int, int], image_hw: tuple[int, int]
) -> tuple[int, int, int, int]:
    """An input-pixel box ``(y0, x0, y1, x1)`` in image pixels, the input being the image resized to
    ``input_hw`` (rounded outwards)."""
    sy, sx = image_hw[0] / input_hw[0], image_hw[1] / input_hw[1]
    y0, x0, y1, x1 = box
    return (
        math.floor(y0 * sy + 1e-9),
        math.floor(x0 * sx + 1e-9),
        math.ceil(y1 * sy - 1e-9),
        math.ceil(x1 * sx - 1e-9),
    )


def cut_patch(image: np.ndarray, box: tuple[int, int, int, int], fill: int = GREY) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` with whatever lies outside the image filled with ``fill``."""
    y0, x0, y1, x1 = box
    h, w = image.shape[:2]
    out = np.full((y1 - y0, x1 - x0, 3), fill, np.uint8)
    cy0, cx0, cy1, cx1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
    if cy1 > cy0 and cx1 > cx0:
        out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = image[cy0:cy1, cx0:cx1, :3]
    return out


class _Images:
    """``load`` with a small cache: a unit's top images are often another unit's too."""

    def __init__(self, load: Load, limit: int = 256) -> None:
        self.load, self.limit = load, limit
        self.cache: dict[int, np.ndarray] = {}

    def __call__(self, index: int) -> np.ndarray:
        if index not in self.cache:
            if len(self.cache) >= self.limit:
                self.cache.clear()
            self.cache[index] = np.asarray(self.load(index))
        return self.cache[index]


def _patches(
    res: LayerResult, input_hw: tuple[int, int], images: _Images, name: Name | None
) -> tuple[list[list[np.ndarray]], list[dict]]:
    rows, units_json = [], []
    for unit, top in zip(res.units, res.top):
        row, tops = [], []
        for act, index, y, x in top:
            img = images(index)
            ibox = res.geometry.box(y, x)
            box = input_box_to_image(ibox, input_hw, img.shape[:2])
            row.append(cut_patch(img, box))
            entry = {
                "activation": round(act, 5),
                "image_index": index,
                "position": [y, x],
                "box_xyxy": [box[1], box[0], box[3], box[2]],  # image pixels, half-open
                "box_input_xyxy": [ibox[1], ibox[0], ibox[3], ibox[2]],
            }
            if name is not None:
                entry["image"] = name(index)
            tops.append(entry)
        rows.append(row)
        units_json.append({"unit": unit, "top": tops})
    return rows, units_json


@functools.cache
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's scalable default font (its bitmap one drops a ':' after some letters); the bitmap one
    where Pillow has no FreeType."""
    try:
        return ImageFont.load_default(size=11)
    except (ImportError, OSError):
        return ImageFont.load_default()


def _grid(rows: list[list[np.ndarray]], units: list[int], k: int, patch: int, title: str) -> Image.Image:
    gap, label_w, title_h = 2, 40, 16
    canvas = Image.new("RGB", (label_w + k * (patch + gap), title_h + len(rows) * (patch + gap)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 2), title, fill=(0, 0, 0), font=_font())
    for r, (row, unit) in enumerate(zip(rows, units)):
        top = title_h + r * (patch + gap)
        draw.text((2, top + patch // 2 - 6), f"{unit}", fill=(0, 0, 0), font=_font())
        for c, p in enumerate(row):
            im = Image.fromarray(p).resize((patch, patch), Image.Resampling.BILINEAR)
            canvas.paste(im, (label_w + c * (patch + gap), top))
    return canvas


def safe_name(name: str) -> str:
    """A layer name as a file name (``dlib_resnet:blocks.3`` -> ``dlib_resnet_blocks.3``)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "layer"


def _title(label: str, res: LayerResult) -> str:
    g = res.geometry
    return f"{label}  rf {g.rf[0]}x{g.rf[1]} px  stride {g.jump[0]}  ({res.shape[0]} units)"


def render(
    result: Collected,
    load: Load,
    out_dir: str | Path,
    *,
    patch: int = 48,
    prefix: str = "",
    meta: dict | None = None,
    name: Name | None = None,
    write_json: bool = True,
    label: str = "",
) -> dict:
    """One ``<prefix><layer>.png`` grid per layer (titled ``<label><layer>``) and, with ``write_json``,
    ``<prefix>units.json``; returns the JSON document. ``name(index)`` labels each image in the JSON (a
    path, never pixels)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = _Images(load)
    doc: dict = {
        **(meta or {}),
        "input_size": list(result.input_hw),
        "n_images": result.n_images,
        "seconds": round(result.seconds, 2),
        "layers": {},
    }
    k = max((len(t) for r in result.layers.values() for t in r.top), default=1)
    for layer, res in result.layers.items():
        rows, units_json = _patches(res, result.input_hw, images, name)
        png = out_dir / f"{prefix}{safe_name(layer)}.png"
        _grid(rows, res.units, max(k, 1), patch, _title(f"{label}{layer}", res)).save(png)
        doc["layers"][layer] = {
            **res.geometry.as_json(),
            "shape": list(res.shape),
            "grid": png.name,
            "units": units_json,
        }
    if write_json:
        (out_dir / f"{prefix}units.json").write_text(json.dumps(doc, indent=1))
    return doc


def _side_by_side(left: Image.Image, right: Image.Image, sep: int = 12) -> Image.Image:
    canvas = Image.new("RGB", (left.width + sep + right.width, max(left.height, right.height)), (255, 255, 255))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + sep, 0))
    ImageDraw.Draw(canvas).line([(left.width + sep // 2, 0), (left.width + sep // 2, canvas.height)], fill=(0, 0, 0))
    return canvas


def compare_grids(
    a: Collected,
    b: Collected,
    load: Load,
    out_dir: str | Path,
    *,
    labels: tuple[str, str],
    patch: int = 48,
    name: Name | None = None,
    meta: dict | None = None,
    prefix: str = "",
    write_json: bool = True,
    label: str = "",
) -> dict:
    """Per layer ``compare_<prefix><layer>.png``: the same units of two models of one architecture side by
    side; with ``write_json``, ``<prefix>compare.json`` with both top lists and, per unit, how many top
    images the two share. Returns the JSON document."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = _Images(load)
    doc: dict = {
        **(meta or {}),
        "models": list(labels),
        "input_size": list(a.input_hw),
        "n_images": a.n_images,
        "layers": {},
    }
    k = max((len(t) for r in (*a.layers.values(), *b.layers.values()) for t in r.top), default=1)
    for layer, ra in a.layers.items():
        rb = b.layers[layer]
        if ra.geometry != rb.geometry or ra.shape != rb.shape or ra.units != rb.units:
            raise ValueError(
                f"{layer}: the two models differ in architecture here ({ra.geometry}, {ra.shape} vs "
                f"{rb.geometry}, {rb.shape})"
            )
        rows_a, ja = _patches(ra, a.input_hw, images, name)
        rows_b, jb = _patches(rb, b.input_hw, images, name)
        png = out_dir / f"compare_{prefix}{safe_name(layer)}.png"
        _side_by_side(
            _grid(rows_a, ra.units, k, patch, _title(f"{labels[0]}: {label}{layer}", ra)),
            _grid(rows_b, rb.units, k, patch, f"{labels[1]}: {label}{layer}"),
        ).save(png)
        shared = [
            len({t["image_index"] for t in ua["top"]} & {t["image_index"] for t in ub["top"]}) for ua, ub in zip(ja, jb)
        ]
        doc["layers"][layer] = {
            **ra.geometry.as_json(),
            "shape": list(ra.shape),
            "grid": png.name,
            labels[0]: ja,
            labels[1]: jb,
            "shared_top_images": shared,
        }
    if write_json:
        (out_dir / f"{prefix}compare.json").write_text(json.dumps(doc, indent=1))
    return doc
