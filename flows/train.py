"""Training stages (augment, train, evaluate) and the standalone training flow.

Wiring only: each task calls ``facegate.components.lifecycle.stages`` and logs what it returns. The stage tasks
log to whichever MLflow run is active, so ``train_flow`` runs them in one run and the retraining chain
(flows/retrain.py) gives each its own nested run.
"""

from __future__ import annotations

import mlflow
import numpy as np
import torch
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

from facegate.components.core.devices import describe
from facegate.components.core.settings import Settings, load_settings
from facegate.components.embedding.model import EmbeddingModel
from facegate.components.embedding.train import TrainConfig
from facegate.components.evaluation.plots import plot_training_curves
from facegate.components.evaluation.verification import write_verification_plots
from facegate.components.lifecycle import data_version, stages
from facegate.components.lifecycle.stages import Trained
from facegate.components.lifecycle.tracking import artifact_folder, log_torch_model, tracked_run
from facegate.components.lifecycle.training_data import TrainingData, read_training_data

TRAIN_EXPERIMENT = "train"


@task(name="face-chips", retries=1, cache_policy=NO_CACHE)
def load_training_data(
    dataset: str, settings: Settings, backbone: str | None = None, deploy: str | None = None
) -> TrainingData:
    """Detected and aligned chips of every manifest image (cached by content), and the split; with
    ``deploy``, that ingested captures dataset's chips and split beside them."""
    return read_training_data(dataset, settings, log=get_run_logger().info, backbone=backbone, deploy=deploy)


@task(name="augment", cache_policy=NO_CACHE)
def augment_stage(data: TrainingData, backbone: str, mode: str, settings: Settings) -> list[np.ndarray]:
    """The albumentations pipeline serialised into MLflow; in ``head`` mode the features of
    ``augment.copies`` augmented copies of every training chip (one array per copy), else none."""
    mlflow.log_dict(stages.augmentation_description(settings, backbone), "augmentation.json")
    if data.deploy is not None:  # counts only: captures are biometric data
        mlflow.log_metrics(data.deploy.summary())
    copies = stages.cached_copies(mode, settings)
    mlflow.log_params(
        {"augment.applied": "online" if mode == "finetune" else f"{copies} cached copies" if copies else "none"}
    )
    if not copies:
        return []
    feats = stages.augmented_copy_features(data, backbone, settings, log=get_run_logger().info)
    mlflow.log_metrics({"augmented_copies": float(copies), "augmented_chips": float(copies * len(data.train_rows))})
    return feats


@task(name="train", cache_policy=NO_CACHE)
def train_stage(
    data: TrainingData, backbone: str, mode: str, cfg: TrainConfig, settings: Settings, aug_feats: list[np.ndarray]
) -> Trained:
    """Triplet training with online mining; per-epoch loss and mining statistics into MLflow, and the
    device it ran on as the ``device`` tag (``cuda:0 (NVIDIA ...)`` or ``cpu``)."""
    mlflow.set_tag("device", describe(torch.device(cfg.device)))
    bar = tqdm(total=cfg.epochs, desc=f"train {backbone}/{mode}", unit="epoch", disable=mode == "pretrained")

    def on_epoch(epoch: int, row: dict) -> None:
        mlflow.log_metrics({f"train_{k}": float(v) for k, v in row.items() if k != "epoch"}, step=epoch)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}", active=f"{row['active_fraction']:.2f}")

    trained = stages.train_embedding(
        data, backbone, mode, cfg, settings, aug_feats, on_epoch=on_epoch, log=get_run_logger().info
    )
    bar.close()
    if trained.history:
        with artifact_folder("plots") as folder:
            plot_training_curves(trained.history, folder / "training_curves.png")
    mlflow.log_dict({"history": trained.history}, "training_history.json")
    if "fusion_weights" in trained.extra:  # fitted on training identities only
        mlflow.log_params({f"fusion.weight.{i}": w for i, w in enumerate(trained.extra["fusion_weights"])})
        mlflow.log_metric("fusion_fit_tar", trained.extra["fusion_fit_tar"])
    return trained


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_stage(
    model: EmbeddingModel,
    data: TrainingData,
    settings: Settings,
    label: str = "",
    val_feats: np.ndarray | None = None,
    val_flip: np.ndarray | None = None,
) -> dict:
    """Held-out verification: metrics under the same names in every run (``val_accuracy``...), so
    MLflow's compare view lines them up; ROC and genuine/impostor distance histograms as plots."""
    metrics, dist, same = stages.evaluate_heldout(model, data, settings, val_feats, val_flip)
    get_run_logger().info(
        "%s held-out verification: %s", label or "model", {k: round(v, 4) for k, v in metrics.items()}
    )
    mlflow.log_metrics(metrics)
    with artifact_folder("plots") as folder:
        write_verification_plots(dist, same, folder, threshold=metrics["val_threshold"])
    return metrics


@flow(name="train-embedding", log_prints=True)
def train_flow(
    dataset: str | None = None,
    backbone: str | None = None,
    mode: str | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    miner: str | None = None,
) -> dict:
    """Train on the ``train`` split of ``dataset`` (default: params' ``retrain.dataset``), evaluate on the
    held-out identities, log everything to one MLflow run."""
    settings = load_settings()
    dataset = dataset or settings.retrain.dataset
    backbone = backbone or settings.embedding.backbone
    mode = mode or settings.embedding.mode
    cfg = TrainConfig.from_settings(settings, epochs=epochs, lr=lr, miner=miner)
    data = load_training_data(dataset, settings, backbone)
    params = {
        **settings.flat(),
        "run.dataset": dataset,
        "run.backbone": backbone,
        "run.mode": mode,
        **{f"run.train.{k}": v for k, v in cfg.__dict__.items()},
    }
    with tracked_run(
        f"{settings.tracking.experiment_prefix}-{TRAIN_EXPERIMENT}",
        f"{backbone}-{mode}",
        params=params,
        data_version=data_version.read_version(),
    ) as run:
        aug_feats = augment_stage(data, backbone, mode, settings)
        trained = train_stage(data, backbone, mode, cfg, settings, aug_feats)
        metrics = evaluate_stage(trained.model, data, settings, "trained", trained.val_feats, trained.val_flip)
        info = log_torch_model(trained.model)
        run_id = run.info.run_id
    return {
        "run_id": run_id,
        "model_uri": info.model_uri,
        "model_id": info.model_id,
        "metrics": metrics,
        "backbone": backbone,
        "mode": mode,
    }
