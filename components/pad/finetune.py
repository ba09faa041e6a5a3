"""Transfer learning for PAD: the shipped pair fine-tuned on a camera's own live and attack frames.

What is trained: the deepest ``pad.finetune_stages`` stages of each member and its classifier head, from
the shipped weights, with a small learning rate; the earlier stages stay frozen, so their output for
every augmented copy of every frame is computed once (through the fast OpenCV path) and cached — the
way head-mode training caches backbone features — and an epoch costs seconds, not minutes, on a CPU.
Batch-norm statistics stay frozen (a few hundred frames of a few subjects cannot re-estimate them; left
free they drift to the training subjects). Each member learns on its own crop with its own loss, the
log-loss of "live" against "any attack class" (the source's two attack classes keep sharing the attack
mass as they were trained to), so the fused output stays an average of two calibrated members.

Augmentations, of the course's three: mirroring (a printed face mirrored is still a print) and small
crops (the face box moved and resized by a few percent before the source's crop: detector jitter).
No colour shifts: what gives a print away is colour and contrast — a printer's gamut, paper gloss,
halftone texture — and an RGB shift or a brightness/contrast jitter would teach the network to ignore
exactly that.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import nn

from facegate.components.core.images import load_image
from facegate.components.core.settings import Settings, build_config
from facegate.components.faces.types import FaceBox
from facegate.components.pad.data import PadSample
from facegate.components.pad.minifasnet import LIVE_CLASS, MiniFASNet, PadNet, crop_face, source_box, to_input_array
from facegate.components.pad.runtime import OpenCvGraph

Log = Callable[[str], None]
#: finetune_stages -> the first trained block: 0 the head (conv_6 and the classifier), 1 also the deepest
#: residual stage (5x5), 2 also the stage before it and its stride-2 block (10x10)
FIRST_TRAINED = {0: "conv_6_sep", 1: "conv_5", 2: "conv_4"}


@dataclass(frozen=True)
class PadFinetuneConfig:
    epochs: int
    lr: float
    batch_size: int
    weight_decay: float
    finetune_stages: int  # 0..2, see FIRST_TRAINED
    flip_p: float  # mirroring: chance a training sample is the mirrored copy
    crop_p: float  # small crops: chance a training sample is one of the jittered copies ...
    crop_copies: int  # ... of which each frame has this many (each also mirrored)
    crop_jitter: float  # the box moved and resized by up to this share of its size
    seed: int

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> PadFinetuneConfig:
        """params' ``pad`` section (and ``seed``); ``overrides`` (not None) win."""
        return build_config(cls, {**settings.pad.model_dump(), "seed": settings.seed}, **overrides)

    @property
    def start(self) -> int:
        """Index in ``MiniFASNet.BLOCKS`` of the first trained block."""
        return MiniFASNet.BLOCKS.index(FIRST_TRAINED[self.finetune_stages])


def jittered_box(box: FaceBox, rng: np.random.Generator, amount: float) -> tuple[float, float, float, float]:
    """The source-style ``[x, y, w, h]`` of ``box`` moved by up to ``amount`` of its size and scaled by
    ``1 +- amount``: a small crop of the same face, as another detector run would draw it."""
    x, y, w, h = (float(v) for v in source_box(box))
    scale = 1.0 + rng.uniform(-amount, amount)
    cx = x + w / 2 + rng.uniform(-amount, amount) * w
    cy = y + h / 2 + rng.uniform(-amount, amount) * h
    w, h = w * scale, h * scale
    return cx - w / 2, cy - h / 2, w, h


class _Trunk(nn.Module):
    def __init__(self, member: MiniFASNet, stop: int) -> None:
        super().__init__()
        self.member, self.stop = member, stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.member.trunk(x, self.stop)


@dataclass
class FeatureCopies:
    """Per member, the frozen trunk's output for every copy of every frame: ``N x copies x C x H x W``.

    Copy ``2j`` is crop variant ``j`` (0: the detector's box, 1..: jittered boxes), copy ``2j+1`` its mirror.
    """

    start: int
    feats: list[np.ndarray]

    @property
    def n_copies(self) -> int:
        return self.feats[0].shape[1]


def augmented_copies(
    net: PadNet,
    samples: Sequence[PadSample],
    boxes: Sequence[FaceBox],
    cfg: PadFinetuneConfig,
    max_pixels: int,
    log: Log = lambda message: None,
) -> FeatureCopies:
    """Each frame decoded once, cropped as the detector's box and ``crop_copies`` jittered boxes, each crop
    also mirrored; every member's frozen trunk run once per copy (OpenCV, the served path's speed)."""
    rng = np.random.default_rng(cfg.seed)
    trunks = [
        OpenCvGraph(_Trunk(cast(MiniFASNet, m), cfg.start), [(3, *s.input_hw)]) for m, s in zip(net.members, net.specs)
    ]
    per_member: list[list[np.ndarray]] = [[] for _ in net.specs]
    t0 = time.perf_counter()
    for i, (sample, box) in enumerate(zip(samples, boxes)):
        frame = load_image(sample.path, max_pixels)
        variants = [source_box(box)] + [jittered_box(box, rng, cfg.crop_jitter) for _ in range(cfg.crop_copies)]
        for m, spec in enumerate(net.specs):
            crops = []
            for bbox in variants:
                patch = crop_face(frame, bbox, spec, rgb=True)
                crops += [patch, np.ascontiguousarray(patch[:, ::-1])]
            per_member[m].append(trunks[m]([to_input_array(np.stack(crops))]))
        if (i + 1) % 200 == 0:
            log(f"PAD fine-tune: frozen features of {i + 1}/{len(samples)} frames ({time.perf_counter() - t0:.0f} s)")
    return FeatureCopies(cfg.start, [np.stack(f).astype(np.float32) for f in per_member])


def live_log_loss(logits: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
    """Mean binary log-loss of p(live) = softmax[LIVE_CLASS] against "any other class" (log-sum-exp)."""
    logp = torch.log_softmax(logits, dim=1)
    attack = torch.cat([logp[:, :LIVE_CLASS], logp[:, LIVE_CLASS + 1 :]], dim=1).logsumexp(dim=1)
    return -(live * logp[:, LIVE_CLASS] + (1.0 - live) * attack).mean()


def _trainable(net: PadNet, start: int) -> list[nn.Parameter]:
    """Blocks ``start`` onwards and the head of each member train; batch norm (statistics and affine) and
    everything earlier stay as shipped."""
    for p in net.parameters():
        p.requires_grad_(False)
    params = []
    for member in net.members:
        for name in (*MiniFASNet.BLOCKS[start:], "linear", "prob"):
            for module in getattr(member, name).modules():
                if not isinstance(module, nn.modules.batchnorm._BatchNorm):
                    params += list(module.parameters(recurse=False))
    for p in params:
        p.requires_grad_(True)
    net.train()
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return params


def _draw_copies(rng: np.random.Generator, n: int, copies: FeatureCopies, cfg: PadFinetuneConfig) -> np.ndarray:
    variants = copies.n_copies // 2
    crop = np.where(rng.random(n) < cfg.crop_p, rng.integers(1, max(variants, 2), n), 0) if variants > 1 else 0
    return 2 * np.asarray(crop) + (rng.random(n) < cfg.flip_p)


def finetune_pad(
    net: PadNet,
    copies: FeatureCopies,
    rows: np.ndarray,
    live: np.ndarray,
    cfg: PadFinetuneConfig,
    *,
    on_epoch: Callable[[int, dict], None] | None = None,
    log: Log = lambda message: None,
) -> tuple[PadNet, list[dict]]:
    """A fine-tuned copy of ``net`` (``net`` itself is untouched) and the per-epoch history.

    ``rows``: the training frames in ``copies``; ``live``: per frame of ``copies``. Live and attack frames
    are drawn in equal numbers per epoch (the smaller side repeated), so neither error is cheap to make.
    """
    if copies.start != cfg.start:
        raise ValueError(f"features cached before block {copies.start}, config trains from {cfg.start}")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = copy.deepcopy(net)
    opt = torch.optim.AdamW(_trainable(model, cfg.start), lr=cfg.lr, weight_decay=cfg.weight_decay)
    pos, neg = rows[live[rows]], rows[~live[rows]]
    if not len(pos) or not len(neg):
        raise ValueError("fine-tuning PAD needs live and attack frames")
    history = []
    for epoch in range(1, cfg.epochs + 1):
        t0, n, losses = time.perf_counter(), max(len(pos), len(neg)), []
        drawn = [rng.choice(side, n, replace=len(side) < n) for side in (pos, neg)]
        order = rng.permutation(np.concatenate(drawn))
        for begin in range(0, len(order), cfg.batch_size):
            batch = order[begin : begin + cfg.batch_size]
            which = _draw_copies(rng, len(batch), copies, cfg)
            target = torch.from_numpy(live[batch].astype(np.float32))
            loss = torch.stack(
                [
                    live_log_loss(
                        cast(MiniFASNet, m).forward_from(torch.from_numpy(f[batch, which]), cfg.start), target
                    )
                    for m, f in zip(model.members, copies.feats)
                ]
            ).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()) / len(model.members))
        row = {"epoch": epoch, "loss": float(np.mean(losses)), "seconds": time.perf_counter() - t0}
        history.append(row)
        log(f"PAD fine-tune epoch {epoch}/{cfg.epochs}: loss {row['loss']:.4f} ({row['seconds']:.1f} s)")
        if on_epoch is not None:
            on_epoch(epoch, row)
    return model.eval(), history
