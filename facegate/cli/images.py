"""The other models, on one image the user names: face-mask detection (`detect`) and neural style
transfer (`stylize`). Each writes its picture only where --out says."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from facegate.cli.output import friendly, print_json


@friendly
def detect(
    image: Annotated[Path, typer.Argument(help="a photo or frame")],
    out: Annotated[Path | None, typer.Option(help="write the image with boxes and labels here")] = None,
    model: Annotated[str | None, typer.Option(help="MLflow model URI (default: the detector's champion)")] = None,
) -> None:
    """Face-mask detection (YOLO-style): every box with its class and score; --out draws them."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no INFO lines (a new store's tables) beside the answer
    from facegate.components.lifecycle.detector_models import detect_file  # heavy: torch, ~1.3 s

    print_json(detect_file(image, out, model_uri=model))


@friendly
def stylize(
    content: Annotated[Path, typer.Argument(help="content image C (what is where)")],
    style: Annotated[Path, typer.Argument(help="style image S (how it looks)")],
    out: Annotated[Path, typer.Option(help="write G here (.jpg or .png)")],
    iterations: Annotated[int | None, typer.Option(help="override style.iterations")] = None,
    log_images: Annotated[
        bool | None,
        typer.Option(
            "--log-images/--no-log-images",
            help="content, style and output in MLflow "
            "(default: params style.log_images, off: a face photo is biometric data)",
        ),
    ] = None,
) -> None:
    """Neural style transfer (Gatys et al.): G keeps C's content and takes S's style; costs in MLflow."""
    from facegate.flows.style import check_inputs, stylize_flow  # heavy: Prefect, MLflow and torch load in seconds

    check_inputs(content, style, out)
    print_json(stylize_flow(str(content), str(style), str(out), iterations=iterations, log_images=log_images))
