"""The calibration copy beside the gallery is written atomically, leaves no temporary file on any path,
and both file formats read back (the first format: one impostor tail per gallery)."""

from __future__ import annotations

import numpy as np
import pytest

from facegate.components.calibration import store as calibration_store
from facegate.components.calibration.store import ModelCalibration, SetScores
from facegate.components.calibration.thresholds import ScoreSketch
from facegate.components.core.paths import use_mlflow_store
from facegate.components.gallery.enrolment import EnrolmentStore


def calibration() -> ModelCalibration:
    imp = ScoreSketch.from_scores(np.linspace(0.5, 1.5, 5000))
    gen = ScoreSketch.from_scores(np.linspace(0.1, 0.7, 300), dense="high")
    return ModelCalibration(
        "dlib_resnet",
        "facegate-embedder/3",
        (SetScores("lfw", imp, gen, 120, 40),),
        detector="yunet",
        chip_geometry="dlib_150",
    )


def test_saved_then_no_temporary_file_left(tmp_path):
    store = EnrolmentStore(tmp_path)
    store.save_calibration("facegate-embedder/3", calibration())
    files = sorted(p.name for p in (tmp_path / "calibration").iterdir())
    assert files == ["facegate-embedder_3.npz"]
    back = store.load_calibration("facegate-embedder/3")
    assert back.embedder_name == "dlib_resnet" and back.detector == "yunet" and not back.legacy
    assert back.sets[0].impostor.n == 5000 and back.sets[0].genuine.n == 300
    assert back.calibration(1e-3).tau == pytest.approx(calibration().calibration(1e-3).tau)


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def half_written(path, **_):
        with open(path, "wb") as fh:
            fh.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(calibration_store.np, "savez", half_written)
    with pytest.raises(OSError):
        EnrolmentStore(tmp_path).save_calibration("v1", calibration())
    assert list((tmp_path / "calibration").iterdir()) == []


def test_first_format_reads_as_one_legacy_set(tmp_path):
    (tmp_path / "calibration").mkdir()
    tail = np.linspace(0.3, 0.6, 11, dtype=np.float32)
    np.savez(tmp_path / "calibration" / "v1.npz", impostor_tail=tail, n_impostor_pairs=1000)
    store = EnrolmentStore(tmp_path)
    cal = store.load_calibration("v1")
    assert cal.legacy and cal.sets[0].impostor.n == 1000
    from facegate.components.calibration.thresholds import tau_for_fpir

    for k in (1, 5):  # the same thresholds the first format gave
        assert cal.impostors().tau_for_fpir(0.01, k) == pytest.approx(tau_for_fpir(tail, 1000, k, 0.01), abs=1e-6)


def test_a_registered_version_keeps_its_calibration_in_mlflow(tmp_path, monkeypatch):
    """Stored with the version (artifact of its run, tau and sets as tags), read back by version."""
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    import mlflow
    import torch

    from facegate.components.lifecycle import registry
    from facegate.components.lifecycle.calibration_artifacts import (
        load_version_calibration,
        log_version_calibration,
        stored_calibration,
    )
    from facegate.components.lifecycle.tracking import ensure_experiment

    use_mlflow_store()
    with mlflow.start_run(experiment_id=ensure_experiment("calibration-test")) as run:
        info = mlflow.pytorch.log_model(
            torch.nn.Linear(2, 2), name="model", pip_requirements=["torch"], serialization_format="pickle"
        )
    version = registry.register(info.model_uri, "m", run_id=run.info.run_id)
    assert load_version_calibration("m", version) is None
    uri = log_version_calibration("m", version, calibration(), 1e-3)
    assert uri.startswith(f"runs:/{run.info.run_id}/calibration/")
    tags = registry.get_version("m", version).tags
    assert float(tags["calibration_tau"]) == pytest.approx(calibration().calibration(1e-3).tau, abs=1e-6)
    back = stored_calibration("dlib_resnet", f"m/{version}")
    assert back is not None and back.sets[0].impostor.n == 5000


def test_a_version_the_registry_does_not_know_has_no_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from facegate.components.lifecycle.calibration_artifacts import load_version_calibration

    assert load_version_calibration("never-registered", "7") is None
