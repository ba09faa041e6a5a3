"""PAD data by subject: folders read into samples, folds and held-out splits that never cut a subject."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegate.components.core.errors import DatasetError
from facegate.components.pad.data import folder_samples, heldout_subjects, nuaa_samples, subject_folds, subjects_of


def _jpg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)


def test_nuaa_layout_and_site_folders(tmp_path: Path) -> None:
    for sub in ("0001", "0002"):
        _jpg(tmp_path / "nuaa" / "live" / sub / "a.jpg")
        _jpg(tmp_path / "nuaa" / "print" / sub / "b.jpg")
    samples = nuaa_samples(tmp_path / "nuaa")
    assert [(s.subject, s.live, s.kind) for s in samples] == [
        ("0001", True, "live"),
        ("0002", True, "live"),
        ("0001", False, "print"),
        ("0002", False, "print"),
    ]
    _jpg(tmp_path / "site" / "live" / "x.png")
    _jpg(tmp_path / "site" / "phone" / "y.jpg")
    site = folder_samples(tmp_path / "site" / "live", {"screen": tmp_path / "site" / "phone"})
    assert [(s.subject, s.kind) for s in site] == [(None, "live"), (None, "screen")]
    with pytest.raises(DatasetError, match="no images"):
        folder_samples(tmp_path / "site" / "live", {"mask": tmp_path / "missing"})
    with pytest.raises(DatasetError, match="print"):  # live/ but no print/
        nuaa_samples(tmp_path / "site")
    with pytest.raises(DatasetError, match="not a PAD set"):
        nuaa_samples(tmp_path / "nothing")


def test_folds_and_held_out_split_are_by_subject_and_seeded() -> None:
    subjects = [f"{i:04d}" for i in range(1, 10)]
    folds = subject_folds(subjects, 3, seed=7)
    assert sorted(s for f in folds for s in f) == subjects and all(len(f) == 3 for f in folds)
    assert folds == subject_folds(list(reversed(subjects)), 3, seed=7)
    assert [len(f) for f in subject_folds(subjects, 50, seed=7)] == [1] * 9  # leave one subject out
    train, held = heldout_subjects(subjects, 3, seed=7)
    assert len(held) == 3 and sorted(train + held) == subjects
    with pytest.raises(DatasetError):
        heldout_subjects(subjects, 9, seed=7)
    assert subjects_of([]) == []
