"""DET and ROC figures for PAD: ISO/IEC 30107-3's APCER against BPCER, one curve per model."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from facegate.components.pad.calibration import det_points, roc_auc

Scores = tuple[np.ndarray, np.ndarray]  # (live scores, attack scores)


def _probit(p: np.ndarray, n: int) -> np.ndarray:
    """Normal deviate of a rate, clipped at half a sample (0 and 1 have none): the DET scale."""
    from scipy.special import ndtri  # heavy: scipy's special functions; only the figures need them

    eps = 0.5 / max(n, 1)
    return ndtri(np.clip(p, eps, 1 - eps))


def plot_det(curves: Mapping[str, Scores], path: Path, title: str = "DET (printed-photo attacks)") -> Path:
    """The DET curve of each ``name -> (live, attack)`` on normal-deviate axes, with APCER 5% and 1% marked."""
    import matplotlib  # heavy: matplotlib takes a second to import; only the figures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: as above

    ticks = np.array([0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4])
    n_max = max((max(len(lv), len(at)) for lv, at in curves.values()), default=1)
    fig, ax = plt.subplots(figsize=(6, 6))
    for name, (live, attack) in curves.items():
        apcer, bpcer = det_points(live, attack)
        ax.plot(_probit(apcer, n_max), _probit(bpcer, n_max), label=f"{name} (AUC {roc_auc(live, attack):.5f})")
    for rate in (0.05, 0.01):
        ax.axvline(_probit(np.array([rate]), n_max)[0], color="grey", lw=0.6, ls=":")
    tick_pos = _probit(ticks, 10**6)
    ax.set_xticks(tick_pos, [f"{t:g}" for t in ticks])
    ax.set_yticks(tick_pos, [f"{t:g}" for t in ticks])
    lo, hi = _probit(np.array([0.5 / n_max]), n_max)[0] - 0.1, _probit(np.array([0.5]), n_max)[0]
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("APCER (attacks accepted as live)")
    ax.set_ylabel("BPCER (live faces rejected)")
    ax.set_title(title)
    ax.grid(True, lw=0.3)
    ax.legend(fontsize=7, loc="upper right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_roc(curves: Mapping[str, Scores], path: Path, title: str = "ROC (printed-photo attacks)") -> Path:
    """1 - BPCER against APCER, log APCER axis (the region a door operates in)."""
    import matplotlib  # heavy: matplotlib takes a second to import; only the figures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: as above

    fig, ax = plt.subplots(figsize=(6, 5))
    floor = 1e-3
    for name, (live, attack) in curves.items():
        apcer, bpcer = det_points(live, attack)
        ax.step(np.maximum(apcer, floor), 1 - bpcer, where="post", label=f"{name} (AUC {roc_auc(live, attack):.5f})")
    ax.set_xscale("log")
    ax.set_xlim(floor, 1)
    ax.set_xlabel(f"APCER (log; values below {floor:g} drawn at it)")
    ax.set_ylabel("1 - BPCER")
    ax.set_title(title)
    ax.grid(True, lw=0.3)
    ax.legend(fontsize=7, loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
