"""The course's alternative verifier: logistic regression on a pair's embedding difference.

Features per pair: the element-wise |f(x1) - f(x2)| or the chi-square feature
(f1 - f2)^2 / (f1 + f2), the latter on embeddings shifted to be positive. The classifier is trained on
pairs drawn from training identities only and scored beside the plain distance threshold.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

FEATURES = ("abs_diff", "chi_square")


def pair_features(ea: np.ndarray, eb: np.ndarray, kind: str) -> np.ndarray:
    if kind == "abs_diff":
        return np.abs(ea - eb)
    if kind == "chi_square":
        a, b = ea + 1.0, eb + 1.0  # unit-vector components lie in [-1, 1]: shift to positive
        return (a - b) ** 2 / (a + b)
    raise ValueError(f"unknown pair feature {kind!r} (known: {FEATURES})")


def sample_training_pairs(labels: np.ndarray, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half genuine, half impostor pairs of row indices among ``labels`` (identities with >= 2 images)."""
    rng = np.random.default_rng(seed)
    by_id: dict[int, list[int]] = {}
    for i, lab in enumerate(labels):
        by_id.setdefault(int(lab), []).append(i)
    multi = [np.array(v) for v in by_id.values() if len(v) >= 2]
    half = n_pairs // 2
    picks = rng.integers(0, len(multi), half)
    gen = np.array([rng.choice(multi[p], 2, replace=False) for p in picks])
    a = rng.integers(0, len(labels), 4 * half)
    b = rng.integers(0, len(labels), 4 * half)
    keep = labels[a] != labels[b]
    imp = np.stack([a[keep][:half], b[keep][:half]], axis=1)
    rows = np.concatenate([gen, imp])
    same = np.concatenate([np.ones(len(gen), bool), np.zeros(len(imp), bool)])
    return rows[:, 0], rows[:, 1], same


def fit_pair_classifier(emb: np.ndarray, labels: np.ndarray, kind: str, n_pairs: int = 20000, seed: int = 0):
    ia, ib, same = sample_training_pairs(labels, n_pairs, seed)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    clf.fit(pair_features(emb[ia], emb[ib], kind), same)
    return clf


def pair_accuracy(clf, emb: np.ndarray, ia: np.ndarray, ib: np.ndarray, same: np.ndarray, kind: str) -> float:
    return float((clf.predict(pair_features(emb[ia], emb[ib], kind)) == same).mean())
