"""Seeding a detector training run: every global stream seeded, the process's settings given back."""

from __future__ import annotations

import random

import numpy as np
import torch

from facegate.benchmarks.detect import spread
from facegate.components.detection.seeding import seeded_training


def test_same_seed_same_draws_and_settings_restored():
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    draws = []
    for _ in range(2):
        with seeded_training(7, 1) as rng:
            assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
            draws.append((random.random(), np.random.random(), float(torch.rand(1)), rng.random()))
    assert draws[0] == draws[1]
    with seeded_training(8, 1) as rng:
        assert rng.random() != draws[0][3]
    assert torch.get_num_threads() == threads and torch.are_deterministic_algorithms_enabled() == deterministic


def test_spread_of_seeds():
    s = spread([0.84, 0.86, 0.85])
    assert np.isclose(s["mean"], 0.85) and np.isclose(s["std"], 0.01) and s["min"] == 0.84 and s["max"] == 0.86
    assert spread([0.9])["std"] == 0.0
