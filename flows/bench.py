"""Benchmark flows: thin wiring over components.evaluation, each result logged to MLflow."""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

import mlflow
from prefect import flow, get_run_logger

from components.augment import as_function, describe, face_augmentation
from components.embedding.train import TrainConfig
from components.evaluation.lfw_benchmark import load_lfw, measure_speed, run_lfw_benchmark
from components.evaluation.verification import plot_distance_histograms, plot_roc
from components.paths import datasets_root, state_dir
from components.settings import Settings, load_settings
from components.tracking import tracked_run


def train_config(settings: Settings, **overrides) -> TrainConfig:
    fields = settings.train.model_dump()
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(seed=settings.seed, **fields)


@flow(name="bench-lfw", log_prints=True)
def lfw_benchmark_flow(backbone: str | None = None, mode: str | None = None, flip_tta: bool | None = None,
                       miner: str | None = None, epochs: int | None = None, groups: int | None = None,
                       lr: float | None = None, mining: str = "online", speed: bool = True) -> dict:
    settings = load_settings()
    log = get_run_logger()
    backbone = backbone or settings.embedding.backbone
    mode = mode or settings.embedding.mode
    flip_tta = settings.embedding.flip_tta if flip_tta is None else flip_tta
    cfg = train_config(settings, miner=miner, epochs=epochs, lr=lr)
    augmentation = face_augmentation(settings.augment, 150, seed=settings.seed)
    cache = state_dir() / "cache"
    every = {"chips": 2000, "features": 2048, "features-flip": 2048}

    def progress(stage: str, i: int, n: int) -> None:
        if i == n or i % every.get(stage, 1000) < 64:
            log.info("%s: %d/%d", stage, i, n)

    lfw = load_lfw(datasets_root() / "lfw", cache, detector=settings.faces.detector,
                   upsample=settings.faces.upsample, progress=progress)
    params = {"backbone": backbone, "mode": mode, "flip_tta": flip_tta, "detector": settings.faces.detector,
              "upsample": settings.faces.upsample, **{f"train.{k}": v for k, v in dataclasses.asdict(cfg).items()}}
    params["mining"] = mining
    with tracked_run(f"{settings.tracking.experiment_prefix}-bench-lfw", f"{backbone}-{mode}-{mining}-{'tta' if flip_tta else 'plain'}",
                     params=params):
        def on_epoch(group: int, epoch: int, row: dict) -> None:
            log.info("group %d epoch %d: %s", group, epoch, {k: round(v, 4) for k, v in row.items()})
            mlflow.log_metrics({f"train.{k}": float(v) for k, v in row.items() if k not in ("epoch", "round")},
                               step=group * 1000 + epoch)

        if mode == "finetune":
            mlflow.log_dict(describe(augmentation), "augmentation.json")
        mined_dir = Path(tempfile.mkdtemp(prefix="mined-", dir=cache))
        result = run_lfw_benchmark(lfw, cache, backbone=backbone, mode=mode, flip_tta=flip_tta, cfg=cfg,
                                   n_groups=groups, progress=progress, on_epoch=on_epoch,
                                   augment=as_function(augmentation), mining=mining, artifact_dir=mined_dir)
        if any(mined_dir.rglob("*.parquet")):
            mlflow.log_artifacts(str(mined_dir), "mined_triplets")  # the versioned mining artifact
        shutil.rmtree(mined_dir, ignore_errors=True)
        dist = result.pop("_distances")
        if speed:
            result.update(measure_speed(lfw, backbone, detector=settings.faces.detector,
                                        upsample=settings.faces.upsample))
        mlflow.log_metrics({k: float(v) for k, v in result.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
        with tempfile.TemporaryDirectory() as tmp:
            plot_roc(dist, lfw.same, Path(tmp) / "roc.png")
            plot_distance_histograms(dist, lfw.same, Path(tmp) / "distances.png", threshold=result["threshold_mean"])
            mlflow.log_artifacts(tmp, "plots")
        mlflow.log_dict({k: v for k, v in result.items()}, "lfw_result.json")
    log.info("LFW %s/%s tta=%s: %.4f +- %.4f", backbone, mode, flip_tta, result["accuracy_mean"], result["accuracy_std"])
    return result
