"""Verification metrics on hand-computed examples, and the real LFW View 2 pairs file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facegate.components.evaluation.verification import (
    Pair,
    PairsFormatError,
    best_threshold,
    far_frr_at,
    identity_disjoint_training_identities,
    pairs_arrays,
    plot_distance_histograms,
    plot_roc,
    read_lfw_pairs,
    roc_metrics,
    threshold_for_far,
    verification_accuracy_10fold,
)
from tests.conftest import SHARED_DATASETS, requires_dataset


def accuracy(dist, same, t) -> float:
    return float(np.mean((np.asarray(dist) <= t) == np.asarray(same)))


# --------------------------------------------------------------------------------------------------
# best_threshold


def test_best_threshold_tiny_picks_lowest_of_tied_optima():
    dist = np.array([0.4, 0.1, 0.3, 0.2])
    same = np.array([False, True, True, False])
    # sorted: 0.1 T, 0.2 F, 0.3 T, 0.4 F -> cuts after 0.1 and after 0.3 both score 3/4; lowest wins
    t = best_threshold(dist, same)
    assert t == pytest.approx(0.15)
    assert accuracy(dist, same, t) == 0.75


def test_best_threshold_never_cuts_inside_ties():
    dist = np.array([0.2, 0.5, 0.5, 0.9])
    same = np.array([True, True, False, False])
    # a cut between the two 0.5s would score 4/4 but is not realisable
    t = best_threshold(dist, same)
    assert t == pytest.approx(0.35)
    assert accuracy(dist, same, t) == 0.75


def test_best_threshold_extremes():
    assert best_threshold(np.array([0.3, 0.7]), np.array([True, True])) == 0.7  # accept all
    t = best_threshold(np.array([0.3, 0.7]), np.array([False, False]))  # reject all
    assert t < 0.3 and accuracy([0.3, 0.7], [False, False], t) == 1.0


def test_best_threshold_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 60))
        dist = np.round(rng.random(n), 1)  # many ties
        same = rng.random(n) < 0.5
        u = np.unique(dist)
        candidates = np.concatenate(([u[0] - 1], (u[1:] + u[:-1]) / 2, [u[-1]]))
        best = max(accuracy(dist, same, c) for c in candidates)
        assert accuracy(dist, same, best_threshold(dist, same)) == pytest.approx(best)


def test_best_threshold_rejects_bad_input():
    with pytest.raises(ValueError):
        best_threshold(np.array([0.1, np.nan]), np.array([True, False]))
    with pytest.raises(ValueError):
        best_threshold(np.array([0.1, 0.2]), np.array([True]))


# --------------------------------------------------------------------------------------------------
# 10-fold protocol


def separable(n_folds: int = 10, per_fold: int = 10, seed: int = 1):
    rng = np.random.default_rng(seed)
    folds = np.repeat(np.arange(n_folds), per_fold)
    same = np.tile(np.arange(per_fold) < per_fold // 2, n_folds)
    dist = np.where(same, rng.uniform(0.0, 0.4, same.size), rng.uniform(0.6, 1.0, same.size))
    return dist, same, folds


def test_10fold_perfectly_separable():
    dist, same, folds = separable()
    r = verification_accuracy_10fold(dist, same, folds)
    assert r["accuracy_mean"] == 1.0 and r["accuracy_std"] == 0.0
    assert r["fold_accuracies"] == [1.0] * 10
    assert len(r["thresholds"]) == 10
    assert all(0.4 < t < 0.6 for t in r["thresholds"])
    assert r["threshold_mean"] == pytest.approx(np.mean(r["thresholds"]))
    for fold, t in enumerate(r["thresholds"]):  # each chosen on the other 9 folds only
        train = folds != fold
        gap = (dist[train & same].max() + dist[train & ~same].min()) / 2
        assert t == pytest.approx(gap)


def test_10fold_one_outlier_costs_its_fold_only():
    dist, same, folds = separable()
    dist[0] = 0.8  # a genuine pair in fold 0 that looks like an impostor (0.6..1.0)
    r = verification_accuracy_10fold(dist, same, folds)
    assert r["fold_accuracies"] == [0.9] + [1.0] * 9
    assert r["accuracy_mean"] == pytest.approx(0.99)
    assert r["accuracy_std"] == pytest.approx(0.03)  # sqrt((0.09^2 + 9 * 0.01^2) / 10)


# --------------------------------------------------------------------------------------------------
# FAR / TAR / ROC

GEN = [0.1, 0.2, 0.3, 0.6]
IMP = [0.4, 0.5, 0.7, 0.8]
DIST = np.array(GEN + IMP)
SAME = np.array([True] * 4 + [False] * 4)


def test_far_frr_at_hand_made():
    assert far_frr_at(DIST, SAME, 0.45) == (0.25, 0.25)
    assert far_frr_at(DIST, SAME, 0.3) == (0.0, 0.25)
    assert far_frr_at(DIST, SAME, 0.05) == (0.0, 1.0)
    assert far_frr_at(DIST, SAME, 0.8) == (1.0, 0.0)


def test_threshold_for_far_hand_made():
    imp = np.array(IMP)
    t = threshold_for_far(imp, 0.25)  # one of four impostors may pass: just below 0.5
    assert t == np.nextafter(0.5, -np.inf)
    assert np.mean(imp <= t) == 0.25
    t = threshold_for_far(imp, 0.2)  # below the resolution: nothing may pass
    assert t < 0.4 and np.mean(imp <= t) == 0.0
    assert threshold_for_far(imp, 0.5) == np.nextafter(0.7, -np.inf)
    assert threshold_for_far(imp, 1.0) == float("inf")
    assert threshold_for_far(np.array([0.3, 0.3, 0.9]), 0.34) < 0.3  # ties pass together


def test_roc_metrics_hand_made():
    m = roc_metrics(DIST, SAME)
    assert m["auc"] == pytest.approx(14 / 16)  # genuine 0.6 beats only impostors 0.7 and 0.8
    assert m["eer"] == pytest.approx(0.25)  # at 0.4: FAR 1/4, FRR 1/4
    # 4 impostors: FAR 1e-3 and 1e-4 both mean "no impostor", threshold just below 0.4 -> TAR 3/4
    assert m["tar_at_far_1e-3"] == 0.75 and m["tar_at_far_1e-4"] == 0.75
    assert m["achieved_far_1e-3"] == 0.0
    assert m["far_resolution"] == 0.25


def test_roc_metrics_separable_and_interpolated_eer():
    dist, same, _ = separable()
    m = roc_metrics(dist, same)
    assert m["auc"] == 1.0 and m["eer"] == 0.0 and m["tar_at_far_1e-3"] == 1.0
    # FAR/FRR cross between thresholds: (0, 1/2) at 0.1 -> (1/2, 0) at 0.2, meeting at 1/4
    m = roc_metrics(np.array([0.1, 0.2, 0.1, 0.2]), np.array([True, False, False, True]))
    assert m["auc"] == pytest.approx(0.5) and m["eer"] == pytest.approx(0.5)
    m = roc_metrics(np.array([0.1, 0.3, 0.2, 0.4]), np.array([True, True, False, False]))
    assert m["eer"] == pytest.approx(0.5)  # thresholds 0.1 (0, .5) and 0.2 (.5, .5)


def test_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(3)
    same = rng.random(400) < 0.5
    dist = np.round(rng.normal(np.where(same, 0.4, 0.7), 0.15), 2)
    gen, imp = dist[same][:, None], dist[~same][None, :]
    expected = np.mean((gen < imp) + 0.5 * (gen == imp))  # O(n^2) reference, ties count half
    assert roc_metrics(dist, same)["auc"] == pytest.approx(expected)


def test_plots_write_pngs(tmp_path):
    dist, same, _ = separable()
    roc = plot_roc(dist, same, tmp_path / "plots" / "roc.png")
    hist = plot_distance_histograms(dist, same, tmp_path / "hist.png", threshold=0.5)
    for p in (roc, hist):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------------
# pairs.txt

SMALL = (
    "2\t2\n"
    "Ann\t1\t2\n"
    "Bob\t3\t12\n"
    "Ann\t1\tCid\t1\n"
    "Bob\t2\tDee\t4\n"
    "Eve\t1\t2\n"
    "Fay\t1\t3\n"
    "Eve\t2\tGus\t1\n"
    "Fay\t1\tHal\t1\n"
)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pairs.txt"
    p.write_text(text)
    return p


def test_read_small_pairs(tmp_path):
    pairs = read_lfw_pairs(write(tmp_path, SMALL))
    assert len(pairs) == 8
    assert pairs[0] == Pair(0, "Ann/Ann_0001.jpg", "Ann/Ann_0002.jpg", True, "Ann", "Ann")
    assert pairs[1].path_b == "Bob/Bob_0012.jpg"
    assert pairs[3] == Pair(0, "Bob/Bob_0002.jpg", "Dee/Dee_0004.jpg", False, "Bob", "Dee")
    assert [p.fold for p in pairs] == [0] * 4 + [1] * 4
    same, folds = pairs_arrays(pairs)
    assert same.tolist() == [True, True, False, False] * 2 and folds.tolist() == [0] * 4 + [1] * 4
    everyone = ["Ann", "Bob", "Cid", "Eve", "Fay", "Gus", "Hal", "Ivy"]
    allowed = identity_disjoint_training_identities(pairs, 1, everyone)
    assert allowed == {"Ann", "Bob", "Cid", "Ivy"}
    with pytest.raises(ValueError):
        identity_disjoint_training_identities(pairs, 5, ["Ann"])


@pytest.mark.parametrize(
    "text, line, words",
    [
        (SMALL.replace("Ann\t1\tCid\t1", "Ann\t1\tCid"), 4, "mismatched"),
        (SMALL.replace("Eve\t1\t2", "Eve\t1\tEve\t2"), 6, "matched"),
        (SMALL.replace("Bob\t3\t12", "Bob\tx\t12"), 3, "not an integer"),
        (SMALL.replace("Fay\t1\t3", "Fay\t0\t3"), 7, ">= 1"),
        ("ten\t300\n", 1, "header"),
        (SMALL + "Zed\t1\t2\n", 10, "extra line"),
        ("\n".join(SMALL.splitlines()[:-1]) + "\n", 9, "ends after 7 pairs"),
    ],
)
def test_malformed_pairs_name_file_and_line(tmp_path, text, line, words):
    path = write(tmp_path, text)
    with pytest.raises(PairsFormatError) as err:
        read_lfw_pairs(path)
    assert err.value.line == line
    assert f"{path}:{line}:" in str(err.value) and words in str(err.value)
    assert isinstance(err.value, ValueError)


@requires_dataset("lfw")
def test_real_lfw_pairs():
    pairs = read_lfw_pairs(SHARED_DATASETS / "lfw" / "pairs.txt")
    assert len(pairs) == 6000
    same, folds = pairs_arrays(pairs)
    assert np.bincount(folds).tolist() == [600] * 10
    assert int(same.sum()) == 3000
    assert all(int(same[folds == f].sum()) == 300 for f in range(10))
    assert pairs[0] == Pair(
        0,
        "Abel_Pacheco/Abel_Pacheco_0001.jpg",
        "Abel_Pacheco/Abel_Pacheco_0004.jpg",
        True,
        "Abel_Pacheco",
        "Abel_Pacheco",
    )
    everyone = {p.identity_a for p in pairs} | {p.identity_b for p in pairs}
    allowed = identity_disjoint_training_identities(pairs, 0, everyone)
    fold0 = {p.identity_a for p in pairs if p.fold == 0} | {p.identity_b for p in pairs if p.fold == 0}
    assert allowed == everyone - fold0 and not allowed & fold0
