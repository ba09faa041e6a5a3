"""Score sketches, FAR/FPIR estimates, thresholds and the deployment-side recalibration blend."""

from __future__ import annotations

import numpy as np
import pytest

from facegate.components.calibration.thresholds import (
    ImpostorScores,
    ScoreSketch,
    calibrate_tau,
    far_per_comparison,
    fpir_of_far,
    local_impostor_distances,
    recalibration_weight,
)


def scores(n=200_000, seed=0):
    return np.random.default_rng(seed).normal(1.2, 0.1, n)


def test_sketch_is_small_and_exact_at_the_dense_end():
    s = scores()
    sk = ScoreSketch.from_scores(s, exact=500, knots=300)
    assert sk.n == s.size and len(sk.ranks) < 1000
    srt = np.sort(s)
    for r in (0, 10, 499):  # every rank of the dense end is a knot: counts there are exact
        assert sk.count_at_most(srt[r]) == (s <= srt[r]).sum()
    for q in (0.01, 0.1, 0.5, 0.9):  # elsewhere interpolated within the knot spacing
        d = np.quantile(s, q)
        assert sk.share_at_most(d) == pytest.approx((s <= d).mean(), rel=0.02)
    assert sk.share_at_most(srt[0] - 1) == 0 and sk.share_at_most(srt[-1]) == 1


def test_threshold_for_share_matches_calibrate_tau():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(80), 3)
    emb = rng.normal(size=(240, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cal = calibrate_tau(emb, labels, 1e-3)
    from facegate.components.calibration.thresholds import all_pair_distances

    _, imp = all_pair_distances(emb, labels)
    sk = ScoreSketch.from_scores(imp)
    assert sk.threshold_for_share(1e-3) == pytest.approx(cal.tau, abs=1e-6)
    assert (imp <= sk.threshold_for_share(1e-3)).mean() == cal.achieved_far  # the same decisions


def test_dense_high_keeps_the_largest_scores_exact():
    s = scores(50_000, 1)
    sk = ScoreSketch.from_scores(s, dense="high", exact=200, knots=100)
    srt = np.sort(s)
    assert sk.count_at_most(srt[-150]) == (s <= srt[-150]).sum()
    with pytest.raises(ValueError):
        ScoreSketch.from_scores(s, dense="middle")
    with pytest.raises(ValueError):
        ScoreSketch.from_scores(np.array([]))


def test_sketch_round_trips_through_arrays():
    sk = ScoreSketch.from_scores(scores(5000))
    back = ScoreSketch.from_arrays(sk.to_arrays("x"), "x")
    assert back.n == sk.n and np.array_equal(back.ranks, sk.ranks) and np.allclose(back.values, sk.values)


def test_far_estimate_and_fpir_at_gallery_size():
    imp = ImpostorScores(ScoreSketch.from_scores(np.arange(1000) / 1000.0))
    assert imp.far(0.0095) == pytest.approx(0.01)  # ten of 1000 impostor scores are <= 0.0095
    assert imp.fpir(0.0095, 1) == pytest.approx(0.01)
    assert imp.fpir(0.0095, 100) == pytest.approx(1 - 0.99**100)
    assert fpir_of_far(0.0, 10) == 0.0 and fpir_of_far(1.0, 10) == 1.0
    assert fpir_of_far(far_per_comparison(0.01, 500), 500) == pytest.approx(0.01)
    tau = imp.tau_for_fpir(0.01, 10)  # per-comparison FAR ~1.005e-3: one impostor of 1000 may pass
    assert imp.far(tau) <= far_per_comparison(0.01, 10) and tau < 0.002


def test_several_stored_sets_give_the_stricter_threshold():
    easy = ScoreSketch.from_scores(np.linspace(0.8, 1.6, 10_000))
    hard = ScoreSketch.from_scores(np.linspace(0.5, 1.5, 10_000))
    both = ImpostorScores((easy, hard))
    assert both.far(0.7) == pytest.approx(hard.share_at_most(0.7))
    tau = both.tau_for_far(1e-2)
    assert tau == pytest.approx(ImpostorScores(hard).tau_for_far(1e-2), abs=1e-3)
    assert both.far(tau) <= 1e-2


def test_recalibration_weight_and_blend():
    assert recalibration_weight(500, min_pairs=1000, prior_pairs=10_000) == 0.0
    assert recalibration_weight(10_000, min_pairs=1000, prior_pairs=10_000) == pytest.approx(0.5)
    stored = ScoreSketch.from_scores(np.linspace(1.0, 2.0, 10_001))
    local = ScoreSketch.from_scores(np.linspace(0.5, 1.5, 10_001))  # the deployment's faces sit closer
    plain, blended = ImpostorScores(stored), ImpostorScores(stored, local, 0.5)
    d = 1.05
    assert blended.far(d) == pytest.approx(0.5 * stored.share_at_most(d) + 0.5 * local.share_at_most(d))
    t_plain, t_blend = plain.tau_for_far(1e-2), blended.tau_for_far(1e-2)
    assert t_blend < t_plain  # closer impostors in the deployment: a stricter tau
    assert blended.far(t_blend) <= 1e-2 and blended.far(t_blend + 1e-3) > 1e-2 - 1e-4
    assert ImpostorScores(stored, local, 0.0).tau_for_far(1e-2) == t_plain


def test_local_impostor_distances_between_employees_only():
    v = np.eye(4, dtype=np.float32)[[0, 0, 1, 2]]
    d = local_impostor_distances(v, np.array(["a", "a", "b", "c"]))
    assert d.size == 5 and np.allclose(d, np.sqrt(2))  # a-b twice, a-c twice, b-c once; a-a excluded
    assert local_impostor_distances(v[:2], np.array(["a", "a"])).size == 0
    many = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    many /= np.linalg.norm(many, axis=1, keepdims=True)
    assert local_impostor_distances(many, np.arange(50), max_people=10).size == 45


def test_local_pairs_recalibrate_only_the_fars_they_can_speak_for():
    stored = ScoreSketch.from_scores(np.linspace(1.0, 2.0, 100_001))
    local = ScoreSketch.from_scores(np.linspace(0.5, 1.5, 1_001))  # 1,001 local pairs
    blended = ImpostorScores(stored, local, 0.9, min_local_tail=25)
    plain = ImpostorScores(stored)
    assert blended.tau_for_far(1e-1) < plain.tau_for_far(1e-1)  # ~100 local pairs below: blended
    assert blended.tau_for_far(1e-2) == plain.tau_for_far(1e-2)  # ~10 local pairs: the stored tail decides
    assert blended.far(0.51) == plain.far(0.51)  # FAR estimates follow the same rule
    assert blended.far(0.8) > plain.far(0.8)
