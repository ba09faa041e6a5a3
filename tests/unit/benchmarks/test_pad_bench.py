"""bench pad's protocol: folds by subject, thresholds never set on the test subjects, pooled figures."""

from __future__ import annotations

import numpy as np
import pytest

from facegate.benchmarks.pad import Fold, fold_plan, pooled_figures
from facegate.components.pad.calibration import subject_robust_threshold


def test_each_subject_is_tested_once_and_never_in_its_own_thresholds() -> None:
    subjects = [f"s{i}" for i in range(9)]
    plan = fold_plan(subjects, 3, seed=1)
    assert sorted(s for test, _, _ in plan for s in test) == subjects
    for test, calib, train in plan:
        assert not set(test) & set(calib) and not set(test) & set(train) and not set(calib) & set(train)
        assert sorted(test + calib + train) == subjects


def test_pooled_figures_use_each_fold_threshold() -> None:
    live = np.array([True, True, False, False, True, False])
    # fold A: thresholds from attacks [0.1, 0.2] (one subject: the pooled quantile) -> any target < 50%:
    # 0.2; fold B: from [0.5]
    folds = [
        Fold(
            np.array([0, 1, 2]), np.array([0.9, 0.15, 0.3]), np.array([0.8]), np.array([0.1, 0.2]), np.array(["a"] * 2)
        ),
        Fold(np.array([3, 4, 5]), np.array([0.4, 0.6, 0.7]), np.array([0.9]), np.array([0.5]), np.array(["b"])),
    ]
    matches = np.array([False, False, True, False, False, True])
    fig = pooled_figures(folds, live, 0.01, matches)
    # fold A at 0.2: live 0.15 rejected, attack 0.3 accepted; fold B at 0.5: attack 0.7 accepted, 0.4 refused
    assert fig["bpcer"] == pytest.approx(1 / 3) and fig["apcer"] == pytest.approx(2 / 3)
    assert fig["bpcer100"] == fig["bpcer"] and fig["iapmr_enforce"] == pytest.approx(2 / 3)
    assert fig["iso_pooled"]["n_live"] == 3 and len(fig["per_fold"]) == 2
    assert (
        fig["rules"]["pooled_quantile"]
        == fig["rules"]["subject_robust"]
        == {
            "apcer": fig["apcer"],
            "bpcer": fig["bpcer"],
            "iapmr_enforce": fig["iapmr_enforce"],
        }
    )


def test_operating_threshold_is_the_subject_robust_rule_on_the_threshold_subjects() -> None:
    live = np.array([True, False, False, False])
    thr_attack = np.r_[np.linspace(0.001, 0.01, 400), np.linspace(0.002, 0.05, 10)]  # b: few frames, higher
    thr_subjects = np.array(["a"] * 400 + ["b"] * 10)
    scores = np.array([0.9, 0.03, 0.06, 0.2])  # test: one live face, three attacks
    fold = Fold(np.arange(4), scores, np.array([0.9]), thr_attack, thr_subjects)
    fig = pooled_figures([fold], live, 0.005, np.array([False, True, True, True]))
    t = subject_robust_threshold(thr_attack, thr_subjects, 0.005)
    assert fig["per_fold"][0]["threshold"] == t >= 0.05  # at least subject b's highest attack
    assert fig["apcer"] == pytest.approx(np.mean(scores[1:] > t)) == fig["iapmr_enforce"]
    pooled = fig["rules"]["pooled_quantile"]
    assert fig["per_fold"][0]["threshold_pooled_quantile"] < 0.05 and pooled["apcer"] >= fig["apcer"]
