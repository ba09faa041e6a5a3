"""`facegate bench duplicates` on a small slice of LFW (one identity in 60): the pretrained model in
service, identity-disjoint calibration (LFW's training split) and measured people (its held-out split),
and the JSON the issue asks for (the figures mean little on so few people: the full run does that)."""

from __future__ import annotations

import numpy as np
import pytest

from facegate.benchmarks.duplicates import run_duplicates_benchmark
from facegate.components.calibration.store import default_face_sets
from facegate.components.core.settings import load_settings
from tests.conftest import shared_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_duplicates_bench_on_a_slice_of_lfw(tmp_path, monkeypatch):
    shared_dataset("lfw")
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "state"))  # no registry: the pretrained model serves
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = load_settings()
    lfw = default_face_sets(settings)[0]
    names = np.unique(lfw.identities)[::60]
    small = lfw.subset(np.flatnonzero(np.isin(lfw.identities, names)))
    result = run_duplicates_benchmark(settings, (10, 40), face_set=small, cache_dir=tmp_path)
    assert result["model_source"].startswith("pretrained") and result["target"] == settings.gallery.duplicate_target
    people = result["people"]
    assert people["calibration_people"] > 0 and people["measured_people"] >= people["measured"] > 40
    assert [r["size"] for r in result["sizes"]] == [10, 40] and result["sizes_skipped"] == []
    for r in result["sizes"]:
        assert r["strangers"] == people["measured"] - r["size"] - len(r["lfw_named_twice"])
        assert r["true_duplicates"] > 0
        assert {"false_refusal_rate", "false_refusal_over_target", "true_duplicates_caught"} <= set(r["one_to_one"])
        assert len(r["refused_strangers"]) == r["false_refusals"] and 0 <= r["true_duplicates_caught"] <= 1
        assert r["false_refusal_over_target"] == pytest.approx(r["false_refusal_rate"] / result["target"], rel=1e-2)
