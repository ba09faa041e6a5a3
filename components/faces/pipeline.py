"""From an image to aligned face chips: detect, pick, align.

Three ways to pick, because callers need different guarantees: every face (identify a frame), exactly
one face (enrolment, verification: otherwise NoFaceFound / MultipleFaces), and the face nearest the
centre with a centred-box fallback (pre-cropped benchmark images such as LFW, where the protocol
requires an answer for every pair).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from facegate.components.core.errors import MultipleFaces, NoFaceFound
from facegate.components.faces.align import FaceAligner
from facegate.components.faces.types import FaceBox, FaceDetector


class FaceCrop:
    """A face's box and its aligned chip (uint8 RGB, the model's chip geometry). ``fallback``: no
    detection was made and a centred box was assumed.

    ``all_faces`` defers the alignment: ``chip`` is computed on first use, and ``chip_for(geometry)``
    aligns only that geometry's part of a paired chip. Why: the cascade's cheap pass needs only its
    member's ArcFace chip, and a face it decides never pays for dlib's landmarks and warp (2.8 of ~15 ms
    a frame at the door, measured on LFW frames); the full path and the captures still get the whole chip.
    """

    __slots__ = ("box", "fallback", "_chip", "_image", "_aligner", "_lock")

    def __init__(
        self,
        box: FaceBox,
        chip: np.ndarray | None = None,
        fallback: bool = False,
        *,
        image: np.ndarray | None = None,
        aligner: FaceAligner | None = None,
    ) -> None:
        if chip is None and (image is None or aligner is None):
            raise ValueError("a FaceCrop needs its chip, or the image and the aligner to make it")
        self.box, self.fallback = box, fallback
        self._chip, self._image, self._aligner = chip, image, aligner
        self._lock = threading.Lock()

    @property
    def chip(self) -> np.ndarray:
        if self._chip is None:
            with self._lock:  # the batching threads may ask for it at once
                if self._chip is None:
                    assert self._image is not None and self._aligner is not None
                    self._chip = self._aligner.chip(self._image, self.box)
                    self._image = None  # the frame is no longer needed
        return self._chip

    def __getstate__(self) -> dict:
        """Pickled with its chip made (caches of faces keep it; a lock and the frame do not travel)."""
        return {"box": self.box, "chip": self.chip, "fallback": self.fallback}

    def __setstate__(self, state: dict) -> None:
        """From ``__getstate__``'s dict, which is also what the earlier dataclass pickled."""
        self.box, self._chip, self.fallback = state["box"], state["chip"], state.get("fallback", False)
        self._image, self._aligner, self._lock = None, None, threading.Lock()

    def __repr__(self) -> str:
        return f"FaceCrop(box={self.box!r}, aligned={self._chip is not None}, fallback={self.fallback})"

    def chip_for(self, geometry: str) -> np.ndarray:
        """The chip in the model's layout with at least ``geometry``'s part aligned: the whole chip once
        it exists, else (a paired chip, one member asked for) that member's part alone, zeros beside it."""
        image, aligner = self._image, self._aligner
        if self._chip is not None or image is None or aligner is None:
            return self.chip
        return aligner.partial_chip(image, self.box, geometry)


class FaceFinder:
    def __init__(self, detector: FaceDetector, aligner: FaceAligner | None = None) -> None:
        self.detector = detector
        self.aligner = aligner or FaceAligner()

    def all_faces(self, image: np.ndarray) -> list[FaceCrop]:
        image = np.ascontiguousarray(image)  # dlib's bindings reject strided views
        return [FaceCrop(b, image=image, aligner=self.aligner) for b in self.detector.detect(image)]

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
