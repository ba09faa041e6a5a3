"""Pending MLflow records of CLI gallery changes: written at once (atomically), logged later by another
process, each exactly once, a dead flusher's claim taken over; a killed or failed flush loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from facegate.components.core.paths import use_mlflow_store
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

    use_mlflow_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    logged = mlflow.search_runs(experiment_names=["facegate-gallery"])
    assert sorted(logged["params.photos"]) == ["1", "2"]
    assert set(logged["metrics.employees"]) == {2.0} and set(logged["status"]) == {"FINISHED"}
    assert set(logged["tags.gallery_index_version"]) == {"v000001"}


def _outbox_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("FACEGATE_MLFLOW_ARTIFACTS", (tmp_path / "artifacts").as_uri())


def _reap(pid: int, timeout: float = 180.0) -> None:
    """Wait for a flusher this process started (killed or not): a zombie would look alive to a claim check."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"flusher {pid} still running after {timeout} s")


def _gallery_runs(uri: str):
    import mlflow

    use_mlflow_store(uri)
    return mlflow.search_runs(experiment_names=["facegate-gallery"], output_format="list")


def test_a_killed_flusher_leaves_its_record_and_a_later_start_logs_it(tmp_path, monkeypatch):
    """The outbox's promise, with real processes and a real SQLite store: a detached flusher killed while
    it logs leaves the record (claimed by a dead process); the next start's drain logs it, once."""
    from facegate.components.lifecycle import run_outbox
    from facegate.components.service.gallery_changes import pending_records_dir, record_later

    _outbox_env(tmp_path, monkeypatch)
    gate, g = _gate_with_gallery(tmp_path)
    record_later(gate, "enrol", g, {"photos": 1})
    assert run_outbox.drain_leftovers() is None  # a fresh record is its writer's flusher's, not a leftover

    pid = run_outbox.spawn_flush()
    claimed = pending_records_dir() / "never"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the flusher claims the file, then imports MLflow (seconds) to log it
        claims = list(pending_records_dir().glob(f"*.claimed-{pid}"))
        if claims:
            claimed = claims[0]
            break
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    _reap(pid)
    assert claimed.is_file(), "the flusher did not claim the record in time"
    assert [p.name for p in run_outbox.pending()] == [claimed.name]  # a dead process's claim is pending again
    assert not (tmp_path / "mlflow.db").exists() or not _gallery_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")

    drainer = run_outbox.drain_leftovers()  # what any later CLI command or top-level run does at its start
    assert drainer is not None
    _reap(drainer)
    assert not list(pending_records_dir().iterdir())
    runs = _gallery_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["photos"] == "1" and runs[0].data.tags["outbox_id"] == claimed.name.split(".")[0]
    assert runs[0].data.metrics["employees"] == 2.0 and runs[0].data.tags["gallery_index_version"] == "v000001"


def test_a_failed_log_puts_the_record_back_for_the_next_flush(tmp_path, monkeypatch):
    """A store that cannot be written (its folder is a file) fails the flush: the record is back in the
    outbox, unclaimed; once the store is there, the next flush logs it and only it."""
    from facegate.components.service.gallery_changes import flush_records, pending_records_dir, record_later

    _outbox_env(tmp_path, monkeypatch)
    store = tmp_path / "store"
    store.write_text("not a folder")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the record is for this store
    gate, g = _gate_with_gallery(tmp_path)
    record_later(gate, "remove", g)

    with pytest.raises(Exception):  # noqa: B017 - whatever MLflow raises for a store it cannot open
        flush_records()
    left = list(pending_records_dir().iterdir())
    assert len(left) == 1 and left[0].suffix == ".json"

    store.unlink()
    store.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")  # the flusher's own store
    assert len(flush_records()) == 1 and not list(pending_records_dir().iterdir())
    runs = _gallery_runs(uri)  # logged where the record was made for, not in the flusher's store
    assert [r.info.run_name for r in runs] == ["remove"] and runs[0].info.status == "FINISHED"
    assert not (tmp_path / "elsewhere.db").exists()
