"""A test frame for the masked-faces picture in the README (docs/identify_masked.jpg): LFW photos side by
side, each face wearing a synthetic mask drawn by facegate.components.faces.masks from the face's own 68
landmarks (dlib's HOG box on the photo), at 2x so the faces sit well above YuNet's smallest.

    .venv/bin/python -m facegate.benchmarks.masked_frame Tony_Blair/Tony_Blair_0002.jpg:surgical \\
        Serena_Williams/Serena_Williams_0002.jpg:cloth --out out/masked_frame.jpg

Then enrol a bare-faced photo of the first person and run ``facegate identify`` on the frame: the boxes
and names come from the service, as for any camera frame.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facegate.components.core.errors import NoFaceFound
from facegate.components.core.images import load_image
from facegate.components.core.paths import datasets_root
from facegate.components.core.settings import MaskSettings
from facegate.components.faces.masks import _predictor, draw_mask


def masked_photo(path: Path, style: str, seed: int, scale: int = 2) -> np.ndarray:
    """The photo at ``scale`` with a ``style`` mask on its largest face (seeded: the same mask every run)."""
    import cv2  # heavy: OpenCV's native module; only the paths that use it load it
    import dlib  # heavy: dlib's native module; only the dlib detectors and the landmark model need it

    img = load_image(path)
    img = cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale), interpolation=cv2.INTER_CUBIC)
    rects = dlib.get_frontal_face_detector()(img, 0)
    if not rects:
        raise NoFaceFound(path, "no face for the mask")
    box = max(rects, key=lambda r: r.area())
    pts = np.array([[p.x, p.y] for p in _predictor()(img, box).parts()], np.float32)
    cfg = MaskSettings(p=1.0, styles=[style], below_nose_p=0.0, tilt_deg=4.0, strap_p=1.0)
    return draw_mask(img, np.random.default_rng(seed), cfg, landmarks=pts)[0]


def main(argv: list[str] | None = None) -> Path:
    from PIL import Image  # heavy: only image paths need Pillow

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos", nargs="+", help="LFW paths relative to lfw/, each with :surgical | :cloth | :n95")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args(argv)
    tiles = []
    for i, spec in enumerate(args.photos):
        rel, _, style = spec.partition(":")
        tiles.append(masked_photo(datasets_root() / "lfw" / rel, style or "surgical", args.seed + i))
    h = min(t.shape[0] for t in tiles)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([t[:h] for t in tiles], axis=1)).save(args.out, quality=92)
    print(args.out)
    return args.out


if __name__ == "__main__":
    main()
