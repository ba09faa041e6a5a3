"""Draw boxes and labels on a frame (identify and detect outputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def draw_boxes(image: np.ndarray, boxes: list[tuple[list[int], str, bool]], out: Path) -> Path:
    """``boxes``: (left, top, right, bottom), label, known? — green for known, red for not recognized."""
    img = Image.fromarray(image)
    draw = ImageDraw.Draw(img)
    width = max(2, round(min(img.size) / 200))
    for (left, top, right, bottom), label, known in boxes:
        colour = (40, 200, 60) if known else (220, 40, 40)
        draw.rectangle([left, top, right, bottom], outline=colour, width=width)
        tw = draw.textlength(label)
        draw.rectangle([left, max(0, top - 14), left + tw + 6, top], fill=colour)
        draw.text((left + 3, max(0, top - 13)), label, fill=(255, 255, 255))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out
