"""Cohort score normalisation (s-norm, adaptive top-k) on tiny generated embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from facegate.components.calibration.score_norm import (
    CohortStats,
    cohort_stats,
    cross_scores,
    normalised_pair_scores,
    s_norm_distance,
)


def unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_cohort_stats_whole_and_top_k():
    emb = unit([[1, 0], [0, 1]])
    cohort = unit([[1, 0], [0.6, 0.8], [0, 1], [-1, 0]])
    whole = cohort_stats(emb, cohort)
    sims = emb @ cohort.T
    assert np.allclose(whole.mean, sims.mean(1)) and np.allclose(whole.std, sims.std(1))
    top = cohort_stats(emb, cohort, top_k=2)
    assert np.allclose(top.mean, np.sort(sims, 1)[:, -2:].mean(1))
    with pytest.raises(ValueError):
        cohort_stats(emb, cohort[:1])


def test_s_norm_is_symmetric_and_in_cohort_units():
    a = CohortStats(np.array([0.1]), np.array([0.1]))
    b = CohortStats(np.array([0.3]), np.array([0.2]))
    d = s_norm_distance(np.array([0.5]), a, b)
    assert d[0] == pytest.approx(-((0.5 - 0.1) / 0.1 + (0.5 - 0.3) / 0.2) / 2)
    assert s_norm_distance(np.array([0.5]), b, a)[0] == pytest.approx(d[0])


def test_a_face_close_to_everybody_is_discounted():
    """A 'hub' face (close to the whole cohort) scores less after normalisation than a distinct face
    with the same raw similarity: the point of normalising."""
    rng = np.random.default_rng(0)
    cohort = unit(rng.normal(size=(200, 8)) + np.r_[3.0, np.zeros(7)])  # cohort leans along axis 0
    hub, plain = unit([[1, 0.2, 0, 0, 0, 0, 0, 0]]), unit([[0, 0, 0, 0, 0, 0, 0, 1]])
    other = unit([[0.5, 0.1, 0, 0, 0, 0, 0, 0.5]])
    stats = cohort_stats(np.r_[hub, plain, other], cohort)
    raw = cross_scores(np.r_[hub, plain], other, None, None)[:, 0]
    norm = cross_scores(
        np.r_[hub, plain], other, CohortStats(stats.mean[:2], stats.std[:2]), CohortStats(stats.mean[2:], stats.std[2:])
    )[:, 0]
    assert raw[0] == pytest.approx(raw[1], abs=0.1)
    assert norm[0] > norm[1]  # the hub's match is weaker evidence


def test_normalised_pair_scores_split_by_identity():
    rng = np.random.default_rng(1)
    emb = unit(rng.normal(size=(9, 4)))
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3])
    stats = cohort_stats(emb, unit(rng.normal(size=(20, 4))))
    gen, imp = normalised_pair_scores(emb, labels, stats, chunk=4)
    assert gen.size == 3 + 1 + 3 and imp.size == 36 - 7
    full = cross_scores(emb, emb, stats, stats)
    assert np.isclose(np.sort(np.r_[gen, imp]), np.sort(full[np.triu_indices(9, 1)])).all()
