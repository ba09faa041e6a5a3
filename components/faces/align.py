"""5-point landmarks and dlib's face-chip alignment (the chip dlib's ResNet was trained on).

Using dlib's own ``get_face_chip`` keeps the similarity transform, the mean-face template and the
padding bit-identical to the reference, so a port of the descriptor sees exactly the pixels dlib sees.
"""
from __future__ import annotations

import numpy as np

from components.faces.detectors import FaceBox
from components.weights import weight_path

CHIP_SIZE = 150
CHIP_PADDING = 0.25


class FaceAligner:
    """Landmarks for a box, then the size x size aligned chip (uint8 RGB)."""

    def __init__(self, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> None:
        import dlib

        self._dlib = dlib
        self.size = size
        self.padding = padding
        self._shape = dlib.shape_predictor(str(weight_path("dlib_shape_predictor_5")))

    def landmarks(self, image: np.ndarray, box: FaceBox):
        rect = self._dlib.rectangle(box.left, box.top, box.right, box.bottom)
        return self._shape(image, rect)

    def chip(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        shape = self.landmarks(image, box)
        return np.asarray(self._dlib.get_face_chip(image, shape, size=self.size, padding=self.padding))

    def landmark_points(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        shape = self.landmarks(image, box)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
