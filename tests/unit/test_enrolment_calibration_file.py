"""The stored calibration tail is written atomically and leaves no temporary file on any path."""
from __future__ import annotations

import numpy as np
import pytest

from components import enrolment
from components.calibration import Calibration
from components.enrolment import EnrolmentStore


def calibration() -> Calibration:
    return Calibration(tau=0.5, target_far=1e-3, achieved_far=1e-3, achieved_tar=0.99, n_impostor_pairs=1000,
                       n_genuine_pairs=100, impostor_tail=np.linspace(0.1, 0.4, 10, dtype=np.float32))


def test_saved_then_no_temporary_file_left(tmp_path):
    store = EnrolmentStore(tmp_path)
    store.save_calibration("facegate-embedder/3", calibration())
    files = sorted(p.name for p in (tmp_path / "calibration").iterdir())
    assert files == ["facegate-embedder_3.npz"]


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def half_written(path, **_):
        with open(path, "wb") as fh:
            fh.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(enrolment.np, "savez", half_written)
    with pytest.raises(OSError):
        EnrolmentStore(tmp_path).save_calibration("v1", calibration())
    assert list((tmp_path / "calibration").iterdir()) == []
