"""yunet_then_retinaface: RetinaFace only on frames where YuNet finds no face (an entrance camera's masked,
dark, blurred faces score below YuNet's threshold: docs/decisions/templates.md)."""

from __future__ import annotations

import numpy as np

from facegate.components.core.settings import load_settings
from facegate.components.faces.detectors import DETECTORS, YuNetThenRetinaFaceDetector, detector_from_settings
from facegate.components.faces.types import FaceBox


class Stub:
    def __init__(self, boxes: list[FaceBox]) -> None:
        self.boxes, self.calls = boxes, 0

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        self.calls += 1
        return self.boxes


def cascade(first: list[FaceBox], second: list[FaceBox]) -> YuNetThenRetinaFaceDetector:
    det = object.__new__(YuNetThenRetinaFaceDetector)  # no weights: the two detectors stubbed
    det.yunet, det.retinaface = Stub(first), Stub(second)
    return det


def test_retinaface_runs_only_where_yunet_finds_nothing():
    frame = np.zeros((50, 50, 3), np.uint8)
    yunet_box, retina_box = FaceBox(1, 1, 20, 20, 0.9), FaceBox(2, 2, 22, 22, 0.7)
    det = cascade([yunet_box], [retina_box])
    assert det.detect(frame) == [yunet_box] and det.retinaface.calls == 0
    det = cascade([], [retina_box])
    assert det.detect(frame) == [retina_box] and det.yunet.calls == det.retinaface.calls == 1


def test_registered_and_built_from_params_knobs():
    assert DETECTORS["yunet_then_retinaface"] is YuNetThenRetinaFaceDetector
    det = detector_from_settings(load_settings().faces, "yunet_then_retinaface")
    assert det.yunet.score_threshold == det.retinaface.score_threshold == load_settings().faces.score_threshold
