"""The trained detector in use: loaded from the MLflow registry (alias ``champion``), run on a file or frame."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import ClassVar

import numpy as np

from facegate.components.core.errors import RegistryError
from facegate.components.core.images import load_image
from facegate.components.core.paths import configure_environment, use_mlflow_store
from facegate.components.core.settings import load_settings
from facegate.components.detection.decode import Detections, detect_images
from facegate.components.detection.plots import draw_detections
from facegate.components.faces.detectors import register_detector
from facegate.components.faces.types import FaceBox
from facegate.components.lifecycle import registry

__all__ = ["load_detector", "load_model_uri", "detect_array", "detect_file"]


@functools.lru_cache(maxsize=2)
def load_model_uri(uri: str):
    """The detector logged at ``uri`` (from this project's MLflow store), in eval mode; cached per process."""
    import mlflow  # heavy: MLflow takes seconds to import; only the paths that track or load models need it

    configure_environment()
    use_mlflow_store()
    model = mlflow.pytorch.load_model(uri, map_location="cpu")
    return model.eval()


def load_detector(name: str, model_uri: str | None = None):
    """(model, uri): ``model_uri`` if given, else ``models:/<name>@champion``."""
    if model_uri is None:
        current = registry.champion(name)
        if current is None:
            raise RegistryError(f"registry: model {name!r} has no champion; train one with `facegate train-detector`")
        model_uri = f"models:/{name}@champion"
    return load_model_uri(model_uri), model_uri


def detect_array(
    model,
    image: np.ndarray,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int = 100,
    class_agnostic: bool = False,
) -> Detections:
    return detect_images(
        model,
        [image],
        score_threshold=score_threshold,
        iou_threshold=iou_threshold,
        max_detections=max_detections,
        class_agnostic=class_agnostic,
        batch_size=1,
    )[0]


def detect_file(image_path: Path | str, out: Path | str | None = None, model_uri: str | None = None) -> dict:
    """Boxes, classes and scores for one image; with ``out``, the image with them drawn in."""
    settings = load_settings()
    det = settings.detection
    model, uri = load_detector(det.registered_model, model_uri)
    image = load_image(image_path, settings.images.max_pixels)
    found = detect_array(model, image, det.score_threshold, det.nms_iou, det.max_detections)
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        draw_detections(image, found, tuple(model.class_names)).save(out)
    return {
        "image": str(image_path),
        "model": uri,
        "score_threshold": det.score_threshold,
        "detections": [
            {"box": [round(float(v), 1) for v in b], "label": model.class_names[int(c)], "score": round(float(s), 4)}
            for b, s, c in zip(found.boxes, found.scores, found.labels)
        ],
        "annotated": str(out) if out else None,
    }


@register_detector
class YoloFaceMaskDetector:
    """The trained YOLO-style face-mask detector (``detection.registered_model`` @ champion), every class a face.

    Finds the small, turned and masked faces that frontal-face detectors miss (dlib HOG finds 27% of the
    faces of the mask set). Boxes are scored by p_c with one class-agnostic NMS; ``upsample`` is accepted
    for the common interface and unused (the network letterboxes to its own input size).
    """

    name: ClassVar[str] = "yolo_facemask"

    def __init__(self, upsample: int, model_uri: str | None = None) -> None:
        self.upsample = upsample
        self.settings = load_settings().detection
        self.model, self.model_uri = load_detector(self.settings.registered_model, model_uri)

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        s = self.settings
        found = detect_array(self.model, image, s.score_threshold, s.nms_iou, s.max_detections, class_agnostic=True)
        boxes = [
            FaceBox(int(round(b[0])), int(round(b[1])), int(round(b[2])), int(round(b[3])), float(sc))
            for b, sc in zip(found.boxes, found.scores)
        ]
        return sorted(boxes, key=lambda b: -b.score)
