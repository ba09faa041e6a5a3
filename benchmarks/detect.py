"""The detector benchmark on the held-out split: mAP (project code and pycocotools), speed, and the
class-agnostic face AP@0.5 beside dlib's HOG detector on the same images."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

import numpy as np

from facegate.components.core.errors import RegistryError
from facegate.components.core.settings import load_settings
from facegate.components.detection.data import DetectionSample, truths_of
from facegate.components.detection.decode import Detections, detect_images
from facegate.components.detection.metrics import Truth, evaluate, voc_map
from facegate.components.detection.train import DetectTrainConfig, final_evaluation
from facegate.components.detection.two_stage import TwoStageConfig
from facegate.components.detection.two_stage_training import train_two_stage
from facegate.components.faces.detectors import DlibHogDetector, detector_from_settings
from facegate.components.lifecycle import registry

__all__ = [
    "resolve_model",
    "run_benchmark",
    "face_truths",
    "hog_detections",
    "images_per_second",
    "training_minutes",
    "face_detectors_benchmark",
    "seeds_benchmark",
    "spread",
    "RARE_CLASS",
]

RARE_CLASS = "mask_weared_incorrect"  # the class the goal names beside mAP@0.5 (AP >= 0.6)


def resolve_model(name: str, model_uri: str | None) -> tuple[str, str | None]:
    """(uri, source run id): the given URI, else the registered model's champion."""
    if model_uri:
        return model_uri, (model_uri.split("/")[1] if model_uri.startswith("runs:/") else None)
    current = registry.champion(name)
    if current is None:
        raise RegistryError(f"registry: model {name!r} has no champion; train one with `facegate train-detector`")
    return current.uri, current.run_id


def training_minutes(run_id: str | None) -> float | None:
    if not run_id:
        return None
    import mlflow  # heavy: MLflow takes seconds to import; only the paths that track or load models need it

    return mlflow.get_run(run_id).data.metrics.get("train_minutes")


def face_truths(truths: list[Truth]) -> list[Truth]:
    """Every class is a face: one class 0."""
    return [Truth(t.boxes, np.zeros(len(t.labels), np.int64)) for t in truths]


def as_faces(dets: list[Detections]) -> list[Detections]:
    return [Detections(d.boxes, d.scores, np.zeros(len(d.labels), np.int64)) for d in dets]


def hog_detections(images: list[np.ndarray], upsample: int = 1) -> list[Detections]:
    """dlib's HOG detector with its SVM score as confidence (threshold 0: all it reports by default)."""
    hog = DlibHogDetector(upsample=upsample)
    out = []
    for im in images:
        found = hog.detect(im)
        out.append(
            Detections(
                np.array([b.as_list() for b in found], dtype=np.float64).reshape(-1, 4),
                np.array([b.score for b in found], dtype=np.float64),
                np.zeros(len(found), np.int64),
            )
        )
    return out


def face_detector_detections(
    name: str, images: list[np.ndarray], score_threshold: float = 0.05, upsample: int = 0
) -> tuple[list[Detections], float]:
    """A face detector of the recognition registry on every image (a low score threshold so the PR
    curve is complete), as class-agnostic detections, and its images per second."""
    options = {"score_threshold": score_threshold} if name.startswith(("yunet", "retinaface")) else {}
    detector = detector_from_settings(load_settings().faces, name, upsample=upsample, **options)
    out, t0 = [], time.perf_counter()
    for im in images:
        found = detector.detect(im)
        out.append(
            Detections(
                np.array([b.as_list() for b in found], dtype=np.float64).reshape(-1, 4),
                np.array([b.score for b in found], dtype=np.float64),
                np.zeros(len(found), np.int64),
            )
        )
    return out, len(images) / (time.perf_counter() - t0)


def face_detectors_benchmark(val: list[DetectionSample], detectors: list[tuple[str, int]]) -> dict:
    """Class-agnostic face AP@0.5 on the held-out images (every mask class is a face) per detector."""
    images, truths = [s.image for s in val], face_truths(truths_of(val))
    rows = {}
    for name, upsample in detectors:
        dets, speed = face_detector_detections(name, images, upsample=upsample)
        rows[f"{name}_upsample{upsample}"] = {
            "face_ap50": voc_map(dets, truths, 1)[0],
            "images_per_s": speed,
            "boxes_found": int(sum(len(d) for d in dets)),
        }
    return {"val_images": len(val), "val_faces": int(sum(len(t.labels) for t in truths)), "detectors": rows}


def images_per_second(
    model, images: list[np.ndarray], score_threshold: float, iou_threshold: float, threads: int = 2
) -> float:
    """One image at a time (a camera frame), letterbox + network + decode + NMS, ``threads`` CPU threads."""
    import torch  # heavy: torch loads ~1 s of native code; only the paths that run a model need it

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        getattr(model, "clear_proposal_cache", lambda: None)()  # the two-stage detector caches by frame content
        detect_images(model, images[:2], score_threshold=score_threshold, iou_threshold=iou_threshold, batch_size=1)
        t0 = time.perf_counter()
        detect_images(model, images, score_threshold=score_threshold, iou_threshold=iou_threshold, batch_size=1)
        return len(images) / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)


def run_benchmark(
    model,
    val: list[DetectionSample],
    cfg,
    *,
    hog: bool = True,
    timed_images: int = 50,
    timing_score_threshold: float = 0.4,
    log: Callable[[str], None] = lambda m: None,
) -> dict:
    """``timing_score_threshold``: the threshold in service (``detection.score_threshold``), used for speed."""
    images = [s.image for s in val]
    truths = truths_of(val)
    dets = detect_images(
        model,
        images,
        score_threshold=cfg.eval_score_threshold,
        iou_threshold=cfg.nms_iou,
        max_detections=cfg.max_detections,
    )
    metrics = evaluate(dets, truths, tuple(model.class_names))
    log(f"map50 {metrics['map50']:.4f} map50_95 {metrics['map50_95']:.4f}")
    faces = detect_images(
        model,
        images,
        score_threshold=cfg.eval_score_threshold,
        iou_threshold=cfg.nms_iou,
        max_detections=cfg.max_detections,
        class_agnostic=True,
    )
    face_ap50 = voc_map(as_faces(faces), face_truths(truths), 1)[0]
    per_class = metrics["ap50_per_class"]
    scored = {k: v for k, v in per_class.items() if v is not None}
    counts = {name: int(sum((t.labels == c).sum() for t in truths)) for c, name in enumerate(model.class_names)}
    result = {
        "val_images": len(val),
        "val_boxes_per_class": counts,
        "map50": metrics["map50"],
        "map50_95": metrics["map50_95"],
        "coco_map50": metrics["coco_map50"],
        "variant": getattr(model, "variant", "yolo"),
        "ap50_per_class": per_class,
        "per_class_ap50": dict(per_class),
        "ap50_95_per_class": metrics["ap50_95_per_class"],
        "pycocotools_map50": metrics["pycocotools_map50"],
        "pycocotools_map50_95": metrics["pycocotools_map50_95"],
        "pycocotools_abs_diff": metrics["pycocotools_abs_diff"],
        "weakest_class": min(scored, key=scored.get) if scored else None,
        "face_ap50": face_ap50,
        "input_size": int(model.input_size[0]),
    }
    log(f"face AP50 {face_ap50:.4f}; timing {min(timed_images, len(images))} images")
    result["images_per_s"] = images_per_second(model, images[:timed_images], timing_score_threshold, cfg.nms_iou)
    result.update(threads=2, timed_images=min(timed_images, len(images)), timing_score_threshold=timing_score_threshold)
    if hog:
        hog_dets = hog_detections(images, upsample=1)
        result["hog_face_ap50"] = voc_map(hog_dets, face_truths(truths), 1)[0]
        found = sum(len(d) for d in hog_dets)
        result["hog_upsample"] = 1
        result["hog_boxes_found"] = found
    return result


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max."""
    v = np.asarray(values, np.float64)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
    }


def _four(value: float | None) -> str:
    """A figure for the log line; a class with no held-out box (a tiny test split) has no AP."""
    return "n/a" if value is None else f"{value:.4f}"


def seeds_benchmark(
    train: list[DetectionSample],
    val: list[DetectionSample],
    cfg: TwoStageConfig,
    eval_cfg: DetectTrainConfig,
    seeds: int,
    on_seed: Callable[[dict, object], None] = lambda row, model: None,
    log: Callable[[str], None] = lambda m: None,
) -> dict:
    """The figure to quote: the two-stage detector trained from scratch with seeds ``cfg.seed`` ..
    ``cfg.seed + seeds - 1`` and scored on the held-out split. The same seed gives the same model, so
    the spread is the seeds' alone; per seed mAP@0.5 (the project's and pycocotools'), the rare class's
    AP, training minutes and the machine's load (a loaded machine trains slower, not differently)."""
    rows = []
    for k in range(seeds):
        seed = cfg.seed + k
        result = train_two_stage(train, val, dataclasses.replace(cfg, seed=seed), log=log)
        metrics, _ = final_evaluation(result.model, val, eval_cfg)
        row = {
            "seed": seed,
            "map50": metrics["map50"],
            "pycocotools_map50": metrics["pycocotools_map50"],
            "map50_95": metrics["map50_95"],
            "ap50_per_class": metrics["ap50_per_class"],
            f"ap50_{RARE_CLASS}": metrics["ap50_per_class"].get(RARE_CLASS),
            "train_minutes": result.train_minutes,
            "load_1min": round(os.getloadavg()[0], 2),
        }
        log(
            f"seed {seed}: map50 {_four(row['map50'])} (pycocotools {_four(row['pycocotools_map50'])}), "
            f"{RARE_CLASS} AP {_four(row[f'ap50_{RARE_CLASS}'])}, {row['train_minutes']:.1f} min"
        )
        rows.append(row)
        on_seed(row, result.model)
    keys = ("map50", "pycocotools_map50", f"ap50_{RARE_CLASS}", "train_minutes")
    return {
        "variant": "two_stage",
        "seeds": [r["seed"] for r in rows],
        "val_images": len(val),
        "train_images": len(train),
        "per_seed": rows,
        "summary": {k: spread(v) for k in keys if (v := [r[k] for r in rows if r[k] is not None])},
        "threads": cfg.threads,
        "flip_tta": cfg.flip_tta,
    }
