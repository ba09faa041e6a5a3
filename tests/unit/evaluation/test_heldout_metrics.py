"""Held-out verification metrics (facegate.components.evaluation.heldout): TAR at FAR 1e-3 against every impostor
pair the held-out faces make with the pairs' second faces, not the few thousand sampled ones."""

from __future__ import annotations

import numpy as np

from facegate.components.evaluation.heldout import (
    all_impostor_distances,
    evaluate_verification,
    heldout_pairs,
)
from facegate.components.evaluation.verification import threshold_for_far


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_threshold_by_selection_is_the_sorted_one():
    rng = np.random.default_rng(0)
    for n in (1, 10, 999, 5000):
        d = rng.random(n)
        for far in (0.0, 1e-3, 0.01, 0.5, 1.0):
            allowed = int(np.floor(far * n + 1e-9))
            sorted_tau = float("inf") if allowed >= n else float(np.nextafter(np.sort(d)[allowed], -np.inf))
            assert threshold_for_far(d, far) == sorted_tau


def test_all_impostor_distances_are_every_other_identity_pair():
    rng = np.random.default_rng(1)
    emb, second = unit(rng.normal(size=(60, 8))), unit(rng.normal(size=(60, 8)))
    labels, probes = rng.integers(0, 12, 60), np.arange(0, 60, 3)
    got = all_impostor_distances(emb, second, labels, probes, chunk=7)
    want = [np.linalg.norm(emb[i] - second[j]) for i in range(60) for j in probes if labels[i] != labels[j]]
    assert np.allclose(np.sort(got), np.sort(want), atol=1e-5)


def test_tar_is_measured_against_every_impostor_pair():
    """The gate's TAR rests on every held-out face against every other identity's second face (more than
    50x the sampled impostor pairs), in both protocols, and says how many pairs that was."""
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(200), 3)
    centres = unit(rng.normal(size=(200, 32)))
    emb = unit(centres[labels] + 0.08 * rng.normal(size=(600, 32)))
    masked = unit(emb + 0.2 * rng.normal(size=(600, 32)))
    ia, ib, same, _ = heldout_pairs(labels, 600, 0)
    probes = np.unique(ib)
    other = labels[:, None] != labels[probes][None, :]
    for second, given, prefix in ((emb, None, "val_"), (masked, masked, "val_masked_")):
        metrics, _, _ = evaluate_verification(emb, labels, n_pairs=600, seed=0, masked_emb=given, prefix=prefix)
        every = np.linalg.norm(emb[:, None] - second[probes][None], axis=2)[other]
        genuine = np.linalg.norm(emb[ia[same]] - second[ib[same]], axis=1)
        assert metrics[prefix + "impostor_pairs"] == other.sum() > 50 * (~same).sum()
        assert metrics[prefix + "tar_at_far_1e-3"] == (genuine <= threshold_for_far(every, 1e-3)).mean()
    assert metrics["val_masked_tar_at_far_1e-3"] < 1.0
