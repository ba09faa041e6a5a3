"""ISO/IEC 30107-3 figures and the threshold for a target APCER."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from facegate.components.pad.calibration import (
    PadCalibration,
    bpcer_at_apcer,
    det_points,
    error_rates,
    iso_figures,
    roc_auc,
    subject_robust_threshold,
    threshold_for_apcer,
    unseen_subject_threshold,
    worst_subject_threshold,
)


def test_threshold_lets_through_at_most_the_target_share_of_attacks() -> None:
    attacks = np.arange(100) / 100.0  # 0.00 .. 0.99
    assert threshold_for_apcer(attacks, 0.0) == 0.99  # nothing passes: score > max
    assert threshold_for_apcer(attacks, 0.01) == 0.98  # one passes
    assert threshold_for_apcer(attacks, 0.05) == 0.94
    assert threshold_for_apcer(attacks, 0.049) == 0.95  # floor(4.9) = 4 attacks
    for target in (0.0, 0.01, 0.05, 0.2):
        assert error_rates(np.array([]), attacks, threshold_for_apcer(attacks, target))["apcer"] <= target
    with pytest.raises(ValueError):
        threshold_for_apcer(attacks, 1.0)


def test_ties_only_lower_the_apcer() -> None:
    attacks = np.array([0.1, 0.5, 0.5, 0.5, 0.9])
    t = threshold_for_apcer(attacks, 0.2)  # one may pass: 0.9; the next is the 0.5 tie
    assert t == 0.5 and error_rates(np.array([]), attacks, t)["apcer"] == 0.2


def test_error_rates_and_bpcer_at_apcer() -> None:
    live = np.array([0.2, 0.6, 0.7, 0.8, 0.95])
    attack = np.array([0.01, 0.05, 0.3, 0.65])
    assert error_rates(live, attack, 0.5) == {"apcer": 0.25, "bpcer": 0.2}
    out = bpcer_at_apcer(live, attack, 0.0)  # threshold 0.65: live 0.2 and 0.6 rejected
    assert out == {"threshold": 0.65, "apcer": 0.0, "bpcer": 0.4}
    iso = iso_figures(live, attack)
    assert iso["n_live"] == 5 and iso["n_attack"] == 4 and iso["bpcer100"] == 0.4


def test_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    live = np.round(rng.uniform(0.3, 1, 300), 2)
    attack = np.round(rng.uniform(0, 0.7, 200), 2)
    expected = roc_auc_score(np.r_[np.ones(300), np.zeros(200)], np.r_[live, attack])
    assert roc_auc(live, attack) == pytest.approx(expected)


def test_det_points_run_from_everything_accepted_to_nothing() -> None:
    apcer, bpcer = det_points(np.array([0.6, 0.9]), np.array([0.1, 0.7]))
    assert apcer[0] == 1.0 and bpcer[0] == 0.0 and apcer[-1] == 0.0 and bpcer[-1] == 1.0
    assert np.all(np.diff(apcer) <= 0) and np.all(np.diff(bpcer) >= 0)


def test_calibration_round_trip_and_threshold(tmp_path) -> None:
    cal = PadCalibration.from_scores(
        "minifasnet_pair",
        "abc",
        "test set",
        np.array([0.9, 0.8, 0.99]),
        np.arange(200) / 1000.0,
        created="2026-01-01",
        note="x",
    )
    path = cal.save(tmp_path / "pad" / "cal.json")
    back = PadCalibration.load(path)
    assert back == cal and back.meta == {"note": "x"}
    t = back.threshold(0.005)  # one of 200 attacks may pass
    assert t == pytest.approx(0.198) and back.expected(t) == {"apcer": 0.005, "bpcer": 0.0}


def test_worst_subject_rule_holds_every_subject_to_the_target() -> None:
    a = np.arange(100) / 1000.0  # subject a: 0.000 .. 0.099
    b = 0.5 + np.arange(10) / 1000.0  # subject b: few frames, all high
    scores, subjects = np.r_[a, b], ["a"] * 100 + ["b"] * 10
    pooled = threshold_for_apcer(scores, 0.05)  # 5 of 110 may pass: b's five highest
    assert pooled == pytest.approx(0.504) and error_rates(np.array([]), b, pooled)["apcer"] == 0.5
    t = worst_subject_threshold(scores, subjects, 0.05)  # b has 10 frames: none of them may pass
    assert t == pytest.approx(0.509)
    for subject_scores in (a, b):
        assert error_rates(np.array([]), subject_scores, t)["apcer"] <= 0.05
    assert worst_subject_threshold(np.array([]), [], 0.05) == float("-inf")


def test_unseen_subject_rule_needs_two_subjects_and_extrapolates_their_spread() -> None:
    rng = np.random.default_rng(0)
    one = rng.uniform(0, 0.1, 50)
    assert unseen_subject_threshold(one, ["a"] * 50, 0.01) is None
    assert subject_robust_threshold(one, ["a"] * 50, 0.01) == threshold_for_apcer(one, 0.01)  # one subject: pooled
    logit = lambda shift, n: 1 / (1 + np.exp(-(shift + rng.normal(0, 1, n))))  # noqa: E731
    close = np.r_[logit(-6, 50), logit(-6, 50), logit(-6, 50)]
    spread = np.r_[logit(-9, 50), logit(-6, 50), logit(-3, 50)]
    subjects = ["a"] * 50 + ["b"] * 50 + ["c"] * 50
    t_close = unseen_subject_threshold(close, subjects, 0.01)
    t_spread = unseen_subject_threshold(spread, subjects, 0.01)
    assert t_close is not None and t_spread is not None
    assert t_spread > spread.max() > t_close  # subjects far apart: a new one may score above all of them
    assert subject_robust_threshold(close, subjects, 0.01) >= worst_subject_threshold(close, subjects, 0.01)


def test_subject_robust_rule_generalises_to_unseen_subjects() -> None:
    """Subjects whose attack scores shift (logit scale) as a population does: calibrated on 9 subjects of
    44 frames, as nuaa-dev, the rule keeps 4,000 new subjects' APCER within the target on average over
    20 calibration sets; the pooled quantile of the same calibration scores lets more through."""
    rng = np.random.default_rng(7)

    def subjects_scores(n_subjects: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
        shift = rng.normal(-8.0, 1.5, n_subjects)
        z = shift[:, None] + rng.normal(0.0, 2.0, (n_subjects, frames))
        return 1 / (1 + np.exp(-z.ravel())), np.repeat(np.arange(n_subjects).astype(str), frames)

    apcer: dict[str, list[float]] = {"robust": [], "pooled": []}
    new, _ = subjects_scores(4000, 44)
    for _ in range(20):  # calibration sets
        cal, subjects = subjects_scores(9, 44)
        apcer["robust"].append(float(np.mean(new > subject_robust_threshold(cal, subjects, 0.005))))
        apcer["pooled"].append(float(np.mean(new > threshold_for_apcer(cal, 0.005))))
    assert np.mean(apcer["robust"]) <= 0.005 < np.mean(apcer["pooled"])


def test_calibration_keeps_each_attack_with_its_subject(tmp_path) -> None:
    attack, subjects = np.array([0.3, 0.01, 0.2, 0.02]), ["b", "a", "b", "a"]
    cal = PadCalibration.from_scores("m", "f", "set", np.array([0.9]), attack, attack_subjects=subjects)
    assert cal.attack_scores == (0.01, 0.02, 0.2, 0.3) and cal.attack_subjects == ("a", "a", "b", "b")
    assert PadCalibration.load(cal.save(tmp_path / "c.json")) == cal
    assert cal.threshold(0.005) == subject_robust_threshold(attack, subjects, 0.005) > 0.3
    assert cal.rule.startswith("subject-robust (2 calibration subjects)")
    old = {k: v for k, v in cal.to_dict().items() if k != "attack_subjects"}  # a file from before the rule
    legacy = PadCalibration.from_dict(old)
    assert legacy.attack_subjects == () and legacy.threshold(0.25) == threshold_for_apcer(attack, 0.25)
    assert legacy.rule.startswith("pooled quantile")
    with pytest.raises(ValueError, match="3 subjects for 4 attack scores"):
        PadCalibration("m", "f", "set", cal.attack_scores, (), attack_subjects=("a", "b", "c"))
