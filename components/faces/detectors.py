"""Face detectors behind one interface, one registry entry each.

A detector returns boxes with scores; 5-point landmarks and the aligned chip come from the shared
landmark model (dlib's 5-point shape predictor) so every detector feeds the embedder the same kind of
chip. Detectors that find landmarks themselves (YuNet) attach them to the box, for the ArcFace
112x112 chip (facegate.components.faces.align).
"""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from typing import ClassVar, TypeVar

import numpy as np

from facegate.components.core.settings import FaceSettings
from facegate.components.core.weights import weight_path
from facegate.components.faces.retinaface import RetinaFaceDetector
from facegate.components.faces.types import FaceBox, FaceDetector


class DlibHogDetector:
    """dlib's HOG + linear SVM frontal detector: fast on CPU, frontal faces only."""

    name: ClassVar[str] = "dlib_hog"

    def __init__(self, upsample: int) -> None:
        import dlib  # heavy: dlib's native module; only the dlib detectors and the landmark model need it

        self.upsample = upsample
        self._det = dlib.get_frontal_face_detector()

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        rects, scores, _ = self._det.run(image, self.upsample, 0.0)
        boxes = [FaceBox(r.left(), r.top(), r.right(), r.bottom(), float(s)) for r, s in zip(rects, scores)]
        return sorted(boxes, key=lambda b: -b.score)


class DlibMmodDetector:
    """dlib's CNN (MMOD) detector: finds turned and smaller faces, ~10x slower than HOG on CPU."""

    name: ClassVar[str] = "dlib_mmod"

    def __init__(self, upsample: int) -> None:
        import dlib  # heavy: dlib's native module; only the dlib detectors and the landmark model need it

        self.upsample = upsample
        self._det = dlib.cnn_face_detection_model_v1(str(weight_path("dlib_mmod_detector")))

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        found = self._det(image, self.upsample)
        boxes = [
            FaceBox(d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom(), float(d.confidence)) for d in found
        ]
        return sorted(boxes, key=lambda b: -b.score)


class HogThenMmodDetector:
    """HOG first; the CNN only where HOG finds nothing (turned or partly covered faces).

    Pays the CNN's cost only on the hard images: on LFW, HOG misses 62 of 13,233 images, and pairs
    with a missed face are 10x more often wrong.
    """

    name: ClassVar[str] = "hog_then_mmod"

    def __init__(self, upsample: int) -> None:
        self.hog = DlibHogDetector(upsample)
        self.mmod = DlibMmodDetector(upsample=upsample)

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        return self.hog.detect(image) or self.mmod.detect(image)


class YuNetDetector:
    """OpenCV Zoo's YuNet (2023mar, MIT) through OpenCV's ``FaceDetectorYN``: boxes and 5 landmarks.

    A ~75k-parameter anchor-free CNN: finds small, turned and masked faces that dlib's HOG misses, at a
    few ms per LFW image on one core. Size policy: the image is resized by ``2**upsample`` (small
    faces), then shrunk so its long side is at most ``max_side`` (a 4K frame costs what a 1280 one does;
    faces below ~10 px at that scale are lost), and boxes and landmarks are mapped back to the input.
    ``score_threshold`` and ``max_side`` are params' ``faces.score_threshold`` / ``faces.max_side``
    (:func:`detector_from_settings` passes them).
    """

    name: ClassVar[str] = "yunet"
    NMS_IOU = 0.3
    TOP_K = 5000
    CACHED_SIZES = 4  # input sizes kept per thread

    def __init__(self, upsample: int, *, score_threshold: float, max_side: int) -> None:
        import cv2  # heavy: OpenCV's native module; only the paths that use it load it

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
            net = self._cv2.FaceDetectorYN.create(
                self._weights, "", (width, height), self.score_threshold, self.NMS_IOU, self.TOP_K
            )
            cache[(width, height)] = net
            while len(cache) > self.CACHED_SIZES:
                cache.popitem(last=False)
        else:
            cache.move_to_end((width, height))
        return net

    def scale_for(self, height: int, width: int) -> float:
        """Resize factor of the size policy: ``2**upsample``, capped so the long side is <= max_side."""
        return min(float(2**self.upsample), self.max_side / max(height, width))

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

    name: ClassVar[str] = "yunet_then_hog"

    def __init__(self, upsample: int, *, score_threshold: float, max_side: int) -> None:
        self.yunet = YuNetDetector(upsample, score_threshold=score_threshold, max_side=max_side)
        self.hog = DlibHogDetector(upsample)

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        return self.yunet.detect(image) or self.hog.detect(image)


class YuNetThenRetinaFaceDetector:
    """YuNet first; RetinaFace-MobileNet0.25 only where YuNet finds nothing (both give 5 landmarks).

    For entrance cameras: YuNet scores a masked face in a dim, blurred, JPEG-heavy frame below its
    threshold (0.3-0.6 where a clean face scores > 0.9), and RetinaFace finds most of those at the same
    threshold (the flywheel's masked no-face frames: 88 of 102; docs/decisions/templates.md). On frames
    YuNet answers it costs nothing; on the rest, one RetinaFace pass (~25 ms a 250 px frame on one core).
    """

    name: ClassVar[str] = "yunet_then_retinaface"

    def __init__(self, upsample: int, *, score_threshold: float, max_side: int) -> None:
        self.yunet = YuNetDetector(upsample, score_threshold=score_threshold, max_side=max_side)
        self.retinaface = RetinaFaceDetector(upsample, score_threshold=score_threshold, max_side=max_side)

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        return self.yunet.detect(image) or self.retinaface.detect(image)


DETECTORS: dict[str, type[FaceDetector]] = {
    cls.name: cls
    for cls in (
        DlibHogDetector,
        DlibMmodDetector,
        HogThenMmodDetector,
        YuNetDetector,
        YuNetThenHogDetector,
        YuNetThenRetinaFaceDetector,
        RetinaFaceDetector,
    )
}


DetectorClass = TypeVar("DetectorClass", bound=type[FaceDetector])


def register_detector(cls: DetectorClass) -> DetectorClass:
    """Add a detector class (by its ``name``) from a layer above this one: the trained YOLO-style detector
    lives with the MLflow model loading (components.lifecycle.detector_models), which this layer must not import."""
    DETECTORS[cls.name] = cls
    return cls


def make_detector(name: str, **kwargs) -> FaceDetector:
    """Detector ``name`` built with exactly ``kwargs`` (a library call: the caller passes every value
    params hold; :func:`detector_from_settings` is the product's way in)."""
    try:
        cls = DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown face detector {name!r} (known: {sorted(DETECTORS)})") from None
    return cls(**kwargs)


FACE_KNOBS = ("upsample", "score_threshold", "max_side")  # params' faces keys a detector may take


def detector_from_settings(faces: FaceSettings, name: str | None = None, **options) -> FaceDetector:
    """The detector params' ``faces.detector`` names (or ``name``), given the ``faces`` knobs its
    constructor takes (upsample; score_threshold and max_side for YuNet and RetinaFace), so no detector
    falls back on a default of its own; ``options`` win over the section."""
    name = name or faces.detector
    if name not in DETECTORS:
        raise ValueError(f"unknown face detector {name!r} (known: {sorted(DETECTORS)})")
    accepted = inspect.signature(DETECTORS[name]).parameters
    knobs = {key: getattr(faces, key) for key in FACE_KNOBS if key in accepted}
    return make_detector(name, **{**knobs, **options})
