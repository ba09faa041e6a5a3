"""5-point landmarks and the two chip geometries: dlib's 150x150 chip and the ArcFace 112x112 chip.

``dlib_150``: dlib's own ``get_face_chip`` keeps the similarity transform, the mean-face template and
the padding bit-identical to the reference, so a port of the descriptor sees exactly the pixels dlib
sees. ``arcface_112``: the 5-point ArcFace template (eye centres, nose tip, mouth corners) that SFace
and most modern embedders were trained on, by the least-squares similarity (Umeyama) that OpenCV's
``FaceRecognizerSF.alignCrop`` uses, and the same bilinear warp.

One set of landmarks, both geometries: a YuNet box carries its 5 landmarks, which give the ArcFace
chip directly; the dlib chip still comes from dlib's 5-point model (dlib's descriptor was trained on
its points: eye corners and nose base, not YuNet's eye centres), run inside a HOG-like box placed by
the YuNet landmarks (the model's starting shape depends on the box; that box halves the gap to the
points found from a HOG box: 1.5% vs 3.0% of the eye distance on LFW). A box without landmarks (dlib's
detectors, the centred fallback) gets ArcFace landmarks from dlib's 5 points instead.
"""

from __future__ import annotations

import numpy as np

from facegate.components.core.weights import weight_path
from facegate.components.faces.types import FaceBox

CHIP_SIZE = 150
CHIP_PADDING = 0.25

ARCFACE_SIZE = 112
# ArcFace / InsightFace 5-point reference for 112x112 chips (as in OpenCV's face_recognize.cpp):
# right eye, left eye, nose tip, right and left mouth corner (YuNet's order).
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]], np.float64
)
# Measured on 998 LFW images (benchmarks/landmark_templates.py): where dlib's 5 points (from a HOG box) and the
# HOG box itself sit, median over images, in the ArcFace frame set by YuNet's landmarks.
DLIB5_IN_ARCFACE = np.array(
    [[78.65, 53.51], [65.08, 53.93], [30.60, 53.87], [44.19, 54.03], [55.03, 80.32]], np.float64
)
HOG_BOX_IN_ARCFACE = np.array([[10.48, 25.87], [96.70, 114.70]], np.float64)  # (left, top), (right, bottom)

PAIRED_GEOMETRY = "dlib_150+arcface_112"  # a fused model's chip: both geometries of one face, stacked
CHIP_GEOMETRIES = {"dlib_150": CHIP_SIZE, "arcface_112": ARCFACE_SIZE, PAIRED_GEOMETRY: CHIP_SIZE}  # -> side
ARCFACE_OFFSET = (CHIP_SIZE - ARCFACE_SIZE) // 2  # where the ArcFace chip sits in a paired chip


def chip_channels(geometry: str) -> int:
    return 6 if geometry == PAIRED_GEOMETRY else 3


def paired_chip(dlib_chip: np.ndarray, arcface: np.ndarray) -> np.ndarray:
    """150 x 150 x 6: dlib's chip in channels 0-2, the 112 ArcFace chip centred in channels 3-5.

    Both templates are mirror-symmetric about the chip's centre, so a flip along the width flips
    both faces at once (flip TTA and mirroring work unchanged on paired chips).
    """
    out = np.zeros((CHIP_SIZE, CHIP_SIZE, 6), np.uint8)
    out[..., :3] = dlib_chip
    o = ARCFACE_OFFSET
    out[o : o + ARCFACE_SIZE, o : o + ARCFACE_SIZE, 3:] = arcface
    return out


def split_paired(chips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dlib chips, ArcFace chips) of N x 150 x 150 x 6 paired chips (views, no copy)."""
    o = ARCFACE_OFFSET
    return chips[..., :3], chips[..., o : o + ARCFACE_SIZE, o : o + ARCFACE_SIZE, 3:]


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2 x 3 matrix of the least-squares similarity (rotation, uniform scale, shift) taking ``src`` to
    ``dst`` (Umeyama 1991; no reflection). Deterministic, unlike a robust estimator (LMEDS picks a
    subset of points and can disagree with OpenCV's alignCrop by many pixels)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sv, vt = np.linalg.svd(cov)
    sign = np.array([1.0, -1.0 if np.linalg.det(cov) < 0 else 1.0])
    rot = u @ np.diag(sign) @ vt
    scale = float((sv * sign).sum() / ((s**2).sum() / len(src)))
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]


def invert_transform(matrix: np.ndarray) -> np.ndarray:
    return np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]


def arcface_chip(image: np.ndarray, landmarks: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """The size x size ArcFace-template chip of 5 YuNet-order landmarks (pixels outside are black)."""
    import cv2  # heavy: OpenCV's native module; only the paths that use it load it

    matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE * (size / ARCFACE_SIZE))
    return cv2.warpAffine(
        np.ascontiguousarray(image),
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


class FaceAligner:
    """Landmarks for a box, then the aligned chip (uint8 RGB) in ``geometry``: ``dlib_150`` (size x size,
    dlib's padding) or ``arcface_112`` (112 x 112; ``size`` and ``padding`` are dlib's and unused)."""

    def __init__(self, size: int = CHIP_SIZE, padding: float = CHIP_PADDING, geometry: str = "dlib_150") -> None:
        import dlib  # heavy: dlib's native module; only the dlib detectors and the landmark model need it

        if geometry not in CHIP_GEOMETRIES:
            raise ValueError(f"unknown chip geometry {geometry!r} (known: {sorted(CHIP_GEOMETRIES)})")
        self._dlib = dlib
        self.geometry = geometry
        self.size = size if geometry in ("dlib_150", PAIRED_GEOMETRY) else CHIP_GEOMETRIES[geometry]
        self.padding = padding
        self._shape = dlib.shape_predictor(str(weight_path("dlib_shape_predictor_5")))

    def landmarks(self, image: np.ndarray, box: FaceBox):
        """dlib's 5-point shape; in a YuNet box, inside the HOG-like box its landmarks place."""
        left, top, right, bottom = box.left, box.top, box.right, box.bottom
        if box.landmarks is not None:
            to_image = invert_transform(similarity_transform(box.landmarks, ARCFACE_TEMPLATE))
            (left, top), (right, bottom) = np.rint(apply_transform(to_image, HOG_BOX_IN_ARCFACE)).astype(int)
        return self._shape(image, self._dlib.rectangle(int(left), int(top), int(right), int(bottom)))

    def chip(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        if self.geometry == "arcface_112":
            return self.arcface_chip(image, box)
        if self.geometry == PAIRED_GEOMETRY:
            return paired_chip(*self.both_chips(image, box))
        return self.dlib_chip(image, box)

    def partial_chip(self, image: np.ndarray, box: FaceBox, geometry: str) -> np.ndarray:
        """This aligner's chip layout with only ``geometry``'s part aligned: a paired chip's ArcFace part
        with zeros where dlib's chip goes (a member that reads only its own part embeds it exactly as
        from the whole chip); any other request, the whole chip."""
        if self.geometry == PAIRED_GEOMETRY and geometry == "arcface_112":
            return paired_chip(np.zeros((self.size, self.size, 3), np.uint8), self.arcface_chip(image, box))
        return self.chip(image, box)

    def dlib_chip(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        shape = self.landmarks(image, box)
        return np.asarray(self._dlib.get_face_chip(image, shape, size=self.size, padding=self.padding))

    def arcface_landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """5 x 2 YuNet-order landmarks: the box's own, else the ArcFace template placed by dlib's 5 points."""
        if box.landmarks is not None:
            return np.asarray(box.landmarks, np.float64)
        dlib_points = self.landmark_points(image, box)
        return apply_transform(invert_transform(similarity_transform(dlib_points, DLIB5_IN_ARCFACE)), ARCFACE_TEMPLATE)

    def arcface_chip(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        return arcface_chip(image, self.arcface_landmarks(image, box))

    def both_chips(self, image: np.ndarray, box: FaceBox) -> tuple[np.ndarray, np.ndarray]:
        """One face, both geometries: (dlib chip, ArcFace chip)."""
        return self.dlib_chip(image, box), self.arcface_chip(image, box)

    def landmark_points(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        shape = self.landmarks(image, box)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
