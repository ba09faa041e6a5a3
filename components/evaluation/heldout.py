"""Verification on held-out identities (the training split's complement), for training runs and the gate.

Pairs are drawn with a fixed seed from the held-out identities, half genuine and half impostor, and
scored with the same 10-fold protocol as LFW, so two models evaluated on the same data version see
exactly the same pairs and their numbers can be compared in MLflow.

TAR at FAR 1e-3 (the gate's metric) is measured against every impostor pair the held-out faces make
with the pairs' second faces (millions), not the 3000 sampled ones: at 3000 impostors FAR 1e-3 is set
by the three closest, and two models' TAR then differed by +-0.005 from those three alone.
"""

from __future__ import annotations

import numpy as np

from facegate.components.evaluation.pair_classifier import sample_training_pairs
from facegate.components.evaluation.verification import roc_metrics, threshold_for_far, verification_accuracy_10fold


def heldout_pairs(labels: np.ndarray, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ia, ib, same = sample_training_pairs(labels, n_pairs, seed)
    folds = np.random.default_rng(seed + 1).permutation(len(same)) % 10
    return ia, ib, same, folds


def evaluate_verification(
    emb: np.ndarray,
    labels: np.ndarray,
    n_pairs: int = 6000,
    seed: int = 0,
    target_far: float = 1e-3,
    masked_emb: np.ndarray | None = None,
    prefix: str = "val_",
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Metrics (same names across runs), plus the distances and labels for plots.

    With ``masked_emb`` (embeddings of masked copies of the same held-out faces), the second face of
    every pair is its masked copy: the same seeded pairs, the masked protocol (name it with ``prefix``).
    """
    ia, ib, same, folds = heldout_pairs(labels, n_pairs, seed)
    second = emb if masked_emb is None else masked_emb
    dist = np.linalg.norm(emb[ia] - second[ib], axis=1)
    acc = verification_accuracy_10fold(dist, same, folds)
    roc = roc_metrics(dist, same)
    impostors = all_impostor_distances(emb, second, labels, np.unique(ib))
    tau = threshold_for_far(impostors, target_far)
    tau_1e3 = tau if target_far == 1e-3 else threshold_for_far(impostors, 1e-3)
    metrics = {
        "accuracy": acc["accuracy_mean"],
        "accuracy_std": acc["accuracy_std"],
        "threshold": acc["threshold_mean"],
        "auc": roc["auc"],
        "eer": roc["eer"],
        "tar_at_far_1e-3": float((dist[same] <= tau_1e3).mean()),
        "tau_at_target_far": float(tau),
        "pairs": float(len(same)),
        "impostor_pairs": float(len(impostors)),
    }
    return {prefix + k: v for k, v in metrics.items()}, dist, same


def all_impostor_distances(
    emb: np.ndarray, second: np.ndarray, labels: np.ndarray, probes: np.ndarray, chunk: int = 1024
) -> np.ndarray:
    """Distances (float32) from every held-out face in ``emb`` to every ``second[probes]`` face of
    another identity: the pairs' second faces (masked ones in the masked protocol) against everyone."""
    targets, target_labels = second[probes], labels[probes]
    out = []
    for start in range(0, len(emb), chunk):
        block = emb[start : start + chunk]
        sq = (block**2).sum(1)[:, None] + (targets**2).sum(1)[None, :] - 2 * block @ targets.T
        other = labels[start : start + chunk, None] != target_labels[None, :]
        out.append(np.sqrt(np.maximum(sq[other], 0)).astype(np.float32))
    return np.concatenate(out) if out else np.zeros(0, np.float32)
