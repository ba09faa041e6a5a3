"""Pending MLflow records of CLI gallery changes: written at once (atomically), logged later by another
process, each exactly once, a dead flusher's claim taken over."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from facegate.components.core.settings import load_settings
from facegate.components.gallery import Gallery
from facegate.components.gallery.enrolment import EnrolmentStore


def _gate_with_gallery(tmp_path):
    from facegate.components.service.facade import FaceGate

    store = EnrolmentStore(tmp_path / "gallery")
    g = Gallery.new(4, "tiny", "sha256:0123456789abcdef", tau=0.7, target_far=1e-3)
    v = np.eye(4, dtype=np.float32)
    g.add("E1", "Ann", v[:1], ["photos/E1/a.jpg"])
    g.add("E2", "Bob", v[1:2], ["photos/E2/b.jpg"])
    g.save(store.index_dir)
    return FaceGate(load_settings(), store=store, access_log=False), g


def test_pending_records_are_logged_once_then_cleared(tmp_path, monkeypatch):
    import mlflow

    from facegate.components.service.gallery_changes import flush_records, pending_records_dir, record_later

    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("FACEGATE_MLFLOW_ARTIFACTS", (tmp_path / "artifacts").as_uri())
    gate, g = _gate_with_gallery(tmp_path)

    summary = record_later(gate, "enrol", g, {"photos": 1})
    record_later(gate, "enrol", g, {"photos": 2})
    assert summary["employees"] == 2 and summary["gallery_index_version"] == "v000001"
    files = sorted(pending_records_dir().glob("*.json"))
    assert len(files) == 2 and not list(pending_records_dir().glob(".*.tmp"))
    assert json.loads(files[0].read_text())["params"] == {"photos": 1}

    # a claim left by a process that is gone (its pid no longer exists) is taken over
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    ).stdout.strip()
    files[1].rename(pending_records_dir() / f"{files[1].stem}.claimed-{dead}")

    runs = flush_records()
    assert len(runs) == 2 and not list(pending_records_dir().iterdir())
    assert flush_records() == []  # nothing left: nothing logged twice

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    logged = mlflow.search_runs(experiment_names=["facegate-gallery"])
    assert sorted(logged["params.photos"]) == ["1", "2"]
    assert set(logged["metrics.employees"]) == {2.0} and set(logged["status"]) == {"FINISHED"}
    assert set(logged["tags.gallery_index_version"]) == {"v000001"}
