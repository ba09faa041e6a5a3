"""Training the two-stage face-mask detector (facegate.components.detection.two_stage): the box
correction and proposals from RetinaFace on the training split, then the mask-state classifier on
crops in two phases (frozen features, then the deepest stages fine-tuned).

Why a module of its own: the detector that is logged and loaded (two_stage) needs none of this, and
each phase reads as one function. Every random stream is seeded from ``cfg.seed``
(facegate.components.detection.seeding), so the same seed gives the same model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facegate.components.detection.seeding import seeded_training
from facegate.components.detection.two_stage import (
    DELTA_SCALE,
    MaskStateClassifier,
    TwoStageConfig,
    TwoStageDetector,
    apply_box_correction,
    box_deltas,
    face_crop,
    fit_box_correction,
)
from facegate.components.faces.augment import colour_shifting
from facegate.components.faces.boxes import iou_matrix
from facegate.components.networks.mobilenet_v2 import load_mobilenet_v2_imagenet, normalise

__all__ = ["train_two_stage", "TwoStageResult", "CropItems", "crop_items", "crop_accuracy"]


@dataclass
class TwoStageResult:
    model: TwoStageDetector
    box_correction: np.ndarray
    class_counts: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    train_minutes: float = 0.0


def _colour(cfg: TwoStageConfig, seed: int):
    import albumentations as A  # heavy: albumentations pulls in scipy and more; only augmentation needs it

    return A.Compose(colour_shifting(cfg), seed=seed)


@dataclass
class CropItems:
    """Training crops: image index, the crop's box (a proposal or a ground-truth box), label (C: not a
    face) and the ground-truth box it should become (the crop box itself for background)."""

    image: np.ndarray
    box: np.ndarray
    label: np.ndarray
    target: np.ndarray


def crop_items(
    samples,
    proposals: list[np.ndarray],
    n_classes: int,
    rng: np.random.Generator,
    pos_iou: float = 0.4,
    neg_iou: float = 0.2,
    negatives_per_image: int = 2,
) -> CropItems:
    """Every ground-truth face (its own box), every proposal overlapping one by >= ``pos_iou`` (the
    errors the refinement must undo) and a few proposals overlapping none by ``neg_iou`` (not a face)."""
    img, box, lab, tgt = [], [], [], []
    for i, s in enumerate(samples):
        for b, lab_ in zip(s.boxes, s.labels):
            img.append(i)
            box.append(b)
            lab.append(int(lab_))
            tgt.append(b)
        p = proposals[i] if i < len(proposals) else np.zeros((0, 4))
        if not len(p):
            continue
        ious = iou_matrix(p, s.boxes) if len(s.boxes) else np.zeros((len(p), 1))
        best, arg = ious.max(1), ious.argmax(1)
        for j in np.flatnonzero(best >= pos_iou):
            img.append(i)
            box.append(p[j])
            lab.append(int(s.labels[arg[j]]))
            tgt.append(s.boxes[arg[j]])
        neg = np.flatnonzero(best < neg_iou)[: negatives_per_image * 3]
        for j in rng.permutation(neg)[:negatives_per_image]:
            img.append(i)
            box.append(p[j])
            lab.append(n_classes)
            tgt.append(p[j])
    return CropItems(
        np.asarray(img, np.int64),
        np.asarray(box, np.float64).reshape(-1, 4),
        np.asarray(lab, np.int64),
        np.asarray(tgt, np.float64).reshape(-1, 4),
    )


def _crops(
    samples,
    items: CropItems,
    idx: np.ndarray,
    cfg: TwoStageConfig,
    rng: np.random.Generator,
    colour,
    plain: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Crops of items ``idx`` (jittered, mirrored, colour-shifted unless ``plain``) and their box targets."""
    crops, deltas = [], []
    for k in idx:
        s, box, target = samples[items.image[k]], items.box[k], items.target[k]
        if not plain:
            j = cfg.jitter
            w, h = box[2] - box[0], box[3] - box[1]
            c = (box[:2] + box[2:]) / 2 + rng.uniform(-j / 2, j / 2, 2) * (w, h)
            w, h = w * rng.uniform(1 - j, 1 + j), h * rng.uniform(1 - j, 1 + j)
            box = np.array([c[0] - w / 2, c[1] - h / 2, c[0] + w / 2, c[1] + h / 2])
        flip = (not plain) and bool(rng.random() < cfg.flip_p)
        crop = face_crop(s.image, box, cfg.crop_size, cfg.crop_context, flip=flip)
        d = box_deltas(box[None], target[None])[0]
        if flip:
            d[0] = -d[0]
        crops.append(crop if plain else colour(image=crop)["image"])
        deltas.append(d / DELTA_SCALE)
    return np.stack(crops), np.asarray(deltas, np.float32)


def _class_weights(labels: np.ndarray, n: int) -> np.ndarray:
    counts = np.bincount(labels, minlength=n).astype(np.float64)
    w = counts.sum() / np.maximum(counts, 1) / n
    return w / w[labels].mean()


def _batches(labels: np.ndarray, cfg: TwoStageConfig, rng: np.random.Generator, n_classes: int):
    """Index batches for one epoch: class-balanced draws with ``balance: sampling``, a shuffle otherwise."""
    if cfg.balance == "sampling":
        p = _class_weights(labels, n_classes)[labels]
        order = rng.choice(len(labels), size=len(labels), replace=True, p=p / p.sum())
    else:
        order = rng.permutation(len(labels))
    return [order[a : a + cfg.batch_size] for a in range(0, len(order), cfg.batch_size)]


def _loss(logits, deltas, labels, target, n_cls, loss_w) -> torch.Tensor:
    cls = F.cross_entropy(logits, labels, weight=loss_w)
    face = labels < n_cls
    box = F.smooth_l1_loss(deltas[face], target[face], reduction="mean") if bool(face.any()) else deltas.sum() * 0
    return cls + box


def train_two_stage(
    train,
    val,
    cfg: TwoStageConfig,
    on_epoch: Callable[[str, int, dict], None] | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> TwoStageResult:
    """RetinaFace on ``box_fit_images`` training images: the box correction, then the proposals the
    classifier learns from (with every ground-truth face); the classifier: frozen features of
    ``frozen_copies`` crops per item, then ``finetune_epochs`` fine-tuned on fresh jittered crops.
    Every random stream is seeded from ``cfg.seed`` (the same seed gives the same model)."""
    with seeded_training(cfg.seed, cfg.threads) as rng:
        start = time.perf_counter()
        n_cls = len(cfg.classes)
        classifier = MaskStateClassifier(n_cls, load_mobilenet_v2_imagenet(), cfg.crop_size)
        model = TwoStageDetector(
            classifier,
            cfg.classes,
            cfg.crop_size,
            cfg.crop_context,
            cfg.proposal_scale,
            cfg.proposal_score_threshold,
            cfg.proposal_nms_iou,
            np.array([0.0, 0.0, 1.0, 1.0]),
            flip_tta=cfg.flip_tta,
        )
        corr, proposals = _training_proposals(model, train, cfg, rng, log, start)
        result = TwoStageResult(model, corr)
        items = crop_items(train, proposals, n_cls, rng)
        labels = items.label
        result.class_counts = {c: int((labels == k).sum()) for k, c in enumerate(cfg.classes + ("background",))}
        log(f"{len(labels)} training crops: {result.class_counts}; balance={cfg.balance}")
        run = _ClassifierRun(
            train,
            val,
            cfg,
            items,
            rng,
            _colour(cfg, cfg.seed),
            _loss_weights(labels, cfg, n_cls),
            model,
            result,
            on_epoch,
            log,
        )
        if cfg.frozen_epochs > 0:
            _train_frozen(run)
        if cfg.finetune_epochs > 0:
            _train_finetune(run)
        classifier.eval()
        model.eval()
        result.train_minutes = (time.perf_counter() - start) / 60.0
    return result


def _training_proposals(
    model: TwoStageDetector,
    train,
    cfg: TwoStageConfig,
    rng: np.random.Generator,
    log: Callable[[str], None],
    start: float,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """RetinaFace on at most ``box_fit_images`` TRAINING images (never the held-out ones): the box
    correction (its boxes -> the annotators'), set on the model, and the corrected proposals per image."""
    picked = np.sort(rng.permutation(len(train))[: cfg.box_fit_images])
    raw = [model.propose(train[i].image) for i in picked]
    corr = fit_box_correction([b[s >= 0.5] for b, s in raw], [train[i].boxes for i in picked])
    model.box_correction.copy_(torch.tensor(corr))
    log(
        f"box correction (dx, dy, sw, sh) {np.round(corr, 3).tolist()} from {len(picked)} training images "
        f"({time.perf_counter() - start:.0f} s)"
    )
    proposals = [np.zeros((0, 4))] * len(train)
    for i, (b, s) in zip(picked, raw):
        proposals[i] = apply_box_correction(b[s >= 0.1], corr)
    return corr, proposals


def _loss_weights(labels: np.ndarray, cfg: TwoStageConfig, n_cls: int) -> torch.Tensor:
    """Cross-entropy class weights: inverse frequency with ``balance: loss`` (mean 1 over the samples),
    else ones."""
    if cfg.balance != "loss":
        return torch.ones(n_cls + 1)
    w = _class_weights(labels, n_cls + 1)
    return torch.tensor(
        [w[labels == k][0] if (labels == k).any() else 1.0 for k in range(n_cls + 1)], dtype=torch.float32
    )


@dataclass
class _ClassifierRun:
    """What both classifier phases share: the data, the seeded generator and colour shift, the loss
    weights, the model and the result they add epochs to."""

    train: list
    val: list
    cfg: TwoStageConfig
    items: CropItems
    rng: np.random.Generator
    colour: Callable
    loss_w: torch.Tensor
    model: TwoStageDetector
    result: TwoStageResult
    on_epoch: Callable[[str, int, dict], None] | None
    log: Callable[[str], None]

    def finish(self, phase: str, losses: list[float], t0: float, last: bool) -> None:
        """One epoch's row in the history (the held-out crops once per phase: CPU time), logged."""
        epoch_no = len(self.result.history) + 1
        row = {"loss": float(np.mean(losses)), "epoch_s": time.perf_counter() - t0}
        if self.val and last:
            row.update(crop_accuracy(self.model.classifier, self.val, self.cfg))
        self.result.history.append({"phase": phase, "epoch": epoch_no, **row})
        self.log(f"{phase} epoch {epoch_no}: " + ", ".join(f"{k}={v:.4f}" for k, v in row.items()))
        if self.on_epoch:
            self.on_epoch(phase, epoch_no, row)


def _train_frozen(run: _ClassifierRun) -> None:
    """Phase 1: the backbone fixed; features of ``frozen_copies`` crops per item (the plain crop, then
    jittered ones) cached once, the heads trained on them."""
    cfg, classifier, labels = run.cfg, run.model.classifier, run.items.label
    n_cls = len(cfg.classes)
    classifier.backbone.freeze_all_but_last(0)
    classifier.eval()
    t0 = time.perf_counter()
    all_idx = np.arange(len(labels))
    feat_parts, label_parts, target_parts = [], [], []
    with torch.inference_mode():
        for copy in range(max(1, cfg.frozen_copies)):
            for a in range(0, len(all_idx), 64):
                crops, d = _crops(run.train, run.items, all_idx[a : a + 64], cfg, run.rng, run.colour, plain=copy == 0)
                feat_parts.append(classifier.features(normalise(crops)).half())
                target_parts.append(torch.from_numpy(d))
            label_parts.append(labels)
    feats_t, flabels, ftargets = torch.cat(feat_parts), np.concatenate(label_parts), torch.cat(target_parts)
    run.log(f"cached features of {len(flabels)} crops ({time.perf_counter() - t0:.0f} s)")
    head_params = list(classifier.fc.parameters()) + list(classifier.box.parameters())
    opt = torch.optim.AdamW(head_params, lr=cfg.lr_head, weight_decay=cfg.weight_decay)
    for ep in range(cfg.frozen_epochs):
        t0, losses = time.perf_counter(), []
        for idx in _batches(flabels, cfg, run.rng, n_cls + 1):
            t = torch.from_numpy(idx)
            logits, deltas = classifier.heads(feats_t[t].float())
            loss = _loss(logits, deltas, torch.from_numpy(flabels[idx]), ftargets[t], n_cls, run.loss_w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        run.finish("frozen", losses, t0, ep == cfg.frozen_epochs - 1)


def _train_finetune(run: _ClassifierRun) -> None:
    """Phase 2: the deepest ``finetune_stages`` stages unfrozen (BN statistics stay ImageNet's), fresh
    jittered crops each epoch, a one-cycle schedule."""
    cfg, classifier, labels = run.cfg, run.model.classifier, run.items.label
    n_cls = len(cfg.classes)
    classifier.backbone.freeze_all_but_last(cfg.finetune_stages)
    for p in classifier.backbone.classifier.parameters():  # ImageNet's classifier: unused here
        p.requires_grad_(False)
    params = [p for p in classifier.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr_finetune, weight_decay=cfg.weight_decay)
    steps = cfg.finetune_epochs * math.ceil(len(labels) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr_finetune, total_steps=steps, pct_start=0.15)
    for ep in range(cfg.finetune_epochs):
        t0, losses = time.perf_counter(), []
        classifier.train()
        for m in classifier.backbone.modules():  # BN statistics stay ImageNet's: the head learned on them
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        for idx in _batches(labels, cfg, run.rng, n_cls + 1):
            crops, d = _crops(run.train, run.items, idx, cfg, run.rng, run.colour)
            logits, deltas = classifier.heads(classifier.features(normalise(crops)))
            loss = _loss(logits, deltas, torch.from_numpy(labels[idx]), torch.from_numpy(d), n_cls, run.loss_w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        run.finish("finetune", losses, t0, ep == cfg.finetune_epochs - 1)


def crop_accuracy(classifier: MaskStateClassifier, samples, cfg: TwoStageConfig) -> dict[str, float]:
    """Accuracy and per-class recall of the classifier on the ground-truth crops of ``samples``."""
    crops, label_list = [], []
    for s in samples:
        for b, lab in zip(s.boxes, s.labels):
            crops.append(face_crop(s.image, b, cfg.crop_size, cfg.crop_context))
            label_list.append(int(lab))
    if not crops:
        return {}
    was = classifier.training
    classifier.eval()
    with torch.inference_mode():
        pred = torch.cat(
            [
                classifier(normalise(np.stack(crops[a : a + 128])))[:, : len(cfg.classes)].argmax(1)
                for a in range(0, len(crops), 128)
            ]
        ).numpy()
    classifier.train(was)
    labels = np.asarray(label_list)
    out = {"val_crop_accuracy": float((pred == labels).mean())}
    for k, c in enumerate(cfg.classes):
        if (labels == k).any():
            out[f"val_crop_recall_{c}"] = float((pred[labels == k] == k).mean())
    return out
