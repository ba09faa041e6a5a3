"""Verification on held-out identities (the training split's complement), for training runs and the gate.

Pairs are drawn with a fixed seed from the held-out identities, half genuine and half impostor, and
scored with the same 10-fold protocol as LFW, so two models evaluated on the same data version see
exactly the same pairs and their numbers can be compared in MLflow.
"""
from __future__ import annotations

import numpy as np

from components.evaluation.pair_classifier import sample_training_pairs
from components.evaluation.verification import roc_metrics, threshold_for_far, verification_accuracy_10fold


def heldout_pairs(labels: np.ndarray, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ia, ib, same = sample_training_pairs(labels, n_pairs, seed)
    folds = np.random.default_rng(seed + 1).permutation(len(same)) % 10
    return ia, ib, same, folds


def evaluate_verification(emb: np.ndarray, labels: np.ndarray, n_pairs: int = 6000, seed: int = 0,
                          target_far: float = 1e-3, masked_emb: np.ndarray | None = None,
                          prefix: str = "val_") -> tuple[dict, np.ndarray, np.ndarray]:
    """Metrics (same names across runs), plus the distances and labels for plots.

    With ``masked_emb`` (embeddings of masked copies of the same held-out faces), the second face of
    every pair is its masked copy: the same seeded pairs, the masked protocol (name it with ``prefix``).
    """
    ia, ib, same, folds = heldout_pairs(labels, n_pairs, seed)
    dist = np.linalg.norm(emb[ia] - (emb if masked_emb is None else masked_emb)[ib], axis=1)
    acc = verification_accuracy_10fold(dist, same, folds)
    roc = roc_metrics(dist, same)
    tau = threshold_for_far(dist[~same], target_far)
    metrics = {
        "accuracy": acc["accuracy_mean"], "accuracy_std": acc["accuracy_std"],
        "threshold": acc["threshold_mean"], "auc": roc["auc"], "eer": roc["eer"],
        "tar_at_far_1e-3": roc["tar_at_far_1e-3"], "tau_at_target_far": float(tau),
        "pairs": float(len(same)),
    }
    return {prefix + k: v for k, v in metrics.items()}, dist, same
