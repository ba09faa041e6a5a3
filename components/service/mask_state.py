"""Is the person wearing a mask? Read per face from the face-mask detector's class.

The recognition path finds the faces (any detector); the trained face-mask detector (the registry's
``detection.registered_model`` champion) runs on the same frame and each face takes the class of the
detection overlapping it most: ``with_mask``, ``without_mask`` or ``mask_weared_incorrect`` — so the
operator sees "E123, mask on". Without a trained detector the state is unknown (None), never guessed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facegate.components.core.errors import FacegateError
from facegate.components.core.settings import Settings
from facegate.components.faces.boxes import iou_matrix
from facegate.components.faces.types import FaceBox
from facegate.components.lifecycle.detector_models import detect_array, load_detector

MIN_IOU = 0.3  # a detection this close to the face box describes that face
SAY = {"with_mask": "mask on", "without_mask": "no mask", "mask_weared_incorrect": "mask below the nose"}


def assign_mask_states(
    faces: Sequence[FaceBox],
    boxes: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    min_iou: float = MIN_IOU,
) -> list[str | None]:
    """The class of the detection overlapping each face most (None below ``min_iou``)."""
    if not len(faces) or not len(boxes):
        return [None] * len(faces)
    ious = iou_matrix(np.array([f.as_list() for f in faces], np.float32), np.asarray(boxes, np.float32))
    best = ious.argmax(1)
    return [class_names[int(labels[j])] if ious[i, j] >= min_iou else None for i, j in enumerate(best)]


class MaskStateReader:
    """The face-mask detector in service; ``available`` is False when none is trained yet."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.detection
        try:
            self.model, self.model_uri = load_detector(self.settings.registered_model)
        except FacegateError:
            self.model, self.model_uri = None, None

    @property
    def available(self) -> bool:
        return self.model is not None

    def read(self, image: np.ndarray, faces: Sequence[FaceBox]) -> list[str | None]:
        if not self.available or not faces:
            return [None] * len(faces)

        s = self.settings
        found = detect_array(self.model, image, s.score_threshold, s.nms_iou, s.max_detections)
        return assign_mask_states(faces, found.boxes, found.labels, tuple(self.model.class_names))
