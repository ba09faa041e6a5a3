"""Logging a registered version's unit grids never fails the flow that registered it."""

from __future__ import annotations

import numpy as np
from torch import nn

from facegate.components.core.settings import load_settings
from facegate.components.detection.data import DetectionSample
from facegate.components.lifecycle.unit_grids import log_detector_grids


def test_a_failure_is_a_warning_and_off_means_nothing():
    settings = load_settings()
    train = [DetectionSample("a.jpg", np.zeros((40, 40, 3), np.uint8), np.array([[5.0, 5, 30, 30]]), np.array([0]))]
    warnings: list[str] = []
    assert log_detector_grids(nn.Linear(2, 2), "facegate-detector/9", train, "run", settings, warnings.append) is None
    assert len(warnings) == 1 and "grids of facegate-detector/9 were not logged: ExplainUnavailable" in warnings[0]
    off = settings.replace({"explain": {"log_to_mlflow": False}})
    assert log_detector_grids(nn.Linear(2, 2), "x", train, "run", off, warnings.append) is None and len(warnings) == 1
