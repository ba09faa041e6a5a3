"""The embedding's training stages as plain functions: augment, train, evaluate on the held-out identities.

No Prefect and no MLflow here: ``flows/train.py`` wraps each in a task that logs what it returns, so
the standalone training flow and the retraining chain run the very same code. ``log`` callables take
one finished message (progress lines are already thinned out).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from facegate.components.core.devices import module_device, resolve_torch_device
from facegate.components.core.paths import state_dir
from facegate.components.core.settings import Settings
from facegate.components.embedding.backbones import chip_geometry, make_backbone
from facegate.components.embedding.fusion import FusedHead, fit_fusion_weights
from facegate.components.embedding.model import (
    EmbeddingModel,
    cached_augmented_features,
    cached_features,
    embed_chips,
    embed_from_features,
)
from facegate.components.embedding.precision import set_precision
from facegate.components.embedding.train import TrainConfig, train_finetune, train_head
from facegate.components.evaluation.heldout import evaluate_verification, heldout_pairs
from facegate.components.faces.align import CHIP_GEOMETRIES
from facegate.components.faces.augment import as_function, describe, face_augmentation
from facegate.components.faces.masks import mask_chips
from facegate.components.lifecycle.training_data import DeployData, TrainingData, deploy_cache_dir

Log = Callable[[str], None]
HELDOUT_PAIRS = 6000  # seeded held-out pairs, half genuine: the gate's val_*, val_masked_* and val_deploy_* metrics


def _quiet(message: str) -> None:
    pass


def _feature_progress(log: Log) -> Callable[[str, int, int], None]:
    return lambda stage, i, n: log(f"{stage}: {i}/{n}") if i == n or i % 2048 < 64 else None


@dataclass
class Trained:
    model: EmbeddingModel
    history: list[dict]
    val_feats: np.ndarray | None = None  # frozen-backbone features of the held-out chips (head/pretrained)
    val_flip: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------- augment


def augmentation(settings: Settings, backbone: str, seed: int):
    """Mirroring, random cropping, colour shifting and synthetic masks (``masks.p``) on the backbone's chips."""
    return face_augmentation(
        settings.augment, CHIP_GEOMETRIES[chip_geometry(backbone)], seed=seed, masks=settings.masks
    )


def augmentation_description(settings: Settings, backbone: str | None = None) -> dict:
    """The albumentations pipeline, serialisable."""
    return describe(augmentation(settings, backbone or settings.embedding.backbone, settings.seed))


def cached_copies(mode: str, settings: Settings) -> int:
    """Augmented copies whose frozen features ``head`` caches; ``finetune`` augments online instead."""
    return settings.augment.copies if mode == "head" else 0


def augmented_copy_features(
    data: TrainingData, backbone: str, settings: Settings, log: Log = _quiet
) -> list[np.ndarray]:
    """Frozen-backbone features of ``augment.copies`` augmented copies of every training chip, captures'
    included (cached), one N x D array per copy: ``head`` mode cannot augment online, its backbone
    features are cached."""
    return cached_augmented_features(
        data.all_train_chips(),
        data.train_key,
        backbone,
        data.cache_dir,
        lambda seed: augmentation(settings, backbone, seed),
        augmentation_description(settings, backbone),
        settings.augment.copies,
        settings.seed,
        progress=_feature_progress(log),
        device=resolve_torch_device(settings.embedding.device),
        precision=settings.embedding.precision,
    )


# ------------------------------------------------------------------------------------------- train


def frozen_features(
    data: TrainingData, backbone: str, device: str, precision: str, log: Log = _quiet
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pretrained-backbone features (cached) and their mirrors' of every chip of the dataset, and of the
    training samples (the dataset's training rows, then the captures' training rows)."""
    feats, flip = cached_features(
        data.chips.chips,
        data.chips.key,
        backbone,
        state_dir() / "cache",
        progress=_feature_progress(log),
        device=device,
        precision=precision,
    )
    deploy = deploy_flip = None
    if data.deploy is not None and data.deploy_trains:
        deploy, deploy_flip = cached_features(
            data.deploy.chips, data.deploy.key, backbone, deploy_cache_dir(), device=device, precision=precision
        )
    return feats, flip, data.all_train_features(feats, deploy), data.all_train_features(flip, deploy_flip)


def train_embedding(
    data: TrainingData,
    backbone: str,
    mode: str,
    cfg: TrainConfig,
    settings: Settings,
    aug_feats: list[np.ndarray],
    on_epoch: Callable[[int, dict], None] | None = None,
    log: Log = _quiet,
) -> Trained:
    """Triplet training with online mining in ``mode`` (``pretrained``: none), from the pretrained backbone,
    on the dataset's training identities and the captures' training employees (``data.deploy``).

    ``finetune`` changes the backbone, so held-out features are left for evaluation to compute;
    ``head`` and ``pretrained`` return the frozen held-out features (and their mirrors) for reuse.
    """
    model = set_precision(EmbeddingModel(make_backbone(backbone)), settings.embedding.precision)
    fused = model.head if isinstance(model.head, FusedHead) else None  # fusion weights to fit
    labels = data.all_train_labels()
    fit = settings.embedding.fusion_weights == "fit"
    if mode == "finetune":
        if fused is not None and fit:  # pretrained members, training identities only
            _, _, f, _ = frozen_features(data, backbone, cfg.device, settings.embedding.precision, log)
            log(f"fusion: {fit_fusion_weights(fused, f, labels, seed=cfg.seed)}")
        history = train_finetune(
            model,
            data.all_train_chips(),
            labels,
            cfg,
            augment=as_function(augmentation(settings, backbone, settings.seed)),
            on_epoch=on_epoch,
        )
        return Trained(model, history)
    feats, flip_feats, train_f, train_ff = frozen_features(
        data, backbone, cfg.device, settings.embedding.precision, log
    )
    extra = {}
    if fused is not None and fit:  # before the heads train: trained heads have seen these identities, and
        # weights fitted on their overfit scores swung from 0.8/0.2 to 0.3/0.7
        tta = settings.embedding.flip_tta
        extra = fit_fusion_weights(fused, train_f, labels, seed=cfg.seed, flip_feats=train_ff if tta else None)
        log(f"fusion: {extra}")
    history = (
        train_head(
            model,
            train_f,
            train_ff,
            labels,
            cfg,
            on_epoch=on_epoch,
            aug_feats=aug_feats,
            aug_prob=settings.augment.copy_p,
        )
        if mode == "head"
        else []
    )
    return Trained(model, history, feats[data.val_rows], flip_feats[data.val_rows], extra)


# ---------------------------------------------------------------------------------------- evaluate


def heldout_embeddings(
    model: EmbeddingModel,
    data: TrainingData,
    flip_tta: bool,
    val_feats: np.ndarray | None = None,
    val_flip: np.ndarray | None = None,
) -> np.ndarray:
    """Held-out embeddings: from frozen features when the model's backbone produced them, else end to end."""
    if val_feats is not None:
        return embed_from_features(model, val_feats, val_flip if flip_tta else None)
    return embed_chips(model, np.asarray(data.chips.chips[data.val_rows]), flip_tta)


def masked_heldout_chips(
    data: TrainingData, settings: Settings, probes: np.ndarray | None = None
) -> tuple[np.ndarray, str]:
    """Masked copies of the held-out chips ``probes`` (positions among the held-out rows; default all),
    seeded by row (the same masks for every model), cached. Only the pairs' second faces are ever
    masked, so the chain masks and embeds those alone (about 60% of the held-out split)."""
    rows = data.val_rows if probes is None else data.val_rows[probes]
    key = hashlib.sha256(
        f"{data.chips.key}|{rows.tobytes().hex()}|"
        f"{json.dumps(settings.masks.model_dump(), sort_keys=True)}|{settings.seed}".encode()
    ).hexdigest()[:20]
    path = state_dir() / "cache" / f"chips-masked-{key}.npy"
    if not path.is_file():
        chips = mask_chips(np.asarray(data.chips.chips[rows]), settings.seed, settings.masks, rows=rows)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, chips)
        tmp.replace(path)
    return np.load(path, mmap_mode="r"), f"masked-{key}"


def evaluate_heldout(
    model: EmbeddingModel,
    data: TrainingData,
    settings: Settings,
    val_feats: np.ndarray | None = None,
    val_flip: np.ndarray | None = None,
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Verification on the held-out identities with seeded pairs (every model sees the same ones):
    the ``val_*`` metrics, the same pairs with the second face masked (``val_masked_*``), the
    deployment's held-out captures (``val_deploy_*``, when there are any), and the plain pair
    distances and same-identity flags for plots. Frozen features given means the model's
    backbone is the pretrained one, so the masked copies' features come from the cache too. The
    model embeds on ``embedding.device`` and goes back where it was."""
    home = module_device(model)
    model.to(resolve_torch_device(settings.embedding.device))
    try:
        return _evaluate_heldout(model, data, settings, val_feats, val_flip)
    finally:
        model.to(home)


def _evaluate_heldout(
    model: EmbeddingModel,
    data: TrainingData,
    settings: Settings,
    val_feats: np.ndarray | None,
    val_flip: np.ndarray | None,
) -> tuple[dict, np.ndarray, np.ndarray]:
    tta = settings.embedding.flip_tta
    emb = heldout_embeddings(model, data, tta, val_feats, val_flip)
    metrics, dist, same = evaluate_verification(emb, data.val_labels, n_pairs=HELDOUT_PAIRS, seed=settings.seed)
    probes = np.unique(heldout_pairs(data.val_labels, HELDOUT_PAIRS, settings.seed)[1])
    masked, key = masked_heldout_chips(data, settings, probes)
    if val_feats is not None:
        mf, mff = cached_features(
            masked,
            key,
            model.backbone.name,
            state_dir() / "cache",
            device=module_device(model),
            precision=settings.embedding.precision,
        )
        probe_emb = embed_from_features(model, mf, mff if tta else None)
    else:
        probe_emb = embed_chips(model, np.asarray(masked), tta)
    masked_emb = np.zeros_like(emb)  # rows never a pair's second face stay unused
    masked_emb[probes] = probe_emb
    masked_metrics, _, _ = evaluate_verification(
        emb, data.val_labels, n_pairs=HELDOUT_PAIRS, seed=settings.seed, masked_emb=masked_emb, prefix="val_masked_"
    )
    deploy_metrics = evaluate_deploy(model, data.deploy, settings, frozen=val_feats is not None)
    return {**metrics, **masked_metrics, **deploy_metrics}, dist, same


def evaluate_deploy(model: EmbeddingModel, deploy: DeployData | None, settings: Settings, frozen: bool) -> dict:
    """``val_deploy_*``: verification on the deployment's own held-out employees (identity-disjoint from
    every training sample), seeded pairs as ``val_*``; {} without captures that make pairs. ``frozen``:
    the model's backbone is the pretrained one, so the captures' cached features are its own."""
    if deploy is None or not deploy.evaluable():
        return {}
    tta = settings.embedding.flip_tta
    if frozen:
        deploy_cache_dir().mkdir(parents=True, exist_ok=True)
        f, ff = cached_features(
            deploy.chips,
            deploy.key,
            model.backbone.name,
            deploy_cache_dir(),
            device=module_device(model),
            precision=settings.embedding.precision,
        )
        emb = embed_from_features(model, f[deploy.val_rows], ff[deploy.val_rows] if tta else None)
    else:
        emb = embed_chips(model, np.asarray(deploy.chips[deploy.val_rows]), tta)
    metrics, _, _ = evaluate_verification(
        emb, deploy.val_labels, n_pairs=HELDOUT_PAIRS, seed=settings.seed, prefix="val_deploy_"
    )
    return metrics
