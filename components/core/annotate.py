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
    for (l, t, r, b), label, known in boxes:
        colour = (40, 200, 60) if known else (220, 40, 40)
        draw.rectangle([l, t, r, b], outline=colour, width=width)
        tw = draw.textlength(label)
        draw.rectangle([l, max(0, t - 14), l + tw + 6, t], fill=colour)
        draw.text((l + 3, max(0, t - 13)), label, fill=(255, 255, 255))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out
