"""Face-verification metrics under the LFW View 2 protocol, plus the FAR calibration the gallery uses.

Distances are "smaller = more alike": a pair is accepted when ``dist <= threshold``. Everything is
vectorised over sorted distances (O(n log n)) so the 10-fold protocol and ROC run in milliseconds on
the 6000 LFW pairs. Pure numpy/matplotlib: no Prefect, no MLflow.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from facegate.components.core.errors import PairsFormatError


@dataclass(frozen=True)
class Pair:
    """One LFW pair; ``fold`` is 0-based, paths are relative to the lfw folder."""

    fold: int
    path_a: str
    path_b: str
    same: bool
    identity_a: str
    identity_b: str


def lfw_image_path(name: str, index: int) -> str:
    return f"{name}/{name}_{index:04d}.jpg"


def _parse_index(token: str, path: Path | str, lineno: int) -> int:
    try:
        value = int(token)
    except ValueError:
        raise PairsFormatError(path, lineno, f"image index {token!r} is not an integer") from None
    if value < 1:
        raise PairsFormatError(path, lineno, f"image index {value} must be >= 1")
    return value


def read_lfw_pairs(path: Path | str) -> list[Pair]:
    """Parse a View 2 ``pairs.txt``: header ``n_folds n_per``, then per fold ``n_per`` matched lines
    (``Name i j``) followed by ``n_per`` mismatched lines (``Name1 i Name2 j``).

    The layout is checked strictly (field counts, counts per fold, no stray lines) because a silently
    shifted line would put pairs in the wrong fold and corrupt every reported accuracy.
    """
    lines = Path(path).read_text().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise PairsFormatError(path, 1, "empty file; expected a header 'n_folds<TAB>n_per_fold'")
    header = lines[0].split()
    if len(header) != 2 or not all(t.isdigit() for t in header):
        raise PairsFormatError(path, 1, f"bad header {lines[0]!r}; expected 'n_folds<TAB>n_per_fold'")
    n_folds, n_per = int(header[0]), int(header[1])
    if n_folds < 1 or n_per < 1:
        raise PairsFormatError(path, 1, f"header asks for {n_folds} folds of {n_per}; both must be >= 1")
    expected = n_folds * 2 * n_per
    body = lines[1:]

    pairs: list[Pair] = []
    for offset, line in enumerate(body):
        lineno = offset + 2
        if offset >= expected:
            raise PairsFormatError(path, lineno, f"extra line; the header announces {expected} pairs")
        fold, within = divmod(offset, 2 * n_per)
        same = within < n_per
        fields = line.split()
        if same:
            if len(fields) != 3:
                raise PairsFormatError(
                    path, lineno, f"expected a matched pair 'Name idx1 idx2' (fold {fold}), got {line!r}"
                )
            name, i, j = fields
            pairs.append(
                Pair(
                    fold,
                    lfw_image_path(name, _parse_index(i, path, lineno)),
                    lfw_image_path(name, _parse_index(j, path, lineno)),
                    True,
                    name,
                    name,
                )
            )
        else:
            if len(fields) != 4:
                raise PairsFormatError(
                    path, lineno, f"expected a mismatched pair 'Name1 idx1 Name2 idx2' (fold {fold}), got {line!r}"
                )
            name_a, i, name_b, j = fields
            pairs.append(
                Pair(
                    fold,
                    lfw_image_path(name_a, _parse_index(i, path, lineno)),
                    lfw_image_path(name_b, _parse_index(j, path, lineno)),
                    False,
                    name_a,
                    name_b,
                )
            )
    if len(pairs) != expected:
        raise PairsFormatError(
            path,
            len(lines) + 1,
            f"file ends after {len(pairs)} pairs; the header announces {n_folds} folds x {2 * n_per} = {expected}",
        )
    return pairs


def pairs_arrays(pairs: Sequence[Pair]) -> tuple[np.ndarray, np.ndarray]:
    """``(same, folds)`` arrays aligned with ``pairs``, the shape the metric functions take."""
    same = np.fromiter((p.same for p in pairs), dtype=bool, count=len(pairs))
    folds = np.fromiter((p.fold for p in pairs), dtype=np.int64, count=len(pairs))
    return same, folds


# --------------------------------------------------------------------------------------------------
# Thresholds and accuracy


def _check(dist: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(dist, dtype=np.float64).ravel()
    s = np.asarray(same).ravel().astype(bool)
    if d.shape != s.shape:
        raise ValueError(f"dist has {d.size} values but same has {s.size}")
    if d.size == 0:
        raise ValueError("no pairs")
    if not np.all(np.isfinite(d)):
        raise ValueError(f"{int(np.sum(~np.isfinite(d)))} distance(s) are NaN or infinite")
    return d, s


def _accuracy(d: np.ndarray, s: np.ndarray, threshold: float) -> float:
    return float(np.mean((d <= threshold) == s))


def best_threshold(dist: np.ndarray, same: np.ndarray) -> float:
    """The threshold maximising accuracy of ``accept iff dist <= t``, exact over every distinct cut.

    Candidates are the midpoints between consecutive distinct sorted distances (midpoints, not the
    distances themselves, so the cut generalises to unseen pairs), plus "reject all" (just below the
    minimum) and "accept all" (the maximum). Ties go to the lowest threshold: fewer false accepts.
    """
    d, s = _check(dist, same)
    order = np.argsort(d, kind="stable")
    ds, ss = d[order], s[order]
    n = ds.size
    # accepting the first k sorted pairs (k = 0..n): correct = genuine among them + impostors after them
    genuine_before = np.concatenate(([0], np.cumsum(ss)))
    impostor_total = n - int(ss.sum())
    impostor_before = np.arange(n + 1) - genuine_before
    correct = genuine_before + (impostor_total - impostor_before)
    # a cut after position k-1 is only realisable where the sorted value changes (ties move together)
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = ds[1:] > ds[:-1]
    correct = np.where(valid, correct, -1)
    k = int(np.argmax(correct))
    if k == 0:
        return float(np.nextafter(ds[0], -np.inf))
    if k == n:
        return float(ds[-1])
    return float((ds[k - 1] + ds[k]) / 2.0)


def verification_accuracy_10fold(dist: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict:
    """LFW View 2: per fold, choose the threshold on the other folds and score the held-out one.

    ``dist`` is one distance per pair, or one row per fold (``n_folds x n_pairs``) when each fold is
    scored by its own model (trained on identities disjoint from that fold): fold f's threshold and
    accuracy then both come from row f. ``accuracy_std`` is the population std (ddof=0) of the fold
    accuracies, as the usual LFW tooling reports it.
    """
    f = np.asarray(folds).ravel()
    fold_ids = np.unique(f)
    rows = np.asarray(dist, dtype=np.float64)
    if rows.ndim == 1:
        rows = np.broadcast_to(rows, (fold_ids.size, rows.size))
    if rows.shape[0] != fold_ids.size:
        raise ValueError(f"dist has {rows.shape[0]} rows but there are {fold_ids.size} folds")
    if fold_ids.size < 2:
        raise ValueError("cross-validation needs at least two folds")
    accuracies: list[float] = []
    thresholds: list[float] = []
    for row, fold in zip(rows, fold_ids):
        d, s = _check(row, same)
        if f.shape != d.shape:
            raise ValueError(f"folds has {f.size} values but dist has {d.size}")
        test = f == fold
        t = best_threshold(d[~test], s[~test])
        thresholds.append(t)
        accuracies.append(_accuracy(d[test], s[test], t))
    acc = np.asarray(accuracies)
    return {
        "accuracy_mean": float(acc.mean()),
        "accuracy_std": float(acc.std()),
        "fold_accuracies": accuracies,
        "thresholds": thresholds,
        "threshold_mean": float(np.mean(thresholds)),
        "folds": [int(x) for x in fold_ids],
    }


# --------------------------------------------------------------------------------------------------
# ROC, FAR calibration


def threshold_for_far(impostor_dists: np.ndarray, target_far: float) -> float:
    """The largest tau whose empirical FAR (share of impostors with ``dist <= tau``) is <= target.

    With n impostors at most ``floor(target * n)`` may be accepted, so tau sits just below the next
    impostor distance (``nextafter``: the supremum itself would accept it). When ``target * n < 1``
    this is below every impostor, i.e. FAR 0 is the best the data can certify. ``target >= 1`` gives
    +inf. Used to calibrate the gallery's acceptance threshold on held-out impostor pairs. By selection,
    not a full sort: held-out TAR uses millions of impostor pairs (facegate.components.evaluation.heldout).
    """
    imp = np.asarray(impostor_dists, dtype=np.float64).ravel()
    if imp.size == 0:
        raise ValueError("no impostor distances to calibrate on")
    if not np.all(np.isfinite(imp)):
        raise ValueError("impostor distances contain NaN or infinite values")
    if not 0.0 <= target_far:
        raise ValueError(f"target_far must be >= 0, got {target_far}")
    allowed = int(np.floor(target_far * imp.size + 1e-9))
    if allowed >= imp.size:
        return float("inf")
    return float(np.nextafter(np.partition(imp, allowed)[allowed], -np.inf))


def far_frr_at(dist: np.ndarray, same: np.ndarray, tau: float) -> tuple[float, float]:
    """``(FAR, FRR)`` of ``accept iff dist <= tau``: impostors accepted, genuine pairs rejected."""
    d, s = _check(dist, same)
    if not s.any() or s.all():
        raise ValueError("FAR/FRR need both genuine and impostor pairs")
    accept = d <= tau
    return float(np.mean(accept[~s])), float(np.mean(~accept[s]))


def _roc_points(d: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(thresholds, far, tar)`` at -inf and every distinct distance, FAR ascending."""
    gen = np.sort(d[s])
    imp = np.sort(d[~s])
    thresholds = np.concatenate(([-np.inf], np.unique(d)))
    far = np.searchsorted(imp, thresholds, side="right") / imp.size
    tar = np.searchsorted(gen, thresholds, side="right") / gen.size
    return thresholds, far, tar


def _auc(gen: np.ndarray, imp: np.ndarray) -> float:
    """P(genuine dist < impostor dist) + P(tie)/2: the Mann-Whitney form of ROC AUC (score = -dist)."""
    imp_sorted = np.sort(imp)
    below = np.searchsorted(imp_sorted, gen, side="left")
    upto = np.searchsorted(imp_sorted, gen, side="right")
    greater = imp_sorted.size - upto
    ties = upto - below
    return float((greater.sum() + 0.5 * ties.sum()) / (gen.size * imp_sorted.size))


def _eer(far: np.ndarray, frr: np.ndarray) -> float:
    """Where FAR (rising) meets FRR (falling), linearly interpolated between the bracketing points."""
    diff = frr - far
    i = int(np.argmax(diff <= 0)) if np.any(diff <= 0) else diff.size - 1
    if i == 0 or diff[i] > 0:
        return float((far[i] + frr[i]) / 2.0)
    d0, d1 = diff[i - 1], diff[i]
    alpha = d0 / (d0 - d1)
    return float(far[i - 1] + alpha * (far[i] - far[i - 1]))


def roc_metrics(dist: np.ndarray, same: np.ndarray) -> dict:
    """ROC AUC (score = -dist), EER, and TAR at FAR 1e-3 / 1e-4.

    TAR@FAR uses the largest threshold whose empirical FAR <= target (``threshold_for_far``). With
    LFW's 3000 impostor pairs the FAR resolution is 1/3000 ~ 3.3e-4, so FAR 1e-4 cannot be resolved:
    the reported value is TAR at FAR 0 (below every impostor), the best the data allows; the achieved
    FAR and ``far_resolution`` are returned alongside so nobody reads more into it.
    """
    d, s = _check(dist, same)
    if not s.any() or s.all():
        raise ValueError("ROC metrics need both genuine and impostor pairs")
    gen, imp = d[s], d[~s]
    _, far, tar = _roc_points(d, s)
    out: dict = {
        "auc": _auc(gen, imp),
        "eer": _eer(far, 1.0 - tar),
        "n_genuine": int(gen.size),
        "n_impostor": int(imp.size),
        "far_resolution": 1.0 / imp.size,
    }
    for label, target in (("1e-3", 1e-3), ("1e-4", 1e-4)):
        tau = threshold_for_far(imp, target)
        achieved_far, frr = far_frr_at(d, s, tau)
        out[f"tar_at_far_{label}"] = 1.0 - frr
        out[f"threshold_at_far_{label}"] = tau
        out[f"achieved_far_{label}"] = achieved_far
    return out


# --------------------------------------------------------------------------------------------------
# Identity-disjoint training


def identity_disjoint_training_identities(pairs: Sequence[Pair], fold: int, all_identities: Iterable[str]) -> set[str]:
    """Identities a model may train on when it is tested on ``fold``: all minus those in its pairs.

    Training on a test identity leaks: the model has already seen that face, so accuracy is inflated.
    """
    in_fold = [p for p in pairs if p.fold == fold]
    if not in_fold:
        raise ValueError(f"fold {fold} has no pairs")
    tested = {p.identity_a for p in in_fold} | {p.identity_b for p in in_fold}
    return set(all_identities) - tested


# --------------------------------------------------------------------------------------------------
# Plots (Agg canvas on a standalone Figure: no pyplot global state, safe in worker threads)


def _save(fig, path: Path | str) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: plotting only where a figure is written

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out, format="png", dpi=110, bbox_inches="tight")
    return out


def plot_roc(dist: np.ndarray, same: np.ndarray, path: Path | str) -> Path:
    """TAR against FAR on a log FAR axis (the low-FAR end is what matters at a door)."""
    from matplotlib.figure import Figure  # heavy: plotting only where a figure is written

    d, s = _check(dist, same)
    _, far, tar = _roc_points(d, s)
    metrics = roc_metrics(d, s)
    floor = metrics["far_resolution"] / 2.0
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.add_subplot()
    ax.step(
        np.maximum(far, floor), tar, where="post", lw=1.5, label=f"AUC {metrics['auc']:.4f}, EER {metrics['eer']:.4f}"
    )
    ax.axvline(metrics["far_resolution"], color="grey", ls=":", lw=1, label="FAR resolution (1/impostors)")
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title("ROC (accept if distance <= threshold)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_distance_histograms(
    dist: np.ndarray, same: np.ndarray, path: Path | str, threshold: float | None = None
) -> Path:
    """Genuine vs impostor distance histograms; their overlap is where the errors come from."""
    from matplotlib.figure import Figure  # heavy: plotting only where a figure is written

    d, s = _check(dist, same)
    # matplotlib's stubs take Sequence[float] for bins; hist takes any array
    bins = cast("Sequence[float]", np.linspace(float(d.min()), float(d.max()), 61)) if d.max() > d.min() else 10
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.hist(d[s], bins=bins, alpha=0.6, density=True, label=f"same ({int(s.sum())})")
    ax.hist(d[~s], bins=bins, alpha=0.6, density=True, label=f"different ({int((~s).sum())})")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="black", ls="--", lw=1.2, label=f"threshold {threshold:.4f}")
    ax.set_xlabel("distance")
    ax.set_ylabel("density")
    ax.set_title("Pair distances")
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_verification_plots(
    dist: np.ndarray, same: np.ndarray, folder: Path | str, threshold: float | None = None
) -> list[Path]:
    """``roc.png`` and ``distances.png`` in ``folder``: the two plots every verification run logs."""
    folder = Path(folder)
    return [
        plot_roc(dist, same, folder / "roc.png"),
        plot_distance_histograms(dist, same, folder / "distances.png", threshold=threshold),
    ]
