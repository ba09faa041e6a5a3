"""Training flow: the ingested identity data -> a trained embedding model in MLflow.

Wiring only: chips and features come from caches, training and evaluation from components.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

from components import data_version
from components.augment import as_function, describe, face_augmentation
from components.embedding.backbones import make_backbone
from components.embedding.model import EmbeddingModel, cached_features, chip_features, embed_from_features
from components.embedding.packaging import code_paths, pinned_requirements
from components.embedding.train import train_finetune, train_head
from components.evaluation.heldout import evaluate_verification
from components.evaluation.plots import plot_training_curves
from components.evaluation.verification import plot_distance_histograms, plot_roc
from components.faces.chips import ChipSet, cached_chips
from components.ingest import read_manifest
from components.paths import data_dir, state_dir
from components.settings import Settings, load_settings
from components.tracking import tracked_run
from flows.bench import train_config

TRAIN_EXPERIMENT = "train"


@task(name="face-chips", retries=1, cache_policy=NO_CACHE)
def manifest_chips(dataset: str, settings: Settings) -> tuple[object, ChipSet]:
    manifest = read_manifest(data_dir(), dataset)
    log = get_run_logger()
    chips = cached_chips(state_dir() / "cache", [data_dir() / p for p in manifest["path"]],
                         manifest["sha256"].tolist(), detector=settings.faces.detector,
                         upsample=settings.faces.upsample,
                         progress=lambda i, n: log.info("chips %d/%d", i, n))
    log.info("%d chips (%d without a detected face)", len(chips), int(chips.table["fallback"].sum()))
    return manifest, chips


@flow(name="train-embedding", log_prints=True)
def train_flow(dataset: str = "lfw", backbone: str | None = None, mode: str | None = None,
               epochs: int | None = None, lr: float | None = None, miner: str | None = None) -> dict:
    """Train on the ``train`` split, evaluate on the held-out identities, log everything to MLflow."""
    settings = load_settings()
    backbone = backbone or settings.embedding.backbone
    mode = mode or settings.embedding.mode
    cfg = train_config(settings, epochs=epochs, lr=lr, miner=miner)
    log = get_run_logger()
    manifest, chips = manifest_chips(dataset, settings)
    train_rows = np.flatnonzero(manifest["split"].to_numpy() == "train")
    val_rows = np.flatnonzero(manifest["split"].to_numpy() != "train")
    _, labels = np.unique(manifest["identity"].to_numpy()[train_rows], return_inverse=True)
    _, val_labels = np.unique(manifest["identity"].to_numpy()[val_rows], return_inverse=True)
    augmentation = face_augmentation(settings.augment, 150, seed=settings.seed)
    params = {**settings.flat(), "run.dataset": dataset, "run.backbone": backbone, "run.mode": mode,
              **{f"run.train.{k}": v for k, v in cfg.__dict__.items()}}
    with tracked_run(f"{settings.tracking.experiment_prefix}-{TRAIN_EXPERIMENT}", f"{backbone}-{mode}",
                     params=params, data_version=data_version.read_version()) as run:
        mlflow.log_dict(describe(augmentation), "augmentation.json")
        model = EmbeddingModel(make_backbone(backbone))
        bar = tqdm(total=cfg.epochs, desc=f"train {backbone}/{mode}", unit="epoch")

        def on_epoch(epoch: int, row: dict) -> None:
            mlflow.log_metrics({f"train_{k}": float(v) for k, v in row.items() if k != "epoch"}, step=epoch)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}", active=f"{row['active_fraction']:.2f}")

        tta = settings.embedding.flip_tta
        if mode == "finetune":  # the backbone changes: only the held-out chips need its new features
            history = train_finetune(model, np.asarray(chips.chips[train_rows]), labels, cfg,
                                     augment=as_function(augmentation), on_epoch=on_epoch)
            val_chips = np.asarray(chips.chips[val_rows])
            val_feats = chip_features(model.backbone, val_chips)
            val_flip = chip_features(model.backbone, val_chips, flip=True) if tta else None
        else:  # frozen backbone: features from the on-disk cache
            feats, flip_feats = cached_features(chips.chips, chips.key, backbone, state_dir() / "cache")
            history = (train_head(model, feats[train_rows], flip_feats[train_rows], labels, cfg, on_epoch=on_epoch)
                       if mode == "head" else [])
            val_feats, val_flip = feats[val_rows], flip_feats[val_rows] if tta else None
        bar.close()
        emb = embed_from_features(model, val_feats, val_flip)
        metrics, dist, same = evaluate_verification(emb, val_labels, seed=settings.seed)
        mlflow.log_metrics(metrics)
        log.info("held-out verification: %s", {k: round(v, 4) for k, v in metrics.items()})
        with tempfile.TemporaryDirectory() as tmp:
            plot_roc(dist, same, Path(tmp) / "roc.png")
            plot_distance_histograms(dist, same, Path(tmp) / "distances.png", threshold=metrics["val_threshold"])
            if history:
                plot_training_curves(history, Path(tmp) / "training_curves.png")
            mlflow.log_artifacts(tmp, "plots")
        mlflow.log_dict({"history": history}, "training_history.json")
        model.eval()
        info = mlflow.pytorch.log_model(model, name="model", pip_requirements=pinned_requirements(),
                                        code_paths=code_paths(), serialization_format="pickle")
        run_id = run.info.run_id
    return {"run_id": run_id, "model_uri": info.model_uri, "model_id": info.model_id, "metrics": metrics, "backbone": backbone, "mode": mode}
