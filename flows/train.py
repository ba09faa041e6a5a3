"""Training stages (augment, train, evaluate) and the standalone training flow.

Wiring only: chips and features come from caches, training and evaluation from components. The stage
tasks log to whichever MLflow run is active, so ``train_flow`` runs them in one run and the retraining
chain (flows/retrain.py) gives each its own nested run.
"""
from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

from components import data_version
from components.augment import as_function, describe, face_augmentation
from components.embedding.backbones import make_backbone
from components.embedding.model import (
    EmbeddingModel,
    cached_augmented_features,
    cached_features,
    embed_chips,
    embed_from_features,
)
from components.embedding.packaging import code_paths, pinned_requirements
from components.embedding.train import TrainConfig, train_finetune, train_head
from components.evaluation.heldout import evaluate_verification
from components.evaluation.plots import plot_training_curves
from components.evaluation.verification import plot_distance_histograms, plot_roc
from components.faces.chips import ChipSet, cached_chips
from components.ingest import read_manifest
from components.paths import data_dir, state_dir
from components.settings import Settings, load_settings
from components.tracking import tracked_run

TRAIN_EXPERIMENT = "train"


@dataclass
class TrainingData:
    """One identity dataset's chips with its train / held-out split (what every stage reads)."""

    dataset: str
    chips: ChipSet
    train_rows: np.ndarray
    val_rows: np.ndarray
    labels: np.ndarray  # train identities as 0..n-1
    val_labels: np.ndarray  # held-out identities as 0..m-1

    @property
    def train_key(self) -> str:
        """Cache key of the training subset's chips (features of augmented copies are cached by it)."""
        return hashlib.sha256(self.chips.key.encode() + self.train_rows.tobytes()).hexdigest()[:16]


@dataclass
class Trained:
    model: EmbeddingModel
    history: list[dict]
    val_feats: np.ndarray | None = None  # frozen-backbone features of the held-out chips (head/pretrained)
    val_flip: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


@task(name="face-chips", retries=1, cache_policy=NO_CACHE)
def load_training_data(dataset: str, settings: Settings) -> TrainingData:
    """Detected and aligned chips of every manifest image (cached by content), and the split."""
    manifest = read_manifest(data_dir(), dataset)
    log = get_run_logger()
    chips = cached_chips(state_dir() / "cache", [data_dir() / p for p in manifest["path"]],
                         manifest["sha256"].tolist(), detector=settings.faces.detector,
                         upsample=settings.faces.upsample,
                         progress=lambda i, n: log.info("chips %d/%d", i, n) if i == n or i % 1000 < 8 else None)
    log.info("%d chips (%d without a detected face)", len(chips), int(chips.table["fallback"].sum()))
    split = manifest["split"].to_numpy()
    ids = manifest["identity"].to_numpy()
    train_rows, val_rows = np.flatnonzero(split == "train"), np.flatnonzero(split != "train")
    _, labels = np.unique(ids[train_rows], return_inverse=True)
    _, val_labels = np.unique(ids[val_rows], return_inverse=True)
    return TrainingData(dataset, chips, train_rows, val_rows, labels, val_labels)


@task(name="augment", cache_policy=NO_CACHE)
def augment_stage(data: TrainingData, backbone: str, mode: str, settings: Settings) -> list[np.ndarray]:
    """The albumentations pipeline (mirroring, random cropping, colour shifting), serialised into MLflow.

    ``finetune`` applies it online, batch by batch. ``head`` cannot (the backbone is frozen and its
    features cached), so it draws ``augment.copies`` augmented copies of every training chip once and
    caches their features: returned here, one array per copy.
    """
    log = get_run_logger()
    pipeline = face_augmentation(settings.augment, 150, seed=settings.seed)
    description = describe(pipeline)
    mlflow.log_dict(description, "augmentation.json")
    copies = settings.augment.copies if mode == "head" else 0
    mlflow.log_params({"augment.applied": "online" if mode == "finetune" else f"{copies} cached copies"
                       if copies else "none"})
    if not copies:
        return []
    chips = data.chips.chips[data.train_rows]
    feats = cached_augmented_features(
        chips, data.train_key, backbone, state_dir() / "cache",
        lambda seed: face_augmentation(settings.augment, 150, seed=seed), description, copies, settings.seed,
        progress=lambda stage, i, n: log.info("%s: %d/%d", stage, i, n) if i == n or i % 2048 < 64 else None)
    mlflow.log_metrics({"augmented_copies": float(copies), "augmented_chips": float(copies * len(chips))})
    return feats


@task(name="train", cache_policy=NO_CACHE)
def train_stage(data: TrainingData, backbone: str, mode: str, cfg: TrainConfig, settings: Settings,
                aug_feats: list[np.ndarray]) -> Trained:
    """Triplet training with online mining; per-epoch loss and mining statistics into MLflow."""
    model = EmbeddingModel(make_backbone(backbone))
    bar = tqdm(total=cfg.epochs, desc=f"train {backbone}/{mode}", unit="epoch", disable=mode == "pretrained")

    def on_epoch(epoch: int, row: dict) -> None:
        mlflow.log_metrics({f"train_{k}": float(v) for k, v in row.items() if k != "epoch"}, step=epoch)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}", active=f"{row['active_fraction']:.2f}")

    val_feats = val_flip = None
    if mode == "finetune":  # the backbone changes: held-out features must come from the new one
        pipeline = face_augmentation(settings.augment, 150, seed=settings.seed)
        history = train_finetune(model, np.asarray(data.chips.chips[data.train_rows]), data.labels, cfg,
                                 augment=as_function(pipeline), on_epoch=on_epoch)
    else:
        log = get_run_logger()
        feats, flip_feats = cached_features(
            data.chips.chips, data.chips.key, backbone, state_dir() / "cache",
            progress=lambda stage, i, n: log.info("%s: %d/%d", stage, i, n) if i == n or i % 2048 < 64 else None)
        history = (train_head(model, feats[data.train_rows], flip_feats[data.train_rows], data.labels, cfg,
                              on_epoch=on_epoch, aug_feats=aug_feats, aug_prob=settings.augment.copy_p)
                   if mode == "head" else [])
        val_feats, val_flip = feats[data.val_rows], flip_feats[data.val_rows]
    bar.close()
    if history:
        with tempfile.TemporaryDirectory() as tmp:
            plot_training_curves(history, Path(tmp) / "training_curves.png")
            mlflow.log_artifacts(tmp, "plots")
    mlflow.log_dict({"history": history}, "training_history.json")
    return Trained(model, history, val_feats, val_flip)


def heldout_embeddings(model: EmbeddingModel, data: TrainingData, flip_tta: bool,
                       val_feats: np.ndarray | None = None, val_flip: np.ndarray | None = None) -> np.ndarray:
    """Held-out embeddings: from frozen features when the model's backbone produced them, else end to end."""
    if val_feats is not None:
        return embed_from_features(model, val_feats, val_flip if flip_tta else None)
    return embed_chips(model, np.asarray(data.chips.chips[data.val_rows]), flip_tta)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_stage(model: EmbeddingModel, data: TrainingData, settings: Settings, label: str = "",
                   val_feats: np.ndarray | None = None, val_flip: np.ndarray | None = None) -> dict:
    """Verification on the held-out identities (seeded pairs: every model sees the same ones).

    Metrics keep the same names in every run (``val_accuracy``...) so MLflow's compare view lines them
    up; ROC and genuine/impostor distance histograms go in as plots.
    """
    emb = heldout_embeddings(model, data, settings.embedding.flip_tta, val_feats, val_flip)
    metrics, dist, same = evaluate_verification(emb, data.val_labels, seed=settings.seed)
    get_run_logger().info("%s held-out verification: %s", label or "model",
                          {k: round(v, 4) for k, v in metrics.items()})
    mlflow.log_metrics(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        plot_roc(dist, same, Path(tmp) / "roc.png")
        plot_distance_histograms(dist, same, Path(tmp) / "distances.png", threshold=metrics["val_threshold"])
        mlflow.log_artifacts(tmp, "plots")
    return metrics


def log_embedding_model(model: EmbeddingModel):
    """The model with pinned requirements and the library code (MLflow would pin a CUDA torch)."""
    model.eval()
    return mlflow.pytorch.log_model(model, name="model", pip_requirements=pinned_requirements(),
                                    code_paths=code_paths(), serialization_format="pickle")


@flow(name="train-embedding", log_prints=True)
def train_flow(dataset: str = "lfw", backbone: str | None = None, mode: str | None = None,
               epochs: int | None = None, lr: float | None = None, miner: str | None = None) -> dict:
    """Train on the ``train`` split, evaluate on the held-out identities, log everything to one MLflow run."""
    settings = load_settings()
    backbone = backbone or settings.embedding.backbone
    mode = mode or settings.embedding.mode
    cfg = TrainConfig.from_settings(settings, epochs=epochs, lr=lr, miner=miner)
    data = load_training_data(dataset, settings)
    params = {**settings.flat(), "run.dataset": dataset, "run.backbone": backbone, "run.mode": mode,
              **{f"run.train.{k}": v for k, v in cfg.__dict__.items()}}
    with tracked_run(f"{settings.tracking.experiment_prefix}-{TRAIN_EXPERIMENT}", f"{backbone}-{mode}",
                     params=params, data_version=data_version.read_version()) as run:
        aug_feats = augment_stage(data, backbone, mode, settings)
        trained = train_stage(data, backbone, mode, cfg, settings, aug_feats)
        metrics = evaluate_stage(trained.model, data, settings, "trained", trained.val_feats, trained.val_flip)
        info = log_embedding_model(trained.model)
        run_id = run.info.run_id
    return {"run_id": run_id, "model_uri": info.model_uri, "model_id": info.model_id, "metrics": metrics,
            "backbone": backbone, "mode": mode}
