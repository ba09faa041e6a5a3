"""From an image to aligned face chips: detect, pick, align.

Three ways to pick, because callers need different guarantees: every face (identify a frame), exactly
one face (enrolment, verification: otherwise NoFaceFound / MultipleFaces), and the face nearest the
centre with a centred-box fallback (pre-cropped benchmark images such as LFW, where the protocol
requires an answer for every pair).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegate.components.core.errors import MultipleFaces, NoFaceFound
from facegate.components.faces.align import FaceAligner
from facegate.components.faces.types import FaceBox, FaceDetector


@dataclass(frozen=True)
class FaceCrop:
    box: FaceBox
    chip: np.ndarray  # aligned chip, uint8 RGB
    fallback: bool = False  # True when no detection was made and a centred box was assumed


class FaceFinder:
    def __init__(self, detector: FaceDetector, aligner: FaceAligner | None = None) -> None:
        self.detector = detector
        self.aligner = aligner or FaceAligner()

    def all_faces(self, image: np.ndarray) -> list[FaceCrop]:
        image = np.ascontiguousarray(image)  # dlib's bindings reject strided views
        return [FaceCrop(b, self.aligner.chip(image, b)) for b in self.detector.detect(image)]

    def single_face(self, image: np.ndarray, source: str | Path) -> FaceCrop:
        image = np.ascontiguousarray(image)
        boxes = self.detector.detect(image)
        if not boxes:
            raise NoFaceFound(source, f"no face found by {self.detector.name}")
        if len(boxes) > 1:
            raise MultipleFaces(source, f"{len(boxes)} faces found by {self.detector.name}; exactly one is required")
        return FaceCrop(boxes[0], self.aligner.chip(image, boxes[0]))

    def centre_face(self, image: np.ndarray, fallback_fraction: float = 0.45) -> FaceCrop:
        """The detection nearest the image centre, or a centred box of ``fallback_fraction`` of the side."""
        image = np.ascontiguousarray(image)
        h, w = image.shape[:2]
        boxes = self.detector.detect(image)
        if boxes:
            cx, cy = w / 2.0, h / 2.0
            best = min(boxes, key=lambda b: (b.centre[0] - cx) ** 2 + (b.centre[1] - cy) ** 2)
            return FaceCrop(best, self.aligner.chip(image, best))
        side = fallback_fraction * min(h, w)
        box = FaceBox(int(w / 2 - side / 2), int(h / 2 - side / 2), int(w / 2 + side / 2), int(h / 2 + side / 2), 0.0)
        return FaceCrop(box, self.aligner.chip(image, box), fallback=True)
