"""Detector flows: train (facemask -> YOLO detector in MLflow, registered and gated) and benchmark.

Wiring only: data, model, training, metrics and plots come from facegate.components.detection.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import mlflow
import numpy as np
import torch
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from facegate.benchmarks import detect as bench
from facegate.components.core.datasets import read_manifest
from facegate.components.core.devices import describe
from facegate.components.core.errors import SettingsError
from facegate.components.core.paths import data_dir, repo_root
from facegate.components.core.settings import Settings, load_settings
from facegate.components.detection.augment import box_augmentation
from facegate.components.detection.data import load_samples, truths_of
from facegate.components.detection.plots import draw_truth_and_detections, plot_pr_curves
from facegate.components.detection.train import DetectTrainConfig, final_evaluation, train_detector
from facegate.components.detection.two_stage import TwoStageConfig
from facegate.components.detection.two_stage_training import train_two_stage
from facegate.components.lifecycle import data_version, registry
from facegate.components.lifecycle.detector_models import load_model_uri
from facegate.components.lifecycle.tracking import (
    artifact_folder,
    git_commit,
    log_torch_model,
    numeric_metrics,
    tracked_run,
)
from facegate.components.lifecycle.unit_grids import log_detector_grids

EXPERIMENT = "detect"
VARIANTS = {"yolo": "yolo-mobilenet_v2", "two_stage": "two-stage-retinaface-mobilenet_v2"}  # variant -> run name
SAMPLE_IMAGES = 8


def flat_metrics(metrics: dict, prefix: str = "val_") -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update(
                {f"{prefix}{k.replace('_per_class', '')}_{name}": float(x) for name, x in v.items() if x is not None}
            )
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


@task(name="detection-samples", retries=1, cache_policy=NO_CACHE)
def samples(settings: Settings, limit_train: int | None, limit_val: int | None):
    det = settings.detection
    manifest = read_manifest(data_dir(), det.dataset)
    classes = tuple(det.classes)
    train = load_samples(manifest, data_dir(), classes, "train", settings.images.max_pixels, limit_train)
    val = load_samples(manifest, data_dir(), classes, "val", settings.images.max_pixels, limit_val)
    return train, val


@flow(name="train-detector", log_prints=True)
def detect_train_flow(
    frozen_epochs: int | None = None,
    finetune_epochs: int | None = None,
    limit_train: int | None = None,
    limit_val: int | None = None,
    log_sample_images: bool | None = None,
    variant: str | None = None,
) -> dict:
    """Train ``variant`` (default ``detection.variant``) on the seeded train split, evaluate on the held-out
    split, log, register, gate, promote."""
    settings = load_settings()
    det = settings.detection
    log = get_run_logger()
    variant = variant or det.variant
    if variant not in VARIANTS:
        raise SettingsError(f"detection.variant: {variant!r} is not one of {sorted(VARIANTS)}")
    cfg = DetectTrainConfig.from_settings(settings, frozen_epochs=frozen_epochs, finetune_epochs=finetune_epochs)
    two_cfg = TwoStageConfig.from_settings(settings, frozen_epochs=frozen_epochs, finetune_epochs=finetune_epochs)
    train, val = samples(settings, limit_train, limit_val)
    log.info("%d training and %d held-out images; variant %s", len(train), len(val), variant)
    sample_images = det.log_sample_images if log_sample_images is None else log_sample_images
    run_cfg = two_cfg if variant == "two_stage" else cfg
    params = {
        **{k: v for k, v in settings.flat().items() if k.startswith(("detection.", "seed", "images."))},
        "run.variant": variant,
        "run.frozen_epochs": run_cfg.frozen_epochs,
        "run.finetune_epochs": run_cfg.finetune_epochs,
        "run.train_images": len(train),
        "run.val_images": len(val),
        "run.log_sample_images": sample_images,
    }
    with tracked_run(
        f"{settings.tracking.experiment_prefix}-{EXPERIMENT}",
        VARIANTS[variant],
        params=params,
        data_version=data_version.read_version(),
    ) as run:
        import albumentations as A  # heavy: albumentations pulls in scipy and more; only augmentation needs it

        mlflow.set_tag("variant", variant)

        mlflow.log_dict(A.to_dict(box_augmentation(cfg.augment, cfg.input_size, seed=cfg.seed)), "augmentation.json")
        mlflow.set_tag("device", describe(torch.device(cfg.device)))  # where it trained: cpu or cuda:0 (GPU name)

        def on_epoch(phase: str, epoch: int, row: dict) -> None:
            # per-epoch held-out mAP as epoch_val_map50; the final evaluation logs val_* once at the end
            mlflow.log_metrics(
                {f"epoch_{k}" if k.startswith("val_") else f"train_{k}": float(v) for k, v in row.items()}, step=epoch
            )

        result, extra, flat_extra = _train_variant(variant, train, val, cfg, two_cfg, on_epoch, log.info)
        metrics, dets = final_evaluation(result.model, val, cfg)
        flat = flat_metrics(metrics)
        flat.update({"train_minutes": result.train_minutes, **flat_extra})
        mlflow.log_metrics(flat)
        mlflow.log_dict({**extra, "variant": variant, "history": result.history, "metrics": metrics}, "detector.json")
        log.info(
            "held-out: map50 %.4f map50_95 %.4f per class %s",
            metrics["map50"],
            metrics["map50_95"],
            metrics["ap50_per_class"],
        )
        _log_figures(dets, val, cfg, sample_images, det.score_threshold)
        info = log_torch_model(result.model)
        run_id = run.info.run_id
        decision = register_and_gate(info.model_uri, run_id, metrics, val, settings, variant)
        mlflow.set_tags({"registered_version": decision["version"], "gate": decision["gate"]})
        log_detector_grids(
            result.model, f"{det.registered_model}/{decision['version']}", train, run_id, settings, log.warning
        )
    return {
        "run_id": run_id,
        "variant": variant,
        "model_uri": info.model_uri,
        "metrics": metrics,
        "train_minutes": result.train_minutes,
        **decision,
    }


def _train_variant(variant: str, train, val, cfg, two_cfg, on_epoch, log):  # noqa: ANN001 - detector types
    """Train the chosen variant; what each logs beside its metrics (box correction, or anchors)."""
    if variant == "two_stage":
        result = train_two_stage(train, val, two_cfg, on_epoch=on_epoch, log=log)
        extra = {"box_correction": np.round(result.box_correction, 4).tolist(), "class_counts": result.class_counts}
        return result, extra, {}
    result = train_detector(train, val, cfg, on_epoch=on_epoch, log=log)
    extra = {"anchors_wh": np.round(result.anchors, 3).tolist(), "strides": list(cfg.strides)}
    return result, extra, {"anchor_mean_iou": result.anchor_mean_iou, "dropped_targets": float(result.dropped_targets)}


def _log_figures(dets, val, cfg, sample_images: bool, score_threshold: float) -> None:  # noqa: ANN001
    """PR curves, and (when asked) held-out images with truth and detections drawn: public mask-set images."""
    with artifact_folder("plots") as folder:
        plot_pr_curves(dets, truths_of(val), cfg.classes, folder / "pr_curves.png")
    if sample_images:
        with artifact_folder("samples") as folder:
            n = min(SAMPLE_IMAGES, len(val))
            draw_truth_and_detections(
                [s.image for s in val[:n]], dets[:n], truths_of(val[:n]), cfg.classes, folder, score_threshold
            )


def register_and_gate(
    model_uri: str, run_id: str, metrics: dict, val, settings: Settings, variant: str = "yolo"
) -> dict:
    """New version as challenger; champion only if its map50 beats the champion's on the same images."""
    det = settings.detection
    name = det.registered_model
    current = registry.champion(name)
    champion_metrics = None
    if current is not None:  # re-scored on this run's held-out images: the same evaluation data
        model = mlflow.pytorch.load_model(current.uri)
        cfg = DetectTrainConfig.from_settings(settings)
        champion_metrics, _ = final_evaluation(model, val, cfg)
    version = registry.register(
        model_uri,
        name,
        run_id=run_id,
        tags={"map50": f"{metrics['map50']:.4f}", "map50_95": f"{metrics['map50_95']:.4f}", "variant": variant},
    )
    decision = registry.gate(
        {"map50": metrics["map50"]},
        None if champion_metrics is None else {"map50": champion_metrics["map50"]},
        "map50",
        det.min_improvement,
    )
    if decision.promote:
        registry.promote(name, version, decision.reason)
    else:
        registry.set_gate_state(name, version, "rejected", decision.reason)
    get_run_logger().info(
        "registered %s version %s: %s (%s)",
        name,
        version,
        "promoted to champion" if decision.promote else "kept as challenger",
        decision.reason,
    )
    return {"registered_model": name, "version": version, "promoted": decision.promote, "gate": decision.reason}


@flow(name="bench-detector", log_prints=True)
def detect_bench_flow(model_uri: str | None = None, hog: bool = True, timed_images: int = 50) -> dict:
    """Held-out mAP (VOC, COCO, pycocotools), speed, class-agnostic face AP beside dlib HOG's."""
    settings = load_settings()
    det = settings.detection
    log = get_run_logger()
    uri, source_run = bench.resolve_model(det.registered_model, model_uri)
    model = load_model_uri(uri)
    _, val = samples(settings, None, None)
    cfg = DetectTrainConfig.from_settings(settings)
    log.info("benchmarking %s on %d held-out images", uri, len(val))
    with tracked_run(
        f"{settings.tracking.experiment_prefix}-bench-detect",
        "yolo-mobilenet_v2",
        params={"model_uri": uri, "val_images": len(val), "hog": hog},
        data_version=data_version.read_version(),
    ):
        result = bench.run_benchmark(
            model,
            val,
            cfg,
            hog=hog,
            timed_images=timed_images,
            timing_score_threshold=det.score_threshold,
            log=log.info,
        )
        result["model_uri"] = uri
        result["training_minutes"] = bench.training_minutes(source_run)
        mlflow.log_metrics(numeric_metrics(result))
        mlflow.log_dict(result, "bench_detect.json")
    return result


def resolve_bench_model(model_uri: str | None) -> tuple[str, str | None]:
    """(uri, source run) of the model ``bench detect`` scores, looked up BEFORE its flow starts: without a
    champion the RegistryError is the command's one error line, not a failed flow run whose traceback
    Prefect logs."""
    return bench.resolve_model(load_settings().detection.registered_model, model_uri)


def seeds_result_path() -> Path:
    """benchmarks/results/detect-<YYYYMMDD>-<short commit>.json (the report's naming)."""
    commit = git_commit()[:7] if git_commit() != "unknown" else "unknown"
    return repo_root() / "benchmarks" / "results" / f"detect-{time.strftime('%Y%m%d')}-{commit}.json"


@flow(name="bench-detector-seeds", log_prints=True)
def detect_seeds_bench_flow(seeds: int = 3) -> dict:
    """The figure to quote: the two-stage detector trained with ``seeds`` seeds (params' seed upwards)
    on the seeded train split and scored on the held-out one; per seed and mean / spread, one MLflow run."""
    settings = load_settings()
    log = get_run_logger()
    train, val = samples(settings, None, None)
    cfg = TwoStageConfig.from_settings(settings)
    eval_cfg = DetectTrainConfig.from_settings(settings)
    with tracked_run(
        f"{settings.tracking.experiment_prefix}-bench-detect",
        "two-stage-seeds",
        params={"seeds": seeds, "first_seed": cfg.seed, "train_images": len(train), "val_images": len(val)},
        data_version=data_version.read_version(),
    ):
        result = bench.seeds_benchmark(train, val, cfg, eval_cfg, seeds, log=log.info)
        result.update(
            benchmark="detect",
            commit=git_commit(),
            date=time.strftime("%Y-%m-%d"),
            loadavg_start=result["per_seed"][0]["load_1min"],
            loadavg_end=os.getloadavg()[0],
        )
        mlflow.log_metrics({f"{k}_{stat}": v for k, s in result["summary"].items() for stat, v in s.items()})
        mlflow.log_dict(result, "bench_detect_seeds.json")
    return result


@flow(name="bench-face-detectors", log_prints=True)
def face_detectors_bench_flow(detectors: list[str] | None = None) -> dict:
    """Class-agnostic face AP@0.5 of the recognition path's face detectors on the detector's held-out
    split (no trained model needed): how many of the masked and bare faces each one finds."""
    settings = load_settings()
    _, val = samples(settings, None, None)
    chosen = [
        (d.split("@")[0], int(d.split("@")[1]) if "@" in d else 0) for d in (detectors or ["yunet", "dlib_hog@1"])
    ]
    with tracked_run(
        f"{settings.tracking.experiment_prefix}-bench-face-detectors",
        "face-detectors",
        params={"detectors": ",".join(detectors or ["yunet", "dlib_hog@1"]), "val_images": len(val)},
        data_version=data_version.read_version(),
    ):
        result = bench.face_detectors_benchmark(val, chosen)
        mlflow.log_metrics({f"{k}.face_ap50": v["face_ap50"] for k, v in result["detectors"].items()})
        mlflow.log_dict(result, "bench_face_detectors.json")
    return result


def main(argv: list[str] | None = None) -> None:
    """``python -m facegate.flows.detect train [--frozen-epochs N] [--finetune-epochs N] [--log-sample-images]``: the
    same flow as ``facegate train-detector``, the command the docs and messages name."""
    import facegate.flows  # noqa: F401 - quiet, embedded defaults

    parser = argparse.ArgumentParser(prog="python -m facegate.flows.detect")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train, evaluate, register and gate the detector (params: detection.*)")
    train.add_argument("--frozen-epochs", type=int)
    train.add_argument("--finetune-epochs", type=int)
    train.add_argument("--log-sample-images", action=argparse.BooleanOptionalAction, default=None)
    train.add_argument("--variant", choices=sorted(VARIANTS), help="default: params detection.variant")
    args = parser.parse_args(argv)
    result = detect_train_flow(
        frozen_epochs=args.frozen_epochs,
        finetune_epochs=args.finetune_epochs,
        log_sample_images=args.log_sample_images,
        variant=args.variant,
    )
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
