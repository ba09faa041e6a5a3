"""Without a trained detector, both the service and the benchmark say which command makes one."""

from __future__ import annotations

import pytest

from facegate.components.core.errors import RegistryError


@pytest.fixture
def no_champion(monkeypatch):
    monkeypatch.setattr("facegate.components.lifecycle.registry.champion", lambda name: None)


def test_load_detector_names_the_training_command(no_champion):
    from facegate.components.lifecycle.detector_models import load_detector

    with pytest.raises(RegistryError, match="facegate train-detector"):
        load_detector("facegate-detector")


def test_detector_benchmark_names_the_training_command(no_champion):
    from facegate.benchmarks.detect import resolve_model

    with pytest.raises(RegistryError, match="facegate train-detector"):
        resolve_model("facegate-detector", None)
    assert resolve_model("x", "runs:/abc/model") == ("runs:/abc/model", "abc")
