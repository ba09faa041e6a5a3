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
    threshold_for_apcer,
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
