"""What a face detector returns and the interface every detector offers (one registry: faces/detectors.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np


@dataclass(frozen=True)
class FaceBox:
    """Pixel box (left, top, right, bottom) in the image it was found in, and the detector's score.

    ``landmarks``: 5 x 2 float pixel points in YuNet's order (right eye, left eye, nose tip, right and
    left mouth corner; "right" is the person's right, the image's left) where the detector finds them,
    else None (dlib's detectors: the aligner then runs dlib's landmark model inside the box).
    """

    left: int
    top: int
    right: int
    bottom: int
    score: float = 1.0
    landmarks: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def area(self) -> int:
        return max(0, self.right - self.left) * max(0, self.bottom - self.top)

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.left + self.right) / 2.0, (self.top + self.bottom) / 2.0)

    def as_list(self) -> list[int]:
        return [self.left, self.top, self.right, self.bottom]


class FaceDetector(Protocol):
    name: ClassVar[str]

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Faces in an H x W x 3 uint8 RGB image, best first."""
