import numpy as np
import pytest

from facegate.components.evaluation.pair_classifier import (
    fit_pair_classifier,
    pair_accuracy,
    pair_features,
    sample_training_pairs,
)


def test_features_by_hand():
    a, b = np.array([[0.6, -0.8]]), np.array([[0.0, 1.0]])
    np.testing.assert_allclose(pair_features(a, b, "abs_diff"), [[0.6, 1.8]])
    np.testing.assert_allclose(pair_features(a, b, "chi_square"), [[0.36 / 2.6, 3.24 / 2.2]])
    with pytest.raises(ValueError, match="unknown pair feature"):
        pair_features(a, b, "cosine")


def test_training_pairs_are_balanced_and_correct():
    labels = np.repeat(np.arange(10), 3)
    ia, ib, same = sample_training_pairs(labels, 200, seed=0)
    assert same.sum() == 100 and (~same).sum() == 100
    assert np.all((labels[ia] == labels[ib]) == same) and np.all(ia[same] != ib[same])


def test_classifier_learns_separable_identities():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(40), 4)
    centres = rng.normal(size=(40, 16))
    emb = centres[labels] + 0.2 * rng.normal(size=(len(labels), 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    for kind in ("abs_diff", "chi_square"):
        clf = fit_pair_classifier(emb, labels, kind, n_pairs=2000, seed=1)
        ia, ib, same = sample_training_pairs(labels, 400, seed=2)
        assert pair_accuracy(clf, emb, ia, ib, same, kind) > 0.9
