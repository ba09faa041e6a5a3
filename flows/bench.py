"""Benchmark flows: thin wiring over the drivers in benchmarks/, each result logged to MLflow."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
from prefect import flow, get_run_logger

from facegate.benchmarks import identify
from facegate.benchmarks.lfw import LfwBenchmark, thinned_progress
from facegate.components.core.paths import datasets_root, state_dir
from facegate.components.core.settings import load_settings
from facegate.components.evaluation.verification import write_verification_plots
from facegate.components.faces.augment import describe
from facegate.components.lifecycle.model_loading import service_configuration
from facegate.components.lifecycle.tracking import artifact_folder, numeric_metrics, tracked_run


@flow(name="bench-lfw", log_prints=True)
def lfw_benchmark_flow(
    backbone: str | None = None,
    mode: str | None = None,
    flip_tta: bool | None = None,
    miner: str | None = None,
    epochs: int | None = None,
    groups: int | None = None,
    lr: float | None = None,
    mining: str = "online",
    speed: bool = True,
    masked: bool = False,
) -> dict:
    """LFW View 2 for a backbone/mode (default: the configuration in service: the champion's, else params)."""
    settings = load_settings()
    log = get_run_logger()
    in_service = service_configuration(settings)
    bench = LfwBenchmark.from_settings(
        settings,
        backbone=backbone or in_service["backbone"],
        mode=mode or in_service["mode"],
        flip_tta=flip_tta,
        miner=miner,
        epochs=epochs,
        groups=groups,
        lr=lr,
        mining=mining,
        speed=speed,
        masked=masked,
    )
    log.info("configuration: %s/%s (%s)", bench.backbone, bench.mode, in_service["source"])
    cache = state_dir() / "cache"
    progress = thinned_progress(log.info)
    lfw = bench.load(datasets_root() / "lfw", cache, progress)

    def on_epoch(group: int, epoch: int, row: dict) -> None:
        log.info("group %d epoch %d: %s", group, epoch, {k: round(v, 4) for k, v in row.items()})
        mlflow.log_metrics(
            {f"train.{k}": float(v) for k, v in row.items() if k not in ("epoch", "round")}, step=group * 1000 + epoch
        )

    with (
        tracked_run(f"{settings.tracking.experiment_prefix}-bench-lfw", bench.run_name, params=bench.params),
        tempfile.TemporaryDirectory(prefix="mined-", dir=cache) as mined,
    ):
        if bench.mode == "finetune":
            mlflow.log_dict(describe(bench.augmentation()), "augmentation.json")
        result, dist = bench.run(lfw, cache, progress=progress, on_epoch=on_epoch, artifact_dir=Path(mined))
        if any(Path(mined).rglob("*.parquet")):
            mlflow.log_artifacts(mined, "mined_triplets")  # the versioned mining artifact
        mlflow.log_metrics(numeric_metrics(result))
        with artifact_folder("plots") as folder:
            write_verification_plots(dist, lfw.same, folder, threshold=result["threshold_mean"])
        mlflow.log_dict(result, "lfw_result.json")
    log.info(
        "LFW %s/%s tta=%s: %.4f +- %.4f",
        bench.backbone,
        bench.mode,
        bench.flip_tta,
        result["accuracy_mean"],
        result["accuracy_std"],
    )
    return result


@flow(name="bench-identify", log_prints=True)
def identify_benchmark_flow(backbone: str | None = None, mode: str = "pretrained", timed_frames: int = 200) -> dict:
    """Open-set identification on LFW, two identity halves, model and tau never fit on the half measured."""
    settings = load_settings()
    log = get_run_logger()
    backbone = backbone or settings.embedding.backbone
    data = identify.load_lfw_features(datasets_root() / "lfw", state_dir() / "cache", backbone, settings)
    with tracked_run(
        f"{settings.tracking.experiment_prefix}-bench-identify",
        f"{backbone}-{mode}",
        params=identify.run_params(settings, backbone, mode),
    ):
        result = identify.run_identify_benchmark(data, settings, backbone, mode, timed_frames, log=log.info)
        mlflow.log_metrics(numeric_metrics(result))
        mlflow.log_dict(result, "identify_result.json")
    return result
