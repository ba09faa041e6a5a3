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
from benchmarks.lfw import load_lfw, measure_speed, run_lfw_benchmark
from components.evaluation.verification import plot_distance_histograms, plot_roc
from components.paths import datasets_root, state_dir
from components.settings import load_settings
from components.tracking import tracked_run


@flow(name="bench-lfw", log_prints=True)
def lfw_benchmark_flow(backbone: str | None = None, mode: str | None = None, flip_tta: bool | None = None,
                       miner: str | None = None, epochs: int | None = None, groups: int | None = None,
                       lr: float | None = None, mining: str = "online", speed: bool = True) -> dict:
    settings = load_settings()
    log = get_run_logger()
    backbone = backbone or settings.embedding.backbone
    mode = mode or settings.embedding.mode
    flip_tta = settings.embedding.flip_tta if flip_tta is None else flip_tta
    cfg = TrainConfig.from_settings(settings, miner=miner, epochs=epochs, lr=lr)
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
                                        upsample=settings.faces.upsample, flip_tta=flip_tta))
        mlflow.log_metrics({k: float(v) for k, v in result.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
        with tempfile.TemporaryDirectory() as tmp:
            plot_roc(dist, lfw.same, Path(tmp) / "roc.png")
            plot_distance_histograms(dist, lfw.same, Path(tmp) / "distances.png", threshold=result["threshold_mean"])
            mlflow.log_artifacts(tmp, "plots")
        mlflow.log_dict({k: v for k, v in result.items()}, "lfw_result.json")
    log.info("LFW %s/%s tta=%s: %.4f +- %.4f", backbone, mode, flip_tta, result["accuracy_mean"], result["accuracy_std"])
    return result


@flow(name="bench-identify", log_prints=True)
def identify_benchmark_flow(backbone: str | None = None, mode: str = "pretrained", timed_frames: int = 200) -> dict:
    """Open-set identification on LFW, two identity halves, model and tau never fit on the half measured."""
    import numpy as np

    from components.embedding.backbones import make_backbone
    from components.embedding.model import EmbeddingModel, cached_features, embed_from_features
    from components.embedding.train import train_head
    from benchmarks.identify import identity_halves, measure_half, time_identify
    from components.images import load_image
    from components.recognition import FaceRecognizer

    settings = load_settings()
    log = get_run_logger()
    backbone = backbone or settings.embedding.backbone
    cache = state_dir() / "cache"
    lfw = load_lfw(datasets_root() / "lfw", cache, detector=settings.faces.detector, upsample=settings.faces.upsample)
    feats, flips = cached_features(lfw.chips.chips, lfw.chip_key, backbone, cache)
    half = identity_halves(lfw.identities, settings.seed)
    cfg = TrainConfig.from_settings(settings)
    flip = flips if settings.embedding.flip_tta else None
    with tracked_run(f"{settings.tracking.experiment_prefix}-bench-identify", f"{backbone}-{mode}",
                     params={"backbone": backbone, "mode": mode, "target_far": settings.gallery.target_far,
                             "detector": settings.faces.detector, "flip_tta": settings.embedding.flip_tta}):
        halves, gallery, model = [], None, None
        for h in (0, 1):
            rows, other = np.flatnonzero(half == h), np.flatnonzero(half != h)
            model = EmbeddingModel(make_backbone(backbone))
            if mode == "head":  # trained on the other half only
                ids, counts = np.unique(lfw.identities[other], return_counts=True)
                multi = other[np.isin(lfw.identities[other], ids[counts >= 2])]
                _, labels = np.unique(lfw.identities[multi], return_inverse=True)
                train_head(model, feats[multi], flips[multi], labels, cfg)
            emb = embed_from_features(model, feats, flip)
            calib_ids, calib_counts = np.unique(lfw.identities[other], return_counts=True)
            calib_rows = other[np.isin(lfw.identities[other], calib_ids[calib_counts >= 2])]
            metrics, g = measure_half(emb, lfw.identities, rows, calib_rows, settings.gallery.target_far,
                                      (backbone, f"{mode}-half{1 - h}"), settings.gallery.index_kind,
                                      target_fpir=settings.gallery.target_fpir)
            log.info("half %d: %s", h, {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
            halves.append(metrics)
            gallery = gallery or g
        keys = [k for k, v in halves[0].items() if isinstance(v, (int, float))]
        result = {"backbone": backbone, "mode": mode, "target_far": settings.gallery.target_far,
                  **{k: float(np.mean([m[k] for m in halves])) for k in keys}, "halves": halves}
        recognizer = FaceRecognizer(EmbeddingModel(make_backbone(backbone)), settings)
        first_half = [lfw.root / p for p, hh in zip(lfw.paths, half) if hh == 0][:: 7][:timed_frames]

        def recognize(path):
            """One face per frame: the one nearest the centre (LFW frames hold other people too)."""
            image = load_image(path)
            faces = recognizer.embed_all(image)
            if not faces:
                return None
            cy, cx = image.shape[0] / 2, image.shape[1] / 2
            best = min(faces, key=lambda f: (f.box.centre[0] - cx) ** 2 + (f.box.centre[1] - cy) ** 2)
            return best.embedding

        result.update(time_identify(recognize, gallery, first_half))
        mlflow.log_metrics({k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        mlflow.log_dict(result, "identify_result.json")
    return result
