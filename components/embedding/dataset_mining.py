"""Dataset-wide triplet mining with FAISS: the generator that keeps feeding only triplets still wrong.

Why: in-batch mining only sees P x K images; mining over the whole training set finds the negatives
the network really confuses. Each round embeds everything, mines with :func:`mine_dataset_triplets`,
trains, then :func:`still_violating` re-scores the list with the new embeddings and keeps only the
triplets that still violate the margin. The list is saved as parquet (:func:`save_triplets`) so it
is a versioned artifact of the run.

Conventions as in :mod:`.triplets`: embeddings are L2-normalised and distances are squared
Euclidean, computed as ``2 - 2 <a, b>`` (exact for unit vectors, and what an inner-product index gives).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import faiss
import numpy as np
import pandas as pd

__all__ = [
    "TRIPLET_COLUMNS",
    "load_triplets",
    "mine_dataset_triplets",
    "save_triplets",
    "still_violating",
]

TRIPLET_COLUMNS = ["anchor", "positive", "negative", "d_ap", "d_an"]
_NORM_TOLERANCE = 1e-3
_PAIR_CHUNK = 65536  # pairs scored at once in semi-hard selection: bounds memory to chunk x (k + 1)


def _check_embeddings(emb: np.ndarray) -> np.ndarray:
    """float32, C-contiguous N x D, unit rows: the ``2 - 2<a,b>`` distances are wrong otherwise."""
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] == 0:
        raise ValueError(f"expected a non-empty N x D embedding matrix, got shape {emb.shape}")
    norms = np.linalg.norm(emb, axis=1)
    if not np.all(np.abs(norms - 1.0) <= _NORM_TOLERANCE):
        raise ValueError("embeddings must be L2-normalised (unit rows)")
    return emb


def _sq_dist(emb: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distances between rows ``a[i]`` and ``b[i]`` of unit vectors."""
    dots = np.einsum("ij,ij->i", emb[a], emb[b])
    return np.maximum(2.0 - 2.0 * dots, 0.0).astype(np.float32)


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "anchor": pd.Series([], dtype="int64"),
            "positive": pd.Series([], dtype="int64"),
            "negative": pd.Series([], dtype="int64"),
            "d_ap": pd.Series([], dtype="float32"),
            "d_an": pd.Series([], dtype="float32"),
        }
    )


def _anchor_positive_pairs(
    labels: np.ndarray, max_positives_per_anchor: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Each image with up to ``max_positives_per_anchor`` same-identity others, drawn without
    replacement (all of them when there are fewer); ordered by anchor, then positive."""
    anchors: list[np.ndarray] = []
    positives: list[np.ndarray] = []
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    for group in np.split(order, np.cumsum(counts)[:-1]):
        if len(group) < 2:
            continue
        for a in group:
            others = group[group != a]
            if len(others) > max_positives_per_anchor:
                others = np.sort(rng.choice(others, size=max_positives_per_anchor, replace=False))
            anchors.append(np.full(len(others), a, dtype=np.int64))
            positives.append(others.astype(np.int64))
    if not anchors:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    a = np.concatenate(anchors)
    p = np.concatenate(positives)
    o = np.lexsort((p, a))
    return a[o], p[o]


def mine_dataset_triplets(
    emb: np.ndarray,
    labels: np.ndarray,
    margin: float,
    k: int = 50,
    strategy: Literal["hard", "semi_hard"] = "hard",
    seed: int = 0,
    max_positives_per_anchor: int = 5,
) -> pd.DataFrame:
    """Mine one triplet per (anchor, positive) pair over the whole set with an exact FAISS index.

    For every anchor, the ``k`` nearest other images (by inner product = by distance, for unit
    vectors) are searched; same-identity neighbours are discarded and the rest are the negative
    candidates. ``hard`` takes the nearest candidate; ``semi_hard`` takes the nearest with
    ``d_ap < d_an < d_ap + margin`` and falls back to the hard one when none of the ``k`` qualifies
    (unlike the in-batch miner, whose fallback is the easiest negative: here the point is to feed
    triplets the network still gets wrong). Anchors whose ``k`` neighbours are all of their own
    identity yield no triplet (raise ``k``). Up to ``max_positives_per_anchor`` positives per anchor
    are drawn with ``seed``. Returns columns anchor, positive, negative (row indices into ``emb``),
    d_ap, d_an (squared distances), ordered by anchor then positive; mining settings in ``attrs``.
    """
    if strategy not in ("hard", "semi_hard"):
        raise ValueError(f"unknown strategy {strategy!r}; expected 'hard' or 'semi_hard'")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if max_positives_per_anchor < 1:
        raise ValueError(f"max_positives_per_anchor must be >= 1, got {max_positives_per_anchor}")
    emb = _check_embeddings(emb)
    labels = np.asarray(labels)
    if labels.shape != (emb.shape[0],):
        raise ValueError(f"labels shape {labels.shape} does not match {emb.shape[0]} embeddings")

    rng = np.random.default_rng(seed)
    a, p = _anchor_positive_pairs(labels, max_positives_per_anchor, rng)
    out = _empty_frame()
    if a.size:
        index = faiss.IndexFlatIP(emb.shape[1])
        index.add(emb)
        anchors = np.unique(a)
        n_search = min(k + 1, emb.shape[0])  # +1: the anchor finds itself first
        sims, nbrs = index.search(emb[anchors], n_search)  # sorted: most similar first
        d_nbr = np.maximum(2.0 - 2.0 * sims, 0.0).astype(np.float32)
        is_neg = (nbrs >= 0) & (labels[np.maximum(nbrs, 0)] != labels[anchors][:, None])
        has_neg = is_neg.any(axis=1)
        row_of = np.full(emb.shape[0], -1, dtype=np.int64)
        row_of[anchors] = np.arange(len(anchors))

        keep = has_neg[row_of[a]]
        a, p = a[keep], p[keep]
        rows = row_of[a]
        d_ap = _sq_dist(emb, a, p)
        hard_col = is_neg.argmax(axis=1)  # first True = nearest negative
        col = hard_col[rows]
        if strategy == "semi_hard":
            for s in range(0, len(a), _PAIR_CHUNK):
                r = rows[s : s + _PAIR_CHUNK]
                dap = d_ap[s : s + _PAIR_CHUNK, None]
                dn = d_nbr[r]
                semi = is_neg[r] & (dn > dap) & (dn < dap + margin)
                any_semi = semi.any(axis=1)
                col[s : s + _PAIR_CHUNK] = np.where(any_semi, semi.argmax(axis=1), col[s : s + _PAIR_CHUNK])
        n = nbrs[rows, col].astype(np.int64)
        out = pd.DataFrame({"anchor": a, "positive": p, "negative": n, "d_ap": d_ap, "d_an": d_nbr[rows, col]})
    out.attrs.update(
        {
            "margin": float(margin),
            "k": int(k),
            "strategy": strategy,
            "seed": int(seed),
            "max_positives_per_anchor": int(max_positives_per_anchor),
        }
    )
    return out


def still_violating(triplets_df: pd.DataFrame, emb: np.ndarray, margin: float) -> pd.DataFrame:
    """Re-score ``triplets_df`` with new embeddings; keep rows with ``d_ap - d_an + margin > 0``.

    Why: after a training round most mined triplets are satisfied; re-scoring is far cheaper than
    re-mining and keeps the next round focused on what the network still gets wrong. Distances in
    the result are the new ones; the index is reset.
    """
    missing = [c for c in ("anchor", "positive", "negative") if c not in triplets_df.columns]
    if missing:
        raise ValueError(f"triplets frame lacks columns {missing}")
    emb = _check_embeddings(emb)
    out = triplets_df.copy()
    idx = {c: out[c].to_numpy(dtype=np.int64) for c in ("anchor", "positive", "negative")}
    for c, v in idx.items():
        if v.size and (v.min() < 0 or v.max() >= emb.shape[0]):
            raise ValueError(f"column {c!r} has indices outside 0..{emb.shape[0] - 1}")
    out["d_ap"] = _sq_dist(emb, idx["anchor"], idx["positive"])
    out["d_an"] = _sq_dist(emb, idx["anchor"], idx["negative"])
    violating = (out["d_ap"].to_numpy(np.float64) - out["d_an"].to_numpy(np.float64) + margin) > 0
    return out.loc[violating].reset_index(drop=True)


def save_triplets(df: pd.DataFrame, path: str | Path) -> Path:
    """Write the triplet list as parquet (the versioned artifact); parent folders are created."""
    missing = [c for c in TRIPLET_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"triplets frame lacks columns {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    return path


def load_triplets(path: str | Path) -> pd.DataFrame:
    """Read a list written by :func:`save_triplets`, checking it has the triplet columns."""
    df = pd.read_parquet(path)
    missing = [c for c in TRIPLET_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a triplet list, lacks columns {missing}")
    return df
