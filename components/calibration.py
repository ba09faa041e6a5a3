"""Threshold calibration: the distance tau that meets a target false-accept rate.

tau is read off impostor pairs of held-out identities (never the people being enrolled): every pair of
different identities among them, so a FAR of 1e-3 or 1e-4 rests on millions of comparisons rather
than a few thousand. The achieved FAR and TAR at tau go into the gallery manifest.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


TAIL_MAX_FAR = 1e-2  # the impostor tail kept for identification thresholds covers FAR up to this


@dataclass(frozen=True)
class Calibration:
    tau: float
    target_far: float
    achieved_far: float
    achieved_tar: float
    n_impostor_pairs: int
    n_genuine_pairs: int
    impostor_tail: np.ndarray | None = None  # the smallest impostor distances, sorted (see tau_for_fpir)


def far_per_comparison(target_fpir: float, gallery_size: int) -> float:
    """The 1:1 FAR at which a stranger, compared with ``gallery_size`` people, is accepted as someone
    with probability ``target_fpir``: 1 - (1 - FPIR)^(1/K), comparisons taken as independent."""
    return 1.0 - (1.0 - target_fpir) ** (1.0 / max(gallery_size, 1))


def tau_for_fpir(impostor_tail: np.ndarray, n_impostor_pairs: int, gallery_size: int, target_fpir: float) -> float:
    """Identification threshold: tau at the per-comparison FAR that keeps FPIR at the target for a
    gallery of this size. A fixed 1:1 tau lets in a stranger with probability ~ 1-(1-FAR)^K."""
    allowed = int(np.floor(far_per_comparison(target_fpir, gallery_size) * n_impostor_pairs))
    if allowed >= len(impostor_tail):
        raise ValueError(f"FAR {far_per_comparison(target_fpir, gallery_size):.2e} is beyond the stored "
                         f"impostor tail (FAR <= {len(impostor_tail) / n_impostor_pairs:.2e})")
    return float(np.nextafter(impostor_tail[allowed], -np.inf))


def all_pair_distances(emb: np.ndarray, labels: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Distances of every unordered pair, split into (genuine, impostor)."""
    emb = np.asarray(emb, np.float32)
    labels = np.asarray(labels)
    genuine, impostor = [], []
    for start in range(0, len(emb), chunk):
        block = emb[start:start + chunk]
        sims = block @ emb.T
        rows = np.arange(start, start + len(block))[:, None]
        upper = np.arange(len(emb))[None, :] > rows  # each unordered pair once
        same = labels[start:start + len(block), None] == labels[None, :]
        d = np.sqrt(np.maximum(2.0 - 2.0 * sims, 0.0))
        genuine.append(d[upper & same])
        impostor.append(d[upper & ~same])
    return np.concatenate(genuine), np.concatenate(impostor)


def calibrate_tau(emb: np.ndarray, labels: np.ndarray, target_far: float) -> Calibration:
    """Largest tau with empirical FAR <= target over all impostor pairs (accept when distance <= tau)."""
    genuine, impostor = all_pair_distances(emb, labels)
    if impostor.size == 0:
        raise ValueError("calibration needs at least two identities")
    allowed = int(np.floor(target_far * impostor.size))  # impostors we may accept
    imp_sorted = np.sort(impostor)
    tau = float(np.nextafter(imp_sorted[allowed], -np.inf)) if allowed < imp_sorted.size else float(imp_sorted[-1])
    tail = imp_sorted[: max(1, int(np.ceil(TAIL_MAX_FAR * impostor.size)) + 1)].astype(np.float32)
    return Calibration(
        tau=tau, target_far=target_far,
        achieved_far=float((impostor <= tau).mean()),
        achieved_tar=float((genuine <= tau).mean()) if genuine.size else float("nan"),
        n_impostor_pairs=int(impostor.size), n_genuine_pairs=int(genuine.size), impostor_tail=tail,
    )
