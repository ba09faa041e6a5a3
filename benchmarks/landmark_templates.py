"""Where dlib's 5 points and dlib's HOG box sit in the ArcFace 112x112 frame, measured on LFW. Prints JSON.

components/faces/align.py hard-codes the result (DLIB5_IN_ARCFACE, HOG_BOX_IN_ARCFACE): it lets one set
of landmarks give both chip geometries. For each sampled image where both detectors find the face
nearest the centre, YuNet's 5 landmarks set the ArcFace similarity; dlib's 5 points (from the HOG box)
and the HOG box's corners are mapped into that frame; the medians are the constants. Also reports how
far dlib's points land from the HOG-box reference when the model starts from the YuNet box itself vs
from the HOG-like box the YuNet landmarks place (mean error / eye distance).

    python benchmarks/landmark_templates.py --root /work/shared/datasets/lfw --images 1000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from facegate.components.core.images import load_image  # noqa: E402
from facegate.components.core.settings import load_settings  # noqa: E402
from facegate.components.faces.align import ARCFACE_TEMPLATE, FaceAligner, apply_transform, similarity_transform  # noqa: E402
from facegate.components.faces.detectors import detector_from_settings, make_detector  # noqa: E402
from facegate.components.faces.types import FaceBox  # noqa: E402


def _centre_box(boxes: list[FaceBox], h: int, w: int) -> FaceBox | None:
    if not boxes:
        return None
    return min(boxes, key=lambda b: (b.centre[0] - w / 2) ** 2 + (b.centre[1] - h / 2) ** 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("/work/shared/datasets/lfw"))
    ap.add_argument("--images", type=int, default=1000)
    args = ap.parse_args()
    files = sorted(args.root.glob("*/*.jpg"))
    files = files[:: max(1, len(files) // args.images)][: args.images]
    hog, aligner = make_detector("dlib_hog", upsample=1), FaceAligner()
    yunet = detector_from_settings(load_settings().faces, "yunet")
    dlib_pts, hog_corners, err_yunet_box, err_placed_box = [], [], [], []
    for f in files:
        image = load_image(f)
        h, w = image.shape[:2]
        hb, yb = _centre_box(hog.detect(image), h, w), _centre_box(yunet.detect(image), h, w)
        if hb is None or yb is None:
            continue
        to_arcface = similarity_transform(yb.landmarks, ARCFACE_TEMPLATE)
        reference = aligner.landmark_points(image, hb)
        dlib_pts.append(apply_transform(to_arcface, reference))
        hog_corners.append(apply_transform(to_arcface, np.array(hb.as_list(), np.float64).reshape(2, 2)))
        eye_distance = float(np.linalg.norm(yb.landmarks[0] - yb.landmarks[1]))
        plain = FaceBox(yb.left, yb.top, yb.right, yb.bottom, yb.score)  # no landmarks: the YuNet box as is
        for box, errors in ((plain, err_yunet_box), (yb, err_placed_box)):
            points = aligner.landmark_points(image, box)
            errors.append(float(np.linalg.norm(points - reference, axis=1).mean()) / eye_distance)
    print(
        json.dumps(
            {
                "images": len(files),
                "used": len(dlib_pts),
                "dlib5_in_arcface": np.round(np.median(dlib_pts, axis=0), 2).tolist(),
                "hog_box_in_arcface": np.round(np.median(hog_corners, axis=0), 2).tolist(),
                "dlib5_error_over_eye_distance": {
                    "from_yunet_box": round(float(np.mean(err_yunet_box)), 4),
                    "from_placed_hog_like_box": round(float(np.mean(err_placed_box)), 4),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
