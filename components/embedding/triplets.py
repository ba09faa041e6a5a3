"""Triplet loss and online (in-batch) triplet miners for P x K batches, FaceNet style.

Why: a triplet loss only learns from triplets that still violate the margin; which triplets a batch
yields is decided by the miner, so the miners are small, swappable and pinned by hand-computed tests.

Conventions: embeddings are L2-normalised and every distance is the SQUARED Euclidean distance
(``d = ||a - b||^2``, in ``[0, 4]`` for unit vectors), as in FaceNet, so the margin is on that scale.
Miners work on a detached distance matrix and return indices only; the loss is then computed from
the differentiable matrix with :func:`triplet_distances`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

__all__ = [
    "MINERS",
    "BatchHardMiner",
    "Miner",
    "PKSampler",
    "RandomMiner",
    "SemiHardMiner",
    "Triplets",
    "get_miner",
    "mining_stats",
    "pairwise_sq_dists",
    "triplet_distances",
    "triplet_loss",
]


def pairwise_sq_dists(emb: Tensor) -> Tensor:
    """All squared Euclidean distances (N x N) via the Gram matrix, clamped at 0.

    Why the clamp: ``|a|^2 + |b|^2 - 2ab`` can come out slightly negative in floating point.
    Why squared: no square root, so no NaN gradient at d = 0 (the diagonal, duplicated images).
    """
    if emb.ndim != 2:
        raise ValueError(f"expected an N x D matrix, got shape {tuple(emb.shape)}")
    sq = (emb * emb).sum(dim=1)
    d = sq[:, None] + sq[None, :] - 2.0 * (emb @ emb.T)
    d = d.clamp_min(0.0)
    # the diagonal is 0 by definition; rounding must not make an image its own "hard positive"
    return d * (1.0 - torch.eye(d.shape[0], dtype=d.dtype, device=d.device))


def triplet_loss(d_ap: Tensor, d_an: Tensor, margin: float) -> Tensor:
    """Mean of ``max(d_ap - d_an + margin, 0)`` over the mined triplets.

    With no triplets it returns a zero that stays attached to the graph, so a batch without
    triplets neither crashes ``backward()`` nor produces NaN.
    """
    if d_ap.shape != d_an.shape:
        raise ValueError(f"d_ap {tuple(d_ap.shape)} and d_an {tuple(d_an.shape)} differ in shape")
    if d_ap.numel() == 0:
        return d_ap.sum() * 0.0 + d_an.sum() * 0.0
    return torch.relu(d_ap - d_an + margin).mean()


def mining_stats(d_ap: Tensor, d_an: Tensor, margin: float) -> dict[str, float]:
    """What to log per batch: a falling ``active_fraction`` shows the miner running out of work.

    ``active_fraction`` is the fraction of triplets with a positive loss; the means are NaN when
    there are no triplets (nothing to average), ``active_fraction`` is then 0.
    """
    n = int(d_ap.numel())
    if n == 0:
        return {"active_fraction": 0.0, "mean_d_ap": float("nan"), "mean_d_an": float("nan"), "n_triplets": 0}
    d_ap = d_ap.detach().double()
    d_an = d_an.detach().double()
    active = (d_ap - d_an + margin) > 0
    return {
        "active_fraction": float(active.double().mean()),
        "mean_d_ap": float(d_ap.mean()),
        "mean_d_an": float(d_an.mean()),
        "n_triplets": n,
    }


@dataclass(frozen=True)
class Triplets:
    """Index tensors (same length, int64) into the batch: ``anchor[i], positive[i], negative[i]``."""

    anchor: Tensor
    positive: Tensor
    negative: Tensor

    def __len__(self) -> int:
        return int(self.anchor.numel())


def triplet_distances(dists: Tensor, triplets: Triplets) -> tuple[Tensor, Tensor]:
    """``(d_ap, d_an)`` gathered from the (differentiable) distance matrix."""
    return dists[triplets.anchor, triplets.positive], dists[triplets.anchor, triplets.negative]


class Miner(Protocol):
    """A triplet-selection strategy over one batch's distance matrix."""

    name: ClassVar[str]

    def mine(self, dists: Tensor, labels: Tensor, margin: float) -> Triplets: ...


def _masks(dists: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(positive, negative)`` boolean N x N masks; an image is never its own positive."""
    if dists.ndim != 2 or dists.shape[0] != dists.shape[1]:
        raise ValueError(f"expected a square distance matrix, got shape {tuple(dists.shape)}")
    if labels.shape != (dists.shape[0],):
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match {dists.shape[0]} embeddings")
    labels = labels.to(dists.device)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(dists.shape[0], dtype=torch.bool, device=dists.device)
    return same & ~eye, ~same


def _anchor_positive_pairs(pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor]:
    """Every (anchor, positive) pair whose anchor also has a negative, ordered by anchor then positive."""
    usable = pos & neg.any(dim=1, keepdim=True)
    a, p = usable.nonzero(as_tuple=True)
    return a, p


def _anchor_positive_pairs_of(dists: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The negative mask and every usable (anchor, positive) pair: what per-pair miners start from."""
    pos, neg = _masks(dists, labels)
    a, p = _anchor_positive_pairs(pos, neg)
    return neg, a, p


def _empty(device: torch.device) -> Triplets:
    e = torch.empty(0, dtype=torch.long, device=device)
    return Triplets(e, e, e)


class BatchHardMiner:
    """One triplet per anchor: its hardest positive (max d) and hardest negative (min d).

    Why: the "batch hard" of Hermans et al. (2017); strong signal per batch, but from the first
    epochs it can latch onto mislabelled or outlier images, so it is usually paired with P x K batches
    that are large enough. Ties go to the lowest index. Anchors without a positive or without a
    negative in the batch are skipped.
    """

    name: ClassVar[str] = "batch_hard"

    def mine(self, dists: Tensor, labels: Tensor, margin: float) -> Triplets:
        dists = dists.detach()
        pos, neg = _masks(dists, labels)
        keep = pos.any(dim=1) & neg.any(dim=1)
        if not bool(keep.any()):
            return _empty(dists.device)
        hardest_p = dists.masked_fill(~pos, float("-inf")).argmax(dim=1)
        hardest_n = dists.masked_fill(~neg, float("inf")).argmin(dim=1)
        anchors = keep.nonzero(as_tuple=True)[0]
        return Triplets(anchors, hardest_p[anchors], hardest_n[anchors])


class SemiHardMiner:
    """FaceNet's semi-hard mining: one triplet per anchor-positive pair.

    The negative is the hardest (smallest d(A,N)) among the semi-hard ones,
    ``d(A,P) < d(A,N) < d(A,P) + margin`` (strict): they violate the margin yet are not closer than
    the positive, which avoids the collapse that the very hardest negatives cause early in training.
    Fallback: when a pair has no semi-hard negative, the EASIEST negative (largest d(A,N)) is used,
    as in TensorFlow Addons' ``triplet_semihard_loss``; it usually gives zero loss, so the pair simply
    stops contributing instead of being forced onto a hard negative. Ties go to the lowest index.
    Anchors without a positive or without a negative in the batch are skipped.
    """

    name: ClassVar[str] = "semi_hard"

    def mine(self, dists: Tensor, labels: Tensor, margin: float) -> Triplets:
        dists = dists.detach()
        neg, a, p = _anchor_positive_pairs_of(dists, labels)
        if a.numel() == 0:
            return _empty(dists.device)
        d_ap = dists[a, p][:, None]  # M x 1
        d_an = dists[a]  # M x N
        neg_a = neg[a]
        semi = neg_a & (d_an > d_ap) & (d_an < d_ap + margin)
        hardest_semi = d_an.masked_fill(~semi, float("inf")).argmin(dim=1)
        easiest = d_an.masked_fill(~neg_a, float("-inf")).argmax(dim=1)
        n = torch.where(semi.any(dim=1), hardest_semi, easiest)
        return Triplets(a, p, n)


class RandomMiner:
    """Control: every anchor-positive pair with a uniformly random different-identity negative.

    Why: the baseline that shows what the informed miners buy. The generator is seeded once per
    miner, so a run is reproducible while successive batches still get fresh draws.
    """

    name: ClassVar[str] = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._gen = torch.Generator(device="cpu").manual_seed(seed)

    def mine(self, dists: Tensor, labels: Tensor, margin: float) -> Triplets:
        dists = dists.detach()
        neg, a, p = _anchor_positive_pairs_of(dists, labels)
        if a.numel() == 0:
            return _empty(dists.device)
        # uniform over the allowed columns: random scores on the CPU generator, -1 where not allowed
        scores = torch.rand(tuple(neg[a].shape), generator=self._gen).to(dists.device)
        n = scores.masked_fill(~neg[a], -1.0).argmax(dim=1)
        return Triplets(a, p, n)


MINERS: dict[str, type] = {m.name: m for m in (BatchHardMiner, SemiHardMiner, RandomMiner)}


def get_miner(name: str, **kwargs: object) -> Miner:
    """Instantiate a miner from :data:`MINERS` by name (the value in ``params.yaml``)."""
    try:
        cls = MINERS[name]
    except KeyError:
        raise ValueError(f"unknown miner {name!r}; known: {sorted(MINERS)}") from None
    return cls(**kwargs)


class PKSampler(Sampler[list[int]]):
    """Batches of P identities x K images each, for ``DataLoader(batch_sampler=...)``.

    Why: in-batch mining needs positives for every anchor and several identities for negatives.
    Only identities with at least 2 images are drawn (a single image has no positive, and
    repeating it K times would only create zero-distance "positives"). An identity with fewer than
    K images contributes all of them, topped up to K with replacement. One epoch visits every
    eligible identity once, in a fresh shuffled order (an incomplete last group is dropped), so
    ``len()`` = eligible identities // P unless ``batches_per_epoch`` is given. Seeded: epoch ``e``
    is drawn from ``(seed, e)``, so runs repeat and :meth:`set_epoch` can resume.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | Tensor,
        p: int,
        k: int,
        seed: int = 0,
        batches_per_epoch: int | None = None,
    ) -> None:
        if p < 2:
            raise ValueError(f"p must be >= 2 (negatives need a second identity), got {p}")
        if k < 2:
            raise ValueError(f"k must be >= 2 (anchors need a positive), got {k}")
        arr = labels.cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError("labels must be a 1-d array of integers")
        ids, inverse, counts = np.unique(arr, return_inverse=True, return_counts=True)
        order = np.argsort(inverse, kind="stable")
        groups = np.split(order, np.cumsum(counts)[:-1])
        self.by_identity: dict[int, np.ndarray] = {int(i): g for i, g, c in zip(ids, groups, counts) if c >= 2}
        self.identities = np.array(sorted(self.by_identity), dtype=np.int64)
        if len(self.identities) < p:
            raise ValueError(f"only {len(self.identities)} identities with >= 2 images; need p={p}")
        if batches_per_epoch is not None and batches_per_epoch < 1:
            raise ValueError(f"batches_per_epoch must be >= 1, got {batches_per_epoch}")
        self.p, self.k, self.seed = p, k, seed
        self.batches_per_epoch = batches_per_epoch
        self.epoch = 0

    def __len__(self) -> int:
        if self.batches_per_epoch is not None:
            return self.batches_per_epoch
        return len(self.identities) // self.p

    def set_epoch(self, epoch: int) -> None:
        """Choose which epoch the next ``iter()`` draws (for resuming a run)."""
        self.epoch = epoch

    def _images(self, rng: np.random.Generator, identity: int) -> list[int]:
        idx = self.by_identity[identity]
        if len(idx) >= self.k:
            chosen = rng.choice(idx, size=self.k, replace=False)
        else:
            chosen = np.concatenate([idx, rng.choice(idx, size=self.k - len(idx), replace=True)])
            rng.shuffle(chosen)
        return [int(i) for i in chosen]

    def _identity_stream(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Groups of P distinct identities; reshuffled whenever a pass over them ends."""
        while True:
            perm = rng.permutation(self.identities)
            for start in range(0, len(perm) - self.p + 1, self.p):
                yield perm[start : start + self.p]

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        groups = self._identity_stream(rng)
        for _ in range(len(self)):
            batch: list[int] = []
            for identity in next(groups):
                batch.extend(self._images(rng, int(identity)))
            yield batch
