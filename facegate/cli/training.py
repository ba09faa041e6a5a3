"""What the ML engineer runs to make new models: the whole retraining chain (`demo`, `retrain`), one
training run (`train`, `train-detector`) and the chain on its cron schedule (`schedule`).

Each starts Prefect flows that log to MLflow: those load in seconds, so they are imported in the
command that runs them, never when another command starts."""

from __future__ import annotations

from typing import Annotated

import typer

from facegate.cli.options import DatasetOpt, JsonOpt, LimitOpt
from facegate.cli.output import emit, friendly, print_json
from facegate.components.core.paths import mlflow_tracking_uri
from facegate.components.core.processes import Terminated, stop_children_on_signals


def _check_training_device(detector: bool = False) -> None:
    """Resolve the training device from params now: a GPU asked for but missing is one error line
    (``device_unavailable``, naming the setting) before Prefect starts or any data is read."""
    from facegate.components.core.settings import load_settings  # heavy: pydantic and the params schema, ~0.15 s

    if detector:
        from facegate.components.detection.train import DetectTrainConfig  # heavy: torch, ~1.5 s

        DetectTrainConfig.from_settings(load_settings())
    else:
        from facegate.components.embedding.train import TrainConfig  # heavy: torch, ~1.5 s

        TrainConfig.from_settings(load_settings())


def _report_chain(result: dict) -> None:
    """Where to look after a chain: the MLflow run, the registered version and alias, the gallery."""
    if result.get("skipped"):
        typer.echo(f"skipped: {result['skip_reason']}")
        typer.echo(
            f"MLflow run: {result['run_id']} in experiment {result['experiment']}; wall time: {result['wall_s']:.1f} s"
        )
        return
    typer.echo(f"data version: {result['data_version']} (data.dvc; `dvc pull` restores it)")
    typer.echo(
        f"challenger: {result['gate_metric']} {result['challenger_metrics'][result['gate_metric']]:.4f}"
        f" vs {result['incumbent']} {result['incumbent_metrics'][result['gate_metric']]:.4f}"
    )
    typer.echo(f"gate: {result['gate_reason']}")
    typer.echo(
        f"registered: {result['model']} version {result['challenger_version']}"
        f" ({'promoted to champion' if result['promoted'] else 'not promoted'}); "
        f"alias champion -> version {result['champion_version']}"
    )
    if result.get("gallery_version"):
        typer.echo(
            f"gallery: index {result['gallery_index_version']} with {result['employees']} employee(s), "
            f"DVC version {result['gallery_version']} (gallery.dvc)"
        )
    else:
        typer.echo("gallery: unchanged (the champion did not change)")
    typer.echo(
        f"MLflow run: {result['run_id']} in experiment {result['experiment']} "
        f"({mlflow_tracking_uri()}; `facegate ui` opens it)"
    )
    typer.echo(f"wall time: {result['wall_s']:.0f} s")


@friendly
def demo(dataset: DatasetOpt = None, limit: LimitOpt = None) -> None:
    """The main job on the default data: the whole retraining chain, then where to look."""
    _check_training_device()
    from facegate.flows.retrain import retrain_flow  # heavy: Prefect and MLflow load in seconds

    _report_chain(retrain_flow(datasets=dataset, limit=limit))


@friendly
def retrain(
    dataset: DatasetOpt = None,
    limit: LimitOpt = None,
    json_out: JsonOpt = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="run even when data, params and code are unchanged since the champion's chain "
            "(otherwise such a run is skipped and recorded as skipped in MLflow)",
        ),
    ] = False,
) -> None:
    """ingest -> validate -> augment -> train -> evaluate -> register -> gate -> gallery -> promote."""
    _check_training_device()
    from facegate.flows.retrain import retrain_flow  # heavy: Prefect and MLflow load in seconds

    result = retrain_flow(datasets=dataset, limit=limit, force=force)
    if json_out:
        emit(result, json_out)
    _report_chain(result)


@friendly
def train(
    dataset: Annotated[
        str | None, typer.Option(help="ingested identity dataset (default: params' retrain.dataset)")
    ] = None,
    backbone: Annotated[str | None, typer.Option(help="dlib_resnet | mobilenet_v2 (default: params)")] = None,
    mode: Annotated[str | None, typer.Option(help="pretrained | head | finetune (default: params)")] = None,
    epochs: Annotated[int | None, typer.Option(help="override train.epochs")] = None,
    lr: Annotated[float | None, typer.Option(help="override train.lr")] = None,
    miner: Annotated[str | None, typer.Option(help="override train.miner")] = None,
) -> None:
    """Train the embedding on the ingested train split; evaluate on held-out identities; log to MLflow."""
    _check_training_device()
    from facegate.flows.train import train_flow  # heavy: Prefect, MLflow and torch load in seconds

    print_json(train_flow(dataset=dataset, backbone=backbone, mode=mode, epochs=epochs, lr=lr, miner=miner))


@friendly
def train_detector(
    frozen_epochs: Annotated[int | None, typer.Option(help="override detection.frozen_epochs")] = None,
    finetune_epochs: Annotated[int | None, typer.Option(help="override detection.finetune_epochs")] = None,
    log_sample_images: Annotated[
        bool | None,
        typer.Option(
            "--log-sample-images/--no-sample-images",
            help="held-out face images with boxes in MLflow (default: params detection.log_sample_images, off)",
        ),
    ] = None,
) -> None:
    """Train the face-mask detector (frozen, then fine-tuned), evaluate, register, gate, promote."""
    _check_training_device(detector=True)
    from facegate.flows.detect import detect_train_flow  # heavy: Prefect, MLflow and torch load in seconds

    print_json(
        detect_train_flow(
            frozen_epochs=frozen_epochs, finetune_epochs=finetune_epochs, log_sample_images=log_sample_images
        )
    )


@friendly
def train_pad(
    epochs: Annotated[int | None, typer.Option(help="override pad.epochs")] = None,
    lr: Annotated[float | None, typer.Option(help="override pad.lr")] = None,
) -> None:
    """Fine-tune the MiniFASNet pair on params' pad.dataset (mirroring and small crops, no colour shifts),
    calibrate its threshold on held-out subjects, register it (pad.registered_model) and promote it only
    if its held-out BPCER100 is no worse than the zero-shot pair's."""
    from facegate.flows.pad import pad_train_flow  # heavy: Prefect, MLflow and torch load in seconds

    print_json(pad_train_flow(epochs=epochs, lr=lr))


@friendly
def schedule(
    cron: Annotated[str | None, typer.Option(help="retraining cron (default: params retrain.cron)")] = None,
    drift_cron: Annotated[
        str | None, typer.Option(help="drift check cron (default: params retrain.drift_cron)")
    ] = None,
    port: Annotated[int, typer.Option(help="loopback port of the Prefect server to use or start")] = 4200,
) -> None:
    """Serve the retraining deployment (weekly) and the drift check's (daily; a trigger starts a
    retraining run) on their cron schedules against a real Prefect server (started on 127.0.0.1 if none
    answers; PREFECT_API_URL names another). Ctrl-C or SIGTERM stops it, with the server it started and
    any flow run in progress."""
    from facegate.components.core.settings import load_settings  # heavy: pydantic and the params schema, ~0.15 s
    from facegate.flows.schedule import (  # heavy: Prefect and MLflow load in seconds
        ensure_server,
        scheduled_deployments,
        serve_schedules,
    )

    settings = load_settings()
    r = settings.retrain
    with stop_children_on_signals() as groups:  # on any exit: every process started here stops
        server = ensure_server(port)
        if server.pid is not None:  # a server this command started stops with it
            groups.append(server.pid)
        typer.echo(server.describe())
        typer.echo(
            f"serving deployment retrain/{r.deployment} on cron '{cron or r.cron}' and drift/{r.drift_deployment} "
            f"on cron '{drift_cron or r.drift_cron}' ({r.timezone}); runs appear in the Prefect UI at "
            f"{server.api_url.removesuffix('/api')} and in MLflow (facegate ui)"
        )
        try:
            serve_schedules(server, scheduled_deployments(settings, cron, drift_cron))
        except (Terminated, KeyboardInterrupt):
            typer.echo("stopping: the deployments' runner and every process it started", err=True)
