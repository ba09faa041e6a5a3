"""Face detectors behind one interface, one registry entry each.

A detector returns boxes with scores; 5-point landmarks and the aligned chip come from the shared
landmark model (dlib's 5-point shape predictor) so every detector feeds the embedder the same kind of
chip.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from components.weights import weight_path


@dataclass(frozen=True)
class FaceBox:
    """Pixel box (left, top, right, bottom) in the image it was found in, and the detector's score."""

    left: int
    top: int
    right: int
    bottom: int
    score: float = 1.0

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


class DlibHogDetector:
    """dlib's HOG + linear SVM frontal detector: fast on CPU, frontal faces only."""

    name = "dlib_hog"

    def __init__(self, upsample: int = 1) -> None:
        import dlib

        self.upsample = upsample
        self._det = dlib.get_frontal_face_detector()

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        rects, scores, _ = self._det.run(image, self.upsample, 0.0)
        boxes = [FaceBox(r.left(), r.top(), r.right(), r.bottom(), float(s)) for r, s in zip(rects, scores)]
        return sorted(boxes, key=lambda b: -b.score)


class DlibMmodDetector:
    """dlib's CNN (MMOD) detector: finds turned and smaller faces, ~10x slower than HOG on CPU."""

    name = "dlib_mmod"

    def __init__(self, upsample: int = 0) -> None:
        import dlib

        self.upsample = upsample
        self._det = dlib.cnn_face_detection_model_v1(str(weight_path("dlib_mmod_detector")))

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        found = self._det(image, self.upsample)
        boxes = [FaceBox(d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom(), float(d.confidence))
                 for d in found]
        return sorted(boxes, key=lambda b: -b.score)


class HogThenMmodDetector:
    """HOG first; the CNN only where HOG finds nothing (turned or partly covered faces).

    Pays the CNN's cost only on the hard images: on LFW, HOG misses 62 of 13,233 images, and pairs
    with a missed face are 10x more often wrong.
    """

    name = "hog_then_mmod"

    def __init__(self, upsample: int = 0) -> None:
        self.hog = DlibHogDetector(upsample)
        self.mmod = DlibMmodDetector(upsample=upsample)

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        return self.hog.detect(image) or self.mmod.detect(image)


class YoloFaceMaskDetector:
    """The trained YOLO-style face-mask detector (``detection.registered_model`` @ champion), every class a face.

    Finds the small, turned and masked faces that frontal-face detectors miss (dlib HOG finds 27% of the
    faces of the mask set). Boxes are scored by p_c with one class-agnostic NMS; ``upsample`` is accepted
    for the common interface and unused (the network letterboxes to its own input size).
    """

    name = "yolo_facemask"

    def __init__(self, upsample: int = 0, model_uri: str | None = None) -> None:
        from components.detection.serving import load_detector
        from components.settings import load_settings

        self.upsample = upsample
        self.settings = load_settings().detection
        self.model, self.model_uri = load_detector(self.settings.registered_model, model_uri)

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        from components.detection.serving import detect_array

        s = self.settings
        found = detect_array(self.model, image, s.score_threshold, s.nms_iou, s.max_detections, class_agnostic=True)
        boxes = [FaceBox(int(round(b[0])), int(round(b[1])), int(round(b[2])), int(round(b[3])), float(sc))
                 for b, sc in zip(found.boxes, found.scores)]
        return sorted(boxes, key=lambda b: -b.score)


DETECTORS: dict[str, type] = {cls.name: cls for cls in (DlibHogDetector, DlibMmodDetector, HogThenMmodDetector,
                                                        YoloFaceMaskDetector)}


def make_detector(name: str, **kwargs) -> FaceDetector:
    try:
        return DETECTORS[name](**kwargs)
    except KeyError:
        raise ValueError(f"unknown face detector {name!r} (known: {sorted(DETECTORS)})") from None
