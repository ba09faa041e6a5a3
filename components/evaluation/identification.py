"""Open-set identification metrics (1:K against a gallery, or "not recognized").

rank-1: share of genuine probes whose nearest enrolled employee is the right one (closed set).
DIR at FPIR: at the threshold where a share FPIR of strangers would be accepted as someone, the share
of genuine probes identified correctly and within the threshold. At the gallery's tau: FPIR (strangers
let in) and FNIR (employees turned away).
"""

from __future__ import annotations

import numpy as np

from facegate.components.evaluation.verification import threshold_for_far


def open_set_metrics(
    correct: np.ndarray,
    genuine_dist: np.ndarray,
    impostor_dist: np.ndarray,
    tau: float | None = None,
    fpirs: tuple[float, ...] = (1e-2, 1e-3),
) -> dict:
    """``correct``/``genuine_dist``: per genuine probe, top-1 right? and its distance;
    ``impostor_dist``: per stranger probe, the distance to its nearest enrolled employee."""
    correct = np.asarray(correct, bool)
    genuine_dist = np.asarray(genuine_dist, float)
    impostor_dist = np.asarray(impostor_dist, float)
    out = {
        "rank1": float(correct.mean()) if correct.size else float("nan"),
        "genuine_probes": int(correct.size),
        "impostor_probes": int(impostor_dist.size),
    }
    for fpir in fpirs:
        t = threshold_for_far(impostor_dist, fpir)
        out[f"dir_at_fpir_{fpir:.0e}".replace("e-0", "e-")] = float((correct & (genuine_dist <= t)).mean())
        out[f"threshold_at_fpir_{fpir:.0e}".replace("e-0", "e-")] = float(t)
    if tau is not None:
        out["tau"] = float(tau)
        out["fpir_at_tau"] = float((impostor_dist <= tau).mean())
        out["fnir_at_tau"] = float(1.0 - (correct & (genuine_dist <= tau)).mean())
    return out
