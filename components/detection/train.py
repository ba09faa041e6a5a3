"""Training the detector by transfer learning, in two phases.

1. frozen: the ImageNet backbone is fixed, so its features of ``frozen_copies`` versions of every
   training image (the plain letterboxed image, then augmented copies) are computed once and cached
   (float16, in memory); the pyramid and head train on them for ``frozen_epochs`` — cheap epochs.
2. finetune: the deepest ``finetune_stages`` backbone stages are unfrozen and everything trains on
   freshly augmented images each epoch, at a lower learning rate with a cosine schedule.

Anchors come first: k-means (1 - IoU) on the training boxes as the model sees them (letterboxed).
Training runs on ``cfg.device`` (``detection.device``, resolved when the config is built, so a missing
GPU fails before any image is read): images are augmented on the CPU, the cached features stay in
(pinned, for a GPU) host memory, batches move to the device, and the model comes back to the CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from facegate.components.core.devices import loader_options, resolve_torch_device
from facegate.components.core.settings import build_config
from facegate.components.detection.anchors import kmeans_anchors, mean_best_iou
from facegate.components.detection.augment import BoxAugmentSettings, augment_sample, box_augmentation, letterbox_sample
from facegate.components.detection.data import DetectionSample, truths_of
from facegate.components.detection.decode import detect_images
from facegate.components.detection.encoding import GridLayout, encode_targets
from facegate.components.detection.loss import LossWeights, yolo_loss
from facegate.components.detection.metrics import evaluate, voc_map
from facegate.components.detection.model import YoloDetector, build_detector, layout_from
from facegate.components.detection.seeding import seeded_training
from facegate.components.networks.mobilenet_v2 import normalise

if TYPE_CHECKING:
    from facegate.components.core.settings import Settings

__all__ = ["DetectTrainConfig", "fit_anchors", "train_detector", "TrainResult"]


@dataclass(frozen=True)
class DetectTrainConfig:
    """One detector training run: params' ``detection`` section and the seed, built by ``from_settings``.

    No defaults for what params holds (the one source of them); ``loss`` and ``augment`` are built
    from the same section's ``lambda_*`` / ``ignore_iou`` and augmentation keys.
    """

    classes: tuple[str, ...]
    input_size: int
    strides: tuple[int, ...]
    anchors_per_scale: int
    width: int
    batch_size: int
    frozen_epochs: int
    frozen_copies: int
    lr_head: float
    finetune_epochs: int
    finetune_stages: int
    lr_finetune: float
    weight_decay: float
    loss: LossWeights
    augment: BoxAugmentSettings
    eval_score_threshold: float
    nms_iou: float
    max_detections: int
    eval_every: int
    seed: int
    device: str  # detection.device resolved ('cpu', 'cuda:0'): a string, so the config stays JSON
    threads: int = 2  # CPU threads for training (not a param: the machines have 2 cores)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> DetectTrainConfig:
        """``detection.*`` and ``seed``; ``overrides`` (frozen_epochs=..., device=...) win when not None.
        A GPU asked for but missing is ``DeviceUnavailable`` here, naming ``detection.device``."""
        device = resolve_torch_device(
            overrides.pop("device", None) or settings.detection.device, key="detection.device"
        )
        return build_config(
            cls, {**settings.detection.model_dump(), "seed": settings.seed, "device": str(device)}, **overrides
        )


@dataclass
class TrainResult:
    model: YoloDetector
    anchors: np.ndarray
    anchor_mean_iou: float
    history: list[dict] = field(default_factory=list)
    train_minutes: float = 0.0
    dropped_targets: int = 0


def fit_anchors(samples: list[DetectionSample], cfg: DetectTrainConfig) -> tuple[np.ndarray, float]:
    """k-means anchors on the training boxes in input pixels; and the mean best IoU they reach."""
    wh_parts = []
    for s in samples:
        scale = cfg.input_size / max(s.image.shape[:2])
        b = s.boxes * scale
        wh_parts.append(np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1))
    wh = np.concatenate(wh_parts)
    anchors = kmeans_anchors(wh, cfg.anchors_per_scale * len(cfg.strides), seed=cfg.seed)
    return anchors, mean_best_iou(wh, anchors)


def _targets(layout: GridLayout, boxes: np.ndarray, labels: np.ndarray) -> tuple[list[np.ndarray], int]:
    t = encode_targets(boxes, labels, layout)
    return t.grids, t.dropped


def _stack_targets(items: list[list[np.ndarray]]) -> list[torch.Tensor]:
    return [torch.from_numpy(np.stack([it[s] for it in items])) for s in range(len(items[0]))]


def _step(model, opt, preds, targets, gts, cfg) -> dict[str, float]:
    device = preds[0].device
    targets = [t.to(device, non_blocking=True) for t in targets]
    gts = [g.to(device, non_blocking=True) for g in gts]
    parts = yolo_loss(preds, targets, gts, model.anchors, model.strides, cfg.loss)
    opt.zero_grad(set_to_none=True)
    parts["total"].backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 10.0)
    opt.step()
    return {k: float(v.detach()) for k, v in parts.items()}


def _images(imgs: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """uint8 images to the device first (4x fewer bytes than float), normalised there."""
    return normalise(torch.from_numpy(np.stack(imgs)).to(device, non_blocking=True))


def quick_map50(model: YoloDetector, val: list[DetectionSample], cfg: DetectTrainConfig) -> float:
    dets = detect_images(
        model,
        [s.image for s in val],
        score_threshold=cfg.eval_score_threshold,
        iou_threshold=cfg.nms_iou,
        max_detections=cfg.max_detections,
    )
    return voc_map(dets, truths_of(val), len(cfg.classes))[0]


def train_detector(
    train: list[DetectionSample],
    val: list[DetectionSample],
    cfg: DetectTrainConfig,
    on_epoch: Callable[[str, int, dict], None] | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> TrainResult:
    """Fit anchors, build the model, run both phases; ``on_epoch(phase, global_epoch, row)`` after each.
    The model trains on ``cfg.device`` and is returned on the CPU. Every random stream is seeded from
    ``cfg.seed`` (the same seed gives the same model on the same device)."""
    with seeded_training(cfg.seed, cfg.threads) as rng:
        device = torch.device(cfg.device)
        start = time.perf_counter()
        anchors, anchor_iou = fit_anchors(train, cfg)
        log(f"anchors (w, h): {np.round(anchors, 1).tolist()} mean best IoU {anchor_iou:.3f}")
        layout = layout_from(cfg.input_size, cfg.strides, anchors, len(cfg.classes))
        model = build_detector(layout, cfg.classes, width=cfg.width)
        result = TrainResult(model, anchors, anchor_iou)
        model.to(device)
        try:
            _train_phases(model, result, train, val, cfg, layout, rng, device, on_epoch, log)
        finally:
            model.cpu().eval()
        result.train_minutes = (time.perf_counter() - start) / 60.0
    return result


@dataclass
class _Phases:
    """What both phases share: the model on its device, the data, the seeded generator and augmentation,
    and the result they add epochs to."""

    model: YoloDetector
    result: TrainResult
    train: list[DetectionSample]
    val: list[DetectionSample]
    cfg: DetectTrainConfig
    layout: GridLayout
    rng: np.random.Generator
    device: torch.device
    pipeline: object
    on_epoch: Callable[[str, int, dict], None] | None
    log: Callable[[str], None]

    def finish_epoch(self, phase: str, rows: list[dict], t0: float) -> None:
        """One epoch's mean losses (held-out mAP@0.5 every ``eval_every`` epochs) in the history, logged."""
        epoch_no = len(self.result.history) + 1
        row: dict[str, float | str] = {f"loss_{k}": float(np.mean([r[k] for r in rows])) for k in rows[0]}
        row["epoch_s"] = time.perf_counter() - t0
        if self.val and (epoch_no % self.cfg.eval_every == 0):
            row["val_map50"] = quick_map50(self.model, self.val, self.cfg)
        row.update(phase=phase, epoch=epoch_no)
        self.result.history.append(row)
        self.log(
            f"{phase} epoch {epoch_no}: " + ", ".join(f"{k}={v:.4f}" for k, v in row.items() if isinstance(v, float))
        )
        if self.on_epoch:
            self.on_epoch(phase, epoch_no, {k: v for k, v in row.items() if k not in ("phase", "epoch")})


def _train_phases(
    model: YoloDetector,
    result: TrainResult,
    train: list[DetectionSample],
    val: list[DetectionSample],
    cfg: DetectTrainConfig,
    layout: GridLayout,
    rng: np.random.Generator,
    device: torch.device,
    on_epoch: Callable[[str, int, dict], None] | None,
    log: Callable[[str], None],
) -> None:
    run = _Phases(
        model,
        result,
        train,
        val,
        cfg,
        layout,
        rng,
        device,
        box_augmentation(cfg.augment, cfg.input_size, seed=cfg.seed),
        on_epoch,
        log,
    )
    if cfg.frozen_epochs > 0:
        _frozen_phase(run)
    if cfg.finetune_epochs > 0:
        _finetune_phase(run)


def _cached_features(run: _Phases) -> tuple[list[torch.Tensor], list[list[np.ndarray]], list[torch.Tensor]]:
    """Backbone features (float16, on the CPU; pinned for a GPU) of ``frozen_copies`` versions of every
    training image (the plain letterboxed one, then augmented ones), with their grid targets and boxes."""
    cfg, model = run.cfg, run.model
    feats: list[list[torch.Tensor]] = [[], [], []]
    targets: list[list[np.ndarray]] = []
    gts: list[torch.Tensor] = []
    t0 = time.perf_counter()
    for copy in range(max(1, cfg.frozen_copies)):
        for a in range(0, len(run.train), cfg.batch_size):
            imgs = []
            for s in run.train[a : a + cfg.batch_size]:
                if copy == 0:
                    img, boxes = letterbox_sample(s.image, s.boxes, cfg.input_size)
                    labels = s.labels
                else:
                    img, boxes, labels = augment_sample(run.pipeline, s.image, s.boxes, s.labels, cfg.input_size)
                grids, dropped = _targets(run.layout, boxes, labels)
                run.result.dropped_targets += dropped
                targets.append(grids)
                gts.append(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
                imgs.append(img)
            with torch.inference_mode():
                for lvl, f in enumerate(model.backbone_features(_images(imgs, run.device))):
                    feats[lvl].append(f.half().cpu())
        run.log(f"cached backbone features of copy {copy + 1}/{cfg.frozen_copies} ({time.perf_counter() - t0:.0f} s)")
    feats_cat = [torch.cat(f) for f in feats]
    if loader_options(run.device)["pin_memory"]:  # page-locked: copies to the GPU run asynchronously
        feats_cat = [f.pin_memory() for f in feats_cat]
    return feats_cat, targets, gts


def _frozen_phase(run: _Phases) -> None:
    """Phase 1: frozen backbone; the pyramid and head train on the cached features."""
    cfg, model = run.cfg, run.model
    model.freeze_backbone()
    model.eval()  # backbone BN in eval; the head's BN is switched to train below
    feats_cat, targets, gts = _cached_features(run)
    head_params = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    opt = torch.optim.AdamW(head_params, lr=cfg.lr_head, weight_decay=cfg.weight_decay)
    steps = cfg.frozen_epochs * math.ceil(len(targets) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr_head, total_steps=steps, pct_start=0.1)
    for _ in range(cfg.frozen_epochs):
        t0 = time.perf_counter()
        model.train()
        model.backbone.eval()
        order = run.rng.permutation(len(targets))
        rows = []
        for a in range(0, len(order), cfg.batch_size):
            idx = order[a : a + cfg.batch_size]
            preds = model.head([f[torch.from_numpy(idx)].to(run.device, non_blocking=True).float() for f in feats_cat])
            rows.append(_step(model, opt, preds, _stack_targets([targets[i] for i in idx]), [gts[i] for i in idx], cfg))
            sched.step()
        run.finish_epoch("frozen", rows, t0)


def _finetune_phase(run: _Phases) -> None:
    """Phase 2: the deepest ``finetune_stages`` backbone stages unfrozen, freshly augmented images."""
    cfg, model, train = run.cfg, run.model, run.train
    model.unfreeze_backbone(cfg.finetune_stages)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr_finetune, weight_decay=cfg.weight_decay)
    steps = cfg.finetune_epochs * math.ceil(len(train) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr_finetune, total_steps=steps, pct_start=0.15)
    for _ in range(cfg.finetune_epochs):
        t0 = time.perf_counter()
        model.train()
        order = run.rng.permutation(len(train))
        rows = []
        for a in range(0, len(order), cfg.batch_size):
            imgs, tg, gts = [], [], []
            for i in order[a : a + cfg.batch_size]:
                s = train[i]
                img, boxes, labels = augment_sample(run.pipeline, s.image, s.boxes, s.labels, cfg.input_size)
                grids, _ = _targets(run.layout, boxes, labels)
                imgs.append(img)
                tg.append(grids)
                gts.append(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
            preds = model(_images(imgs, run.device))
            rows.append(_step(model, opt, preds, _stack_targets(tg), gts, cfg))
            sched.step()
        run.finish_epoch("finetune", rows, t0)


def final_evaluation(model: YoloDetector, val: list[DetectionSample], cfg: DetectTrainConfig) -> tuple[dict, list]:
    """Full metrics (VOC, COCO, pycocotools cross-check) and the detections they came from; the model
    runs on ``cfg.device`` and is back on the CPU afterwards."""
    try:
        dets = detect_images(
            model.to(cfg.device),
            [s.image for s in val],
            score_threshold=cfg.eval_score_threshold,
            iou_threshold=cfg.nms_iou,
            max_detections=cfg.max_detections,
        )
    finally:
        model.cpu()
    return evaluate(dets, truths_of(val), cfg.classes), dets
