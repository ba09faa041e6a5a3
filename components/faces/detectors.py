"""Face detectors behind one interface, one registry entry each.

A detector returns boxes with scores; 5-point landmarks and the aligned chip come from the shared
landmark model (dlib's 5-point shape predictor) so every detector feeds the embedder the same kind of
chip. Detectors that find landmarks themselves (YuNet) attach them to the box, for the ArcFace
112x112 chip (components.faces.align).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np

from components.weights import weight_path


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


class YuNetDetector:
    """OpenCV Zoo's YuNet (2023mar, MIT) through OpenCV's ``FaceDetectorYN``: boxes and 5 landmarks.

    A ~75k-parameter anchor-free CNN: finds small, turned and masked faces that dlib's HOG misses, at a
    few ms per LFW image on one core. Size policy: the image is resized by ``2**upsample`` (small
    faces), then shrunk so its long side is at most ``max_side`` (a 4K frame costs what a 1280 one does;
    faces below ~10 px at that scale are lost), and boxes and landmarks are mapped back to the input.
    ``score_threshold`` and ``max_side`` default to ``faces.score_threshold`` / ``faces.max_side``.
    """

    name = "yunet"
    NMS_IOU = 0.3
    TOP_K = 5000
    CACHED_SIZES = 4  # input sizes kept per thread

    def __init__(self, upsample: int = 0, score_threshold: float | None = None, max_side: int | None = None) -> None:
        import cv2

        if score_threshold is None or max_side is None:
            from components.settings import load_settings

            faces = load_settings().faces
            score_threshold = faces.score_threshold if score_threshold is None else score_threshold
            max_side = faces.max_side if max_side is None else max_side
        self.upsample, self.score_threshold, self.max_side = upsample, float(score_threshold), int(max_side)
        self._cv2 = cv2
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # a per-model backend WARN line, not ours
        self._weights = str(weight_path("yunet_2023mar"))
        self._local = threading.local()  # per thread: setInputSize + detect mutate an OpenCV object
        self._net(320, 320)  # load once here: a missing or bad weight file fails at construction

    def _net(self, width: int, height: int):
        """This thread's FaceDetectorYN for this input size: OpenCV re-plans the network whenever the
        size changes, so frames of a few camera sizes each keep an instance (the last few sizes)."""
        cache = getattr(self._local, "nets", None)
        if cache is None:
            cache = self._local.nets = OrderedDict()
        net = cache.get((width, height))
        if net is None:
            net = self._cv2.FaceDetectorYN.create(self._weights, "", (width, height), self.score_threshold,
                                                  self.NMS_IOU, self.TOP_K)
            cache[(width, height)] = net
            while len(cache) > self.CACHED_SIZES:
                cache.popitem(last=False)
        else:
            cache.move_to_end((width, height))
        return net

    def scale_for(self, height: int, width: int) -> float:
        """Resize factor of the size policy: ``2**upsample``, capped so the long side is <= max_side."""
        return min(float(2 ** self.upsample), self.max_side / max(height, width))

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        cv2 = self._cv2
        h, w = image.shape[:2]
        scale = self.scale_for(h, w)
        small = np.ascontiguousarray(image)
        if scale != 1.0:  # resized first: the colour swap then touches the detector's pixels only
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = cv2.resize(small, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
        sh, sw = bgr.shape[:2]
        _, found = self._net(sw, sh).detect(bgr)
        if found is None:
            return []
        fx, fy = w / sw, h / sh  # exact inverse of the rounding above
        boxes = []
        for row in found:
            x, y, bw, bh = row[:4]
            marks = row[4:14].reshape(5, 2).astype(np.float64) * (fx, fy)
            left, top = int(round(max(0.0, x * fx))), int(round(max(0.0, y * fy)))
            right, bottom = int(round(min(w, (x + bw) * fx))), int(round(min(h, (y + bh) * fy)))
            if right > left and bottom > top:
                boxes.append(FaceBox(left, top, right, bottom, float(row[14]), marks.astype(np.float32)))
        return sorted(boxes, key=lambda b: -b.score)


class YuNetThenHogDetector:
    """YuNet first; dlib's HOG only where YuNet finds nothing (its boxes carry no landmarks).

    A cascade in the spirit of ``hog_then_mmod``: the second detector costs nothing on the images the
    first one handles, and the pair misses only what both miss.
    """

    name = "yunet_then_hog"

    def __init__(self, upsample: int = 0, **yunet_options) -> None:
        self.yunet = YuNetDetector(upsample, **yunet_options)
        self.hog = DlibHogDetector(upsample)

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        return self.yunet.detect(image) or self.hog.detect(image)


from components.detection.retinaface import RetinaFaceDetector  # noqa: E402 - RetinaFace-mnet0.25 in torch, 5 landmarks

DETECTORS: dict[str, type] = {cls.name: cls for cls in (DlibHogDetector, DlibMmodDetector, HogThenMmodDetector,
                                                        YoloFaceMaskDetector, YuNetDetector, YuNetThenHogDetector,
                                                        RetinaFaceDetector)}


def make_detector(name: str, **kwargs) -> FaceDetector:
    try:
        return DETECTORS[name](**kwargs)
    except KeyError:
        raise ValueError(f"unknown face detector {name!r} (known: {sorted(DETECTORS)})") from None
