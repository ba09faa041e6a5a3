"""`bench detect --seeds N`: N trainings from the params' seed upwards, per seed and mean / spread; the
same seed gives the same held-out figures (every random stream seeded)."""

from __future__ import annotations

import dataclasses

import pytest

from facegate.benchmarks.detect import RARE_CLASS, seeds_benchmark
from facegate.components.detection.train import DetectTrainConfig
from tests.unit.detection.test_two_stage import _cfg, _samples

KEYS = ("map50", "pycocotools_map50", f"ap50_{RARE_CLASS}", "map50_95")


def test_seeds_benchmark_is_repeatable_and_summarised():
    cfg = _cfg(frozen_epochs=2, finetune_epochs=1, seed=5)
    eval_cfg = dataclasses.make_dataclass(
        "E", ["classes", "eval_score_threshold", "nms_iou", "max_detections", "device"]
    )(cfg.classes, 0.01, 0.45, 100, "cpu")
    train, val = _samples(8, 0), _samples(4, 1)
    first = seeds_benchmark(train, val, cfg, eval_cfg, 2)
    again = seeds_benchmark(train, val, cfg, eval_cfg, 1)
    assert first["seeds"] == [5, 6] and again["seeds"] == [5]
    assert all(first["per_seed"][0][k] == again["per_seed"][0][k] for k in KEYS)  # same seed, same figures
    assert set(first["summary"]) == {"map50", "pycocotools_map50", f"ap50_{RARE_CLASS}", "train_minutes"}
    s = first["summary"]["map50"]
    assert s["min"] <= s["mean"] <= s["max"] and s["std"] >= 0
    assert all(r["train_minutes"] > 0 and r["load_1min"] >= 0 for r in first["per_seed"])
    assert pytest.approx(s["mean"]) == sum(r["map50"] for r in first["per_seed"]) / 2


def test_eval_config_fields_exist():
    names = {f.name for f in dataclasses.fields(DetectTrainConfig)}
    assert {"classes", "eval_score_threshold", "nms_iou", "max_detections", "device"} <= names
