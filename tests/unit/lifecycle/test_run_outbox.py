"""The outbox of MLflow runs logged later (components/lifecycle/run_outbox.py), without MLflow: what is
pending, in which order, what a flush takes, what it sets aside, when a start sees leftovers."""

from __future__ import annotations

import os
import time

import pytest

from facegate.components.lifecycle import run_outbox


@pytest.fixture
def outbox(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv(run_outbox.FLUSHER_ENV, raising=False)
    return run_outbox.outbox_dir()


def test_entries_are_written_whole_and_flushed_oldest_first(outbox):
    first = run_outbox.put({"run_name": "enrol"})
    run_outbox.put({"run_name": "remove"})
    assert [p.name for p in run_outbox.pending()] == sorted(p.name for p in outbox.glob("*.json"))
    assert not list(outbox.glob(".*.tmp"))  # the temporary name is gone once the file is whole
    (outbox / "00000000000000000001-garbage.json").write_text("{not json")

    seen = []
    assert run_outbox.flush(lambda entry, retried: seen.append((entry, retried)) or entry["run_name"]) == [
        "enrol",
        "remove",
    ]
    assert seen[0][0]["id"] == first.stem and not seen[0][1]
    assert [p.name for p in outbox.iterdir()] == ["00000000000000000001-garbage.bad"]  # set aside, not logged
    assert run_outbox.pending() == []


def test_a_failed_log_puts_the_file_back_and_stops(outbox):
    run_outbox.put({"run_name": "a"})
    run_outbox.put({"run_name": "b"})

    def fail(entry, retried):
        raise ConnectionError("store down")

    with pytest.raises(ConnectionError):
        run_outbox.flush(fail)
    assert sorted(p.suffix for p in outbox.iterdir()) == [".json", ".json"]


def test_leftovers_are_old_files_and_dead_claims_only(outbox, monkeypatch):
    path = run_outbox.put({"run_name": "enrol"})
    assert not run_outbox.leftovers()  # its writer's flusher is starting
    assert run_outbox.leftovers(min_age_s=0.0)
    old = time.time() - 2 * run_outbox.LEFTOVER_AFTER_S
    os.utime(path, (old, old))
    assert run_outbox.leftovers()
    path.rename(path.with_name(f"{path.stem}.claimed-{os.getpid()}"))  # a live flusher has it
    assert not run_outbox.leftovers(min_age_s=0.0) and run_outbox.pending() == []
    monkeypatch.setenv(run_outbox.FLUSHER_ENV, "1")
    assert run_outbox.drain_leftovers(min_age_s=0.0) is None  # a flusher starts no other
