"""Small-gallery identification thresholds: the stored tail moved by the enrolled employees' bulk shift,
and the benchmark's stranger-level FPIR interval."""

from __future__ import annotations

import numpy as np
import pytest

from facegate.components.calibration.thresholds import (
    BulkShift,
    ImpostorScores,
    ScoreSketch,
    bulk_moments,
    deployment_scores,
    far_per_comparison,
)


def stored_scores(n=300_000, seed=0):
    return np.random.default_rng(seed).normal(1.0, 0.05, n)


def test_sketch_bulk_moments_match_the_scores():
    s = stored_scores()
    sketch = ScoreSketch.from_scores(s)  # 300k scores in ~2,600 knots: the bulk is interpolated
    assert sketch.ranks.size < 3000
    np.testing.assert_allclose(sketch.bulk_moments(), bulk_moments(s), rtol=2e-4)
    m, sd = bulk_moments(s)
    assert m < s.mean() and sd < s.std()  # the closest 90%: the side the tail is on


def test_a_shifted_domain_moves_the_identification_tau_with_its_bulk():
    base = stored_scores()
    scores = ImpostorScores(ScoreSketch.from_scores(base))
    # a deployment whose impostor distances are the stored ones moved closer and spread wider
    local = 0.97 + 1.2 * (stored_scores(50_000, seed=1) - 1.0)
    adapted = deployment_scores(scores, local, min_pairs=10**9, prior_pairs=0, shift_prior_pairs=0)
    assert adapted.shifted and not adapted.blended
    k, far = 20, far_per_comparison(0.01, 20)
    tau = adapted.tau_for_fpir(0.01, k)
    expected = np.quantile(0.97 + 1.2 * (base - 1.0), far)  # the transformed population's quantile
    assert tau == pytest.approx(expected, abs=2e-3)
    assert tau < scores.tau_for_fpir(0.01, k) - 0.02  # stricter than the stored tail alone
    assert adapted.fpir(tau, k) <= 0.01 < adapted.fpir(tau + 0.01, k)  # the estimate agrees with tau
    # 1:1 stays with the stored tail (and the blend): verification is not shifted
    assert adapted.tau_for_far(1e-3) == scores.tau_for_far(1e-3)
    assert adapted.far(0.85) == scores.far(0.85)


def test_the_shift_is_shrunk_by_how_many_pairs_support_it():
    scores = ImpostorScores(ScoreSketch.from_scores(stored_scores()))
    rng = np.random.default_rng(2)
    plain = scores.tau_for_fpir(0.01, 20)
    taus = []
    for pairs in (10, 190, 5000):
        local = 0.95 + (rng.normal(1.0, 0.05, pairs) - 1.0)
        a = deployment_scores(scores, local, 10**9, 0, shift_prior_pairs=100)
        assert a.shift.weight == pytest.approx(pairs / (pairs + 100))
        taus.append(a.tau_for_fpir(0.01, 20))
    assert plain > taus[0] > taus[1] > taus[2]  # more pairs: closer to the full 0.05 shift
    assert taus[2] == pytest.approx(plain - 0.05 * 5000 / 5100, abs=4e-3)
    # off, or too few pairs to place a bulk: the stored tail alone
    assert deployment_scores(scores, rng.normal(0.9, 0.05, 500), 10**9, 0, None).tau_for_fpir(0.01, 20) == plain
    assert deployment_scores(scores, np.array([0.9]), 10**9, 0, 100).shift is None
    assert BulkShift.from_scores(np.full(5, 0.9), 100) is None  # no spread: nothing to scale by


def test_stranger_interval_counts_people_not_photos():
    from facegate.benchmarks.calibration import stranger_interval

    who = np.repeat(np.arange(40), 10)  # 40 strangers, 10 photos each
    accepted = np.zeros(400, bool)
    accepted[:8] = True  # every accept from one stranger's photos
    one = stranger_interval(accepted, who)
    assert one["strangers_with_accepts"] == 1 and one["accepts_by_stranger"] == {"0": 8}
    spread = np.zeros(400, bool)
    spread[::50] = True  # the same 8 accepts from 8 different strangers
    many = stranger_interval(spread, who)
    assert many["strangers_with_accepts"] == 8
    lo1, hi1 = one["fpir_95"]
    lo8, hi8 = many["fpir_95"]
    assert lo1 == 0.0 and lo8 > 0.0 and hi1 > hi8  # one person's photos falling together: less certain
    none = stranger_interval(np.zeros(400, bool), who)
    assert none["fpir_95"] == [0.0, pytest.approx(1 - 0.05 ** (1 / 40))]
