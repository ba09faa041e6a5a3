"""Style-transfer flows: stylize (C and S -> G, logged to MLflow) and the issue's benchmark case.

Wiring only: features, costs and the optimisation come from facegate.components.style.transfer. A face photo
as content is biometric data, so the input and output images reach MLflow only when ``style.log_images``
(or the flow's argument) says so; without it the run records the images' sha256, never their pixels
or names.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import time
from pathlib import Path

import mlflow
import torch
from prefect import flow, get_run_logger
from tqdm import tqdm

from facegate.components.core.errors import DatasetError
from facegate.components.core.paths import datasets_root
from facegate.components.core.settings import Settings, load_settings
from facegate.components.lifecycle.tracking import tracked_run
from facegate.components.networks.mobilenet_v2 import MobileNetV2
from facegate.components.style.transfer import (
    StyleConfig,
    StyleFeatures,
    StyleResult,
    StyleStep,
    check_output_path,
    config_from_settings,
    load_style_inputs,
    plot_cost_curve,
    run_benchmark,
    save_image,
    side_by_side,
    stylize,
)

EXPERIMENT = "style"
RUN_NAME = "gatys-mobilenet_v2"
# The benchmark pair: a group photo from face-api.js's MIT-licensed examples (shared data), and
# scikit-image's immunohistochemistry sample, a painting-like texture shipped inside the package.
BENCH_CONTENT = "faceapi-examples/bbt4.jpg"
BENCH_STYLE = ("skimage", "data/ihc.png")
METRIC_BATCH = 900  # MLflow takes at most 1000 metrics per batch


def bench_style_image() -> Path:
    package, relpath = BENCH_STYLE
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"package {package!r} (scikit-image) is not installed: run `make setup`")
    path = Path(next(iter(spec.submodule_search_locations))) / relpath
    if not path.is_file():
        raise DatasetError(f"{path}: the benchmark's style image is missing from {package}")
    return path


def _sha256(path: str | Path) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "unreadable"  # the image loader raises the typed error when it reads the file


def _params(settings: Settings, cfg: StyleConfig, **run) -> dict:
    """params.yaml's style section as it is, and this run's own facts (``run.iterations`` after overrides)."""
    params = {k: v for k, v in settings.flat().items() if k.startswith("style.")}
    params.update({f"run.{k}": v for k, v in {"iterations": cfg.iterations, **run}.items()})
    return params


def _progress(cfg: StyleConfig):
    """A tqdm bar over the iterations, its postfix the current costs."""
    bar = tqdm(total=cfg.iterations, desc="style transfer", unit="it")

    def on_step(step: StyleStep) -> None:
        bar.update(1)
        if step.iteration % 10 == 0 or step.iteration == cfg.iterations - 1:
            bar.set_postfix(total=f"{step.total:.4g}", content=f"{step.content:.3g}", style=f"{step.style:.3g}")

    return bar, on_step


def log_result(result: StyleResult, cfg: StyleConfig, images: dict | None = None) -> None:
    """Per-iteration cost parts (steps 0..iterations), the summary, the cost plot; images only if given."""
    from mlflow.entities import (
        Metric,  # heavy: MLflow takes seconds to import; only the paths that track or load models need it
    )

    run_id = mlflow.active_run().info.run_id
    now = int(time.time() * 1000)
    rows = [
        Metric(name, value, now, s.iteration)
        for s in result.curve
        for name, value in (("content_cost", s.content), ("style_cost", s.style), ("total_cost", s.total))
    ]
    client = mlflow.tracking.MlflowClient()
    for i in range(0, len(rows), METRIC_BATCH):
        client.log_batch(run_id, metrics=rows[i : i + METRIC_BATCH])
    mlflow.log_metrics(
        {
            "loss_start": result.loss_start,
            "loss_end": result.loss_end,
            "loss_reduction": result.loss_reduction,
            "style_cost_output": result.style_cost_output,
            "style_cost_content": result.style_cost_content,
            "optimise_seconds": result.seconds,
        }
    )
    mlflow.log_dict({"curve": [s.as_dict() for s in result.curve]}, "cost_curve.json")
    with tempfile.TemporaryDirectory() as tmp:
        plot_cost_curve(result.curve, cfg.alpha, cfg.beta, Path(tmp) / "cost_curve.png")
        mlflow.log_artifacts(tmp, "plots")
    if images:
        with tempfile.TemporaryDirectory() as tmp:
            for name, pixels in images.items():
                save_image(pixels, Path(tmp) / f"{name}.jpg")
            mlflow.log_artifacts(tmp, "images")


def check_inputs(content: str | Path, style: str | Path, out: str | Path) -> None:
    """Raise the typed error of a bad input before Prefect starts: a clear line in seconds, not after the
    server start and beside the flow engine's own traceback log. The flow checks again (it can run alone)."""
    check_output_path(out)
    settings = load_settings()
    cfg = config_from_settings(settings.style)
    load_style_inputs(
        content, style, cfg.image_size, StyleFeatures(MobileNetV2(), cfg.layers).min_side, settings.images.max_pixels
    )


@flow(name="stylize", log_prints=True)
def stylize_flow(
    content: str, style: str, out: str, iterations: int | None = None, log_images: bool | None = None
) -> dict:
    """G with C's content and S's style, written to ``out``; costs, curve and plot in MLflow."""
    settings = load_settings()
    log = get_run_logger()
    check_output_path(out)  # before minutes of optimisation, not after
    cfg = config_from_settings(settings.style, iterations=iterations)
    images = settings.style.log_images if log_images is None else log_images
    features = StyleFeatures.imagenet(cfg.layers)
    c, s = load_style_inputs(content, style, cfg.image_size, features.min_side, settings.images.max_pixels)
    log.info(
        "G: %dx%d, %d %s iterations, layers %s",
        c.shape[1],
        c.shape[0],
        cfg.iterations,
        cfg.optimizer,
        ", ".join(cfg.layers),
    )
    params = _params(
        settings,
        cfg,
        content_sha256=_sha256(content),
        style_sha256=_sha256(style),
        height=c.shape[0],
        width=c.shape[1],
        log_images=images,
    )
    with tracked_run(f"{settings.tracking.experiment_prefix}-{EXPERIMENT}", RUN_NAME, params=params) as run:
        bar, on_step = _progress(cfg)
        with bar:
            result = stylize(c, s, cfg, features=features, on_step=on_step)
        log_result(result, cfg, {"content": c, "style": s, "output": result.image} if images else None)
        written = save_image(result.image, out)
        run_id = run.info.run_id
    log.info(
        "cost %.4g -> %.4g (%.1f%% lower); style cost vs S: output %.4g, content %.4g; %.1f s",
        result.loss_start,
        result.loss_end,
        100 * result.loss_reduction,
        result.style_cost_output,
        result.style_cost_content,
        result.seconds,
    )
    return {
        "out": str(written),
        "run_id": run_id,
        "loss_start": result.loss_start,
        "loss_end": result.loss_end,
        "loss_reduction": result.loss_reduction,
        "style_cost_output": result.style_cost_output,
        "style_cost_content": result.style_cost_content,
        "seconds": result.seconds,
        "iterations": cfg.iterations,
        "images_logged": images,
    }


@flow(name="bench-style", log_prints=True)
def style_bench_flow(
    figure: str | None = None, iterations: int | None = None, threads: int = 2, log_images: bool | None = None
) -> dict:
    """The issue's case: a 256x256 content from the shared data and a packaged style image, timed on
    ``threads`` CPU threads; the load average at the start says how quiet the machine was."""
    settings = load_settings()
    log = get_run_logger()
    if figure:
        check_output_path(figure)
    torch.set_num_threads(threads)
    cfg = config_from_settings(settings.style, iterations=iterations)
    images = settings.style.log_images if log_images is None else log_images
    content, style = datasets_root() / BENCH_CONTENT, bench_style_image()
    load_start = os.getloadavg()
    params = _params(
        settings, cfg, content=BENCH_CONTENT, style="/".join(BENCH_STYLE), threads=threads, log_images=images
    )
    with tracked_run(f"{settings.tracking.experiment_prefix}-bench-{EXPERIMENT}", RUN_NAME, params=params):
        bar, on_step = _progress(cfg)
        with bar:
            result, styled, c, s = run_benchmark(content, style, cfg, settings.images.max_pixels, on_step=on_step)
        result.update(
            {
                "threads": threads,
                "loadavg_start": [round(x, 2) for x in load_start],
                "loadavg_end": [round(x, 2) for x in os.getloadavg()],
                "optimizer": cfg.optimizer,
                "content": BENCH_CONTENT,
                "style": "/".join(BENCH_STYLE),
            }
        )
        result["goals"] = {
            "loss_reduction >= 0.9": result["loss_reduction"] >= 0.9,
            "style_cost_ratio >= 10": result["style_cost_ratio"] >= 10,
            "seconds <= 60": result["seconds"] <= 60,
        }
        log_result(styled, cfg, {"content": c, "style": s, "output": styled.image} if images else None)
        mlflow.log_metrics(
            {
                "seconds": result["seconds"],
                "style_cost_ratio": result["style_cost_ratio"],
                "loadavg_start_1min": load_start[0],
            }
        )
        mlflow.log_dict(result, "bench_style.json")
    if figure:
        result["figure"] = str(save_image(side_by_side([c, s, styled.image]), figure, quality=85))
    log.info(
        "loss -%.1f%%, style cost ratio %.1f, %.1f s (load average %.2f at start)",
        100 * result["loss_reduction"],
        result["style_cost_ratio"],
        result["seconds"],
        load_start[0],
    )
    return result
