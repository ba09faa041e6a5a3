"""Transfer learning of the embedding with triplet loss and online mining in P x K batches.

``train_head``: backbone frozen, features cached, only the head learns (seconds on CPU; with
``train.trainable: gates`` only SFace's position gates, facegate.components.embedding.position_gate).
``train_finetune``: the last N backbone stages learn too, on augmented chips (minutes to hours).
Both return a per-epoch history with the mining statistics, so a run can be judged by whether its
triplets stay active, not only by its loss. They train on ``cfg.device`` (``embedding.device``, resolved
when the config is built, so a missing GPU fails before any data is read): sampling and augmentation
stay on the CPU with the same random streams, batches move to the device, and the model comes back to
the CPU when training ends (what is logged and registered loads anywhere).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from facegate.components.core.devices import resolve_torch_device
from facegate.components.core.settings import build_config
from facegate.components.embedding.dataset_mining import mine_dataset_triplets, save_triplets, still_violating
from facegate.components.embedding.fusion import FusedHead
from facegate.components.embedding.model import EmbeddingModel, embed_from_features
from facegate.components.embedding.position_gate import PositionGatedHead, gate_parameters
from facegate.components.embedding.triplets import (
    PKSampler,
    get_miner,
    mining_stats,
    pairwise_sq_dists,
    triplet_distances,
    triplet_loss,
)

if TYPE_CHECKING:
    import pandas as pd

    from facegate.components.core.settings import Settings


@dataclass(frozen=True)
class TrainConfig:
    """One training run's knobs: params' ``train.*`` and the seed (no defaults here: params.yaml has them)."""

    miner: str
    margin: float
    p: int
    k: int
    epochs: int
    batches_per_epoch: int | None
    lr: float
    weight_decay: float
    pretrained_decay: float  # decoupled decay toward the starting (pretrained) weights, L2-SP style
    seed: int
    finetune_stages: int
    flip_prob: float  # head mode: chance of using the mirror image's cached features
    trainable: str  # head mode: "all" of the head, or "gates" (SFace's position gates) only
    gate_lr: float  # learning rate of SFace's position gates (no pretrained decay: they start at 1)
    gate_bare_penalty: float  # head mode: weight of the gates' distance from 1 on non-augmented samples
    device: str  # embedding.device resolved ('cpu', 'cuda:0'): a string, so the config stays JSON

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> TrainConfig:
        """``train.*``, ``seed`` and ``embedding.device`` from the settings; ``overrides`` (epochs=...,
        lr=..., device=...) win when not None. A GPU asked for but missing is ``DeviceUnavailable`` here."""
        device = resolve_torch_device(
            overrides.pop("device", None) or settings.embedding.device, key="embedding.device"
        )
        return build_config(
            cls, {**settings.train.model_dump(), "seed": settings.seed, "device": str(device)}, **overrides
        )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _run_epochs(
    model, params, batches_fn, embed_fn, labels_t, cfg: TrainConfig, on_epoch: Callable[[int, dict], None] | None
) -> list[dict]:
    """The epochs on ``cfg.device`` (the model is already there); the model ends on the CPU, in eval mode.
    ``params``: what learns at ``cfg.lr`` with the pretrained decay; the position gates among them learn
    at ``cfg.gate_lr`` without it."""
    device = torch.device(cfg.device)
    try:
        return _epochs(model, params, batches_fn, embed_fn, labels_t.to(device), cfg, on_epoch)
    finally:
        model.cpu().eval()


def _param_groups(model: EmbeddingModel, params: list) -> tuple[list, list]:
    """(ordinary parameters, gate parameters) of ``params``."""
    gates = {id(p) for p in gate_parameters(model.head)}
    return [p for p in params if id(p) not in gates], [p for p in params if id(p) in gates]


@torch.no_grad()
def _decay_toward(params, start, rate: float) -> None:
    """p <- p - rate (p - p0): weight decay centred on the pretrained weights instead of zero (L2-SP).
    A head that learns masked faces then keeps what the pretrained embedding knew of bare ones."""
    for p, p0 in zip(params, start):
        p.sub_(p - p0, alpha=rate)


def _epochs(
    model, params, batches_fn, embed_fn, labels_t, cfg: TrainConfig, on_epoch: Callable[[int, dict], None] | None
) -> list[dict]:
    miner = get_miner(cfg.miner, seed=cfg.seed) if cfg.miner == "random" else get_miner(cfg.miner)
    params, gates = _param_groups(model, params)
    groups = [{"params": params}] + ([{"params": gates, "lr": cfg.gate_lr, "weight_decay": 0.0}] if gates else [])
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = [p.detach().clone() for p in params] if cfg.pretrained_decay > 0 else []
    history = []
    for epoch in range(cfg.epochs):
        model.train()
        totals = {"loss": 0.0, "active_fraction": 0.0, "mean_d_ap": 0.0, "mean_d_an": 0.0, "n_triplets": 0}
        n_batches = 0
        for idx in batches_fn(epoch):
            emb = embed_fn(idx)
            emb, penalty = emb if isinstance(emb, tuple) else (emb, None)
            labels = labels_t[idx.to(labels_t.device)]
            dists = pairwise_sq_dists(emb)
            trip = miner.mine(dists.detach(), labels, cfg.margin)
            d_ap, d_an = triplet_distances(dists, trip)
            loss = triplet_loss(d_ap, d_an, cfg.margin)
            if penalty is not None:
                loss = loss + cfg.gate_bare_penalty * penalty
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if start:
                _decay_toward(params, start, cfg.lr * cfg.pretrained_decay)
            stats = mining_stats(d_ap.detach(), d_an.detach(), cfg.margin)
            totals["loss"] += float(loss.detach())
            for key in ("active_fraction", "mean_d_ap", "mean_d_an"):
                totals[key] += float(np.nan_to_num(stats[key]))
            totals["n_triplets"] += int(stats["n_triplets"])
            n_batches += 1
        row = {"epoch": epoch, **{k: (v / max(n_batches, 1) if k != "n_triplets" else v) for k, v in totals.items()}}
        history.append(row)
        if on_epoch:
            on_epoch(epoch, row)
    model.eval()
    return history


def train_head(
    model: EmbeddingModel,
    feats: np.ndarray,
    flip_feats: np.ndarray | None,
    labels: np.ndarray,
    cfg: TrainConfig,
    on_epoch: Callable[[int, dict], None] | None = None,
    aug_feats: list[np.ndarray] | tuple = (),
    aug_prob: float = 0.0,
) -> list[dict]:
    """Head-only training on cached features.

    Augmentation happens in feature space because the backbone is frozen: each sample uses its
    mirror's features with ``cfg.flip_prob``, then, with ``aug_prob``, the features of one of its
    albumentations copies (``aug_feats``: one N x D array per copy, rows aligned with ``feats``).
    """
    seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    model.to(device)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    feats_t = torch.from_numpy(np.ascontiguousarray(feats))
    flip_t = torch.from_numpy(np.ascontiguousarray(flip_feats)) if flip_feats is not None else None
    aug_t = torch.stack([torch.from_numpy(np.ascontiguousarray(a)) for a in aug_feats]) if len(aug_feats) else None
    if aug_t is not None and aug_t.shape[1:] != feats_t.shape:
        raise ValueError(f"aug_feats must be copies of feats' shape {tuple(feats_t.shape)}, got {tuple(aug_t.shape)}")
    labels_t = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    sampler = PKSampler(labels, cfg.p, cfg.k, seed=cfg.seed, batches_per_epoch=cfg.batches_per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed)

    def batches(epoch: int):
        sampler.set_epoch(epoch)
        for b in sampler:
            yield torch.tensor(b, dtype=torch.int64)

    gated = model.head if isinstance(model.head, (PositionGatedHead, FusedHead)) else None  # heads with gates
    penalised = cfg.gate_bare_penalty > 0 and gated is not None

    def embed(idx: torch.Tensor):
        x = feats_t[idx]
        if flip_t is not None and cfg.flip_prob > 0:
            use_flip = torch.rand(len(idx), generator=gen) < cfg.flip_prob
            x = torch.where(use_flip[:, None], flip_t[idx], x)
        use_aug = torch.zeros(len(idx), dtype=torch.bool)
        if aug_t is not None and aug_prob > 0:
            use_aug = torch.rand(len(idx), generator=gen) < aug_prob
            copy = torch.randint(len(aug_t), (len(idx),), generator=gen)
            x = torch.where(use_aug[:, None], aug_t[copy, idx], x)
        x = x.to(device, non_blocking=True)
        emb = model.embed_features(x)
        if gated is None or not penalised or bool(use_aug.all()):
            return emb
        return emb, gated.bare_penalty(x[~use_aug.to(device)])  # bare faces keep their gates near 1

    return _run_epochs(model, head_parameters(model, cfg.trainable), batches, embed, labels_t, cfg, on_epoch)


def head_parameters(model: EmbeddingModel, trainable: str) -> list:
    """What head training moves (``train.trainable``): the whole head, or only SFace's position gates
    (``gates``; a model without gates, dlib's alone, still trains its whole head)."""
    gates = gate_parameters(model.head) if trainable == "gates" else []
    return gates or list(model.head.parameters())


def train_finetune(
    model: EmbeddingModel,
    chips: np.ndarray,
    labels: np.ndarray,
    cfg: TrainConfig,
    augment: Callable[[np.ndarray], np.ndarray] | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> list[dict]:
    """Head plus the last ``cfg.finetune_stages`` backbone stages, on (augmented) uint8 chips."""
    seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    model.to(device)
    model.backbone.freeze_all_but_last(cfg.finetune_stages)
    for p in model.head.parameters():
        p.requires_grad_(True)
    labels_t = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    sampler = PKSampler(labels, cfg.p, cfg.k, seed=cfg.seed, batches_per_epoch=cfg.batches_per_epoch)

    def batches(epoch: int):
        sampler.set_epoch(epoch)
        for b in sampler:
            yield torch.tensor(b, dtype=torch.int64)

    def embed(idx: torch.Tensor) -> torch.Tensor:
        batch = np.stack([augment(chips[i]) if augment else chips[i] for i in idx.tolist()])
        batch_t = torch.from_numpy(batch).to(device, non_blocking=True)  # uint8: 4x fewer bytes than float
        x = model.backbone.preprocess(batch_t).contiguous(memory_format=torch.channels_last)
        return model(x)

    params = [p for p in model.parameters() if p.requires_grad]
    return _run_epochs(model, params, batches, embed, labels_t, cfg, on_epoch)


def train_head_on_triplets(
    model: EmbeddingModel, feats: np.ndarray, triplets: pd.DataFrame, cfg: TrainConfig, batch_size: int = 256
) -> dict:
    """One pass of head training over a mined triplet list (dataset-wide mining's training step)."""
    seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    feats_t = torch.from_numpy(np.ascontiguousarray(feats))
    idx = {c: torch.from_numpy(triplets[c].to_numpy(np.int64).copy()) for c in ("anchor", "positive", "negative")}
    order = torch.randperm(len(triplets), generator=torch.Generator().manual_seed(cfg.seed))
    model.to(device)
    opt = torch.optim.AdamW(model.head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    losses, active = [], []
    try:
        for start in range(0, len(order), batch_size):
            sel = order[start : start + batch_size]
            ea, ep, en = (
                model.embed_features(feats_t[idx[c][sel]].to(device, non_blocking=True))
                for c in ("anchor", "positive", "negative")
            )
            d_ap, d_an = ((ea - ep) ** 2).sum(1), ((ea - en) ** 2).sum(1)
            loss = triplet_loss(d_ap, d_an, cfg.margin)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            active.append(float(mining_stats(d_ap.detach(), d_an.detach(), cfg.margin)["active_fraction"]))
    finally:
        model.cpu().eval()
    return {
        "loss": float(np.mean(losses)) if losses else 0.0,
        "active_fraction": float(np.mean(active)) if active else 0.0,
        "n_triplets": int(len(triplets)),
    }


def train_head_dataset_mining(
    model: EmbeddingModel,
    feats: np.ndarray,
    flip_feats: np.ndarray | None,
    labels: np.ndarray,
    cfg: TrainConfig,
    rounds: int = 3,
    strategy: Literal["hard", "semi_hard"] = "semi_hard",
    k: int = 50,
    artifact_dir=None,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> list[dict]:
    """Online rounds alternating with dataset-wide FAISS mining.

    Round 0 trains with in-batch mining; each later round embeds the training set, mines triplets
    over all identities, keeps from the previous round's list only those still violating the margin,
    adds the new ones and trains on that list. Each round's list is written to ``artifact_dir``.
    """
    import pandas as pd  # heavy: pandas takes ~0.5 s to import; only this path needs it

    history = train_head(model, feats, flip_feats, labels, cfg, on_epoch=on_epoch)
    carried = None
    for r in range(1, rounds + 1):
        emb = embed_from_features(model, feats)
        mined = mine_dataset_triplets(emb, labels, cfg.margin, k=k, strategy=strategy, seed=cfg.seed + r)
        kept = still_violating(carried, emb, cfg.margin) if carried is not None else mined.iloc[:0]
        violating_new = still_violating(mined, emb, cfg.margin)
        triplets = pd.concat([kept, violating_new], ignore_index=True).drop_duplicates(
            ["anchor", "positive", "negative"]
        )
        if artifact_dir is not None:
            save_triplets(triplets, artifact_dir / f"triplets-round{r}.parquet")
        row = {
            "epoch": len(history),
            "round": r,
            "mined": int(len(mined)),
            "carried_still_violating": int(len(kept)),
            **train_head_on_triplets(model, feats, triplets, cfg),
        }
        history.append(row)
        if on_epoch:
            on_epoch(row["epoch"], row)
        carried = triplets
    return history
