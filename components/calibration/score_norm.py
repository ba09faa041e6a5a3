"""Score normalisation against a cohort of impostor faces (z-, t- and adaptive s-norm).

A raw cosine distance means different things for different faces: a blurred, greyscale or masked face
sits closer to everybody, so a fixed threshold lets more strangers in on such data than on the data it
was calibrated on. Cohort normalisation measures each face against a fixed set of faces known to be
nobody in particular (``cohort``: one embedding each of people outside every gallery) and expresses a
comparison in units of those impostor scores: z-norm for the enrolled side, t-norm for the probe side,
s-norm their mean; adaptive (AS-norm) uses only each face's ``top_k`` closest cohort members, the
impostors that matter near the threshold.

Every score here is a dissimilarity (smaller = closer, as the gallery's distances), so calibration,
sketches and thresholds treat raw and normalised scores alike: ``-s_norm`` is returned.
The calibration-transfer benchmark (``benchmarks/calibration.py``) decides whether the service uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-6


@dataclass(frozen=True)
class CohortStats:
    """Per face: mean and standard deviation of its similarity to the (top-k) cohort."""

    mean: np.ndarray
    std: np.ndarray


def cohort_stats(emb: np.ndarray, cohort: np.ndarray, top_k: int | None = None, chunk: int = 4096) -> CohortStats:
    """Similarity statistics of each row of ``emb`` against ``cohort`` (unit vectors); with ``top_k``,
    over its ``top_k`` most similar cohort members only (adaptive)."""
    emb, cohort = np.asarray(emb, np.float32), np.asarray(cohort, np.float32)
    if len(cohort) < 2:
        raise ValueError("a cohort needs at least two faces")
    k = None if top_k is None or top_k >= len(cohort) else int(top_k)
    means, stds = [], []
    for start in range(0, len(emb), chunk):
        sims = emb[start : start + chunk] @ cohort.T
        if k is not None:
            sims = np.partition(sims, -k, axis=1)[:, -k:]
        means.append(sims.mean(1))
        stds.append(sims.std(1))
    return CohortStats(
        np.concatenate(means) if means else np.zeros(0, np.float32),
        np.maximum(np.concatenate(stds), EPS) if stds else np.zeros(0, np.float32),
    )


def s_norm_distance(sim: np.ndarray, a: CohortStats, b: CohortStats) -> np.ndarray:
    """-(z + t) / 2 for similarities ``sim`` between faces with stats ``a`` (rows) and ``b``
    (columns, broadcast): a dissimilarity in cohort standard deviations."""
    z = (sim - a.mean[..., None]) / a.std[..., None] if np.ndim(sim) == 2 else (sim - a.mean) / a.std
    t = (sim - b.mean[None, ...]) / b.std[None, ...] if np.ndim(sim) == 2 else (sim - b.mean) / b.std
    return -(z + t) / 2.0


def normalised_pair_scores(
    emb: np.ndarray, labels: np.ndarray, stats: CohortStats, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """S-norm dissimilarities of every unordered pair, split into (genuine, impostor)."""
    emb = np.asarray(emb, np.float32)
    labels = np.asarray(labels)
    genuine, impostor = [], []
    for start in range(0, len(emb), chunk):
        rows = slice(start, start + chunk)
        sims = emb[rows] @ emb.T
        d = s_norm_distance(sims, CohortStats(stats.mean[rows], stats.std[rows]), stats)
        idx = np.arange(start, min(start + chunk, len(emb)))[:, None]
        upper = np.arange(len(emb))[None, :] > idx
        same = labels[rows, None] == labels[None, :]
        genuine.append(d[upper & same])
        impostor.append(d[upper & ~same])
    return np.concatenate(genuine), np.concatenate(impostor)


def cross_scores(
    probes: np.ndarray, gallery: np.ndarray, probe_stats: CohortStats | None, gallery_stats: CohortStats | None
) -> np.ndarray:
    """Probe x gallery dissimilarities: raw Euclidean distances of unit vectors when no stats are given,
    else s-norm."""
    sims = np.asarray(probes, np.float32) @ np.asarray(gallery, np.float32).T
    if probe_stats is None or gallery_stats is None:
        return np.sqrt(np.maximum(2.0 - 2.0 * sims, 0.0))
    return s_norm_distance(sims, probe_stats, gallery_stats)
