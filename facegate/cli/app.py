"""`facegate`: the one front door. Commands build objects from params and call flows or components;
typed errors become one clear line (and exit code 2), never a traceback (`facegate --debug ...` shows it).

The single-item commands (enroll, remove, identify, verify) call ``FaceGate`` directly: no Prefect
server, a few seconds each; Prefect flows remain for the chain, batch enrolment and schedules.

The commands live in modules by what the operator or engineer does (``recognition``, ``gallery``,
``training``, ``models``, ``explain``, ``data``, ``bench``, ``serve``, ``images``, ``accounts``); this module puts
them on the root app in the order `facegate --help` lists them."""

from __future__ import annotations

from typing import Annotated

import typer

from facegate.cli import data, images, models, recognition, serve, training
from facegate.cli.accounts import access_log_app, accounts_app
from facegate.cli.bench import bench_app
from facegate.cli.explain import explain_app
from facegate.cli.gallery import gallery_app
from facegate.cli.output import DEBUG
from facegate.components.core.paths import configure_environment
from facegate.components.lifecycle import run_outbox

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="facegate: face-recognition entrance and the MLOps around it.",
)


@app.callback()
def _global_options(
    debug: Annotated[bool, typer.Option("--debug", help="print the traceback of an error as well")] = False,
) -> None:
    DEBUG["tracebacks"] = debug


for command in (
    data.weights,
    data.ingest,
    data.validate,
    training.demo,
    training.retrain,
    training.train,
    training.schedule,
    serve.ui,
    recognition.enroll,
    recognition.remove,
    recognition.identify,
    images.detect,
):
    app.command()(command)
app.command("train-detector")(training.train_detector)
app.command("train-pad")(training.train_pad)
for command in (recognition.verify, serve.serve, models.calibrate, images.stylize):
    app.command()(command)
app.command("calibrate-pad")(models.calibrate_pad)

app.add_typer(data.data_app, name="data")
app.add_typer(bench_app, name="bench")
app.add_typer(models.models_app, name="models")
app.add_typer(explain_app, name="explain")
app.add_typer(gallery_app, name="gallery")
app.add_typer(accounts_app, name="accounts")
app.add_typer(access_log_app, name="access-log")


def main() -> None:
    """Run the command line. The embedded defaults (Prefect and MLflow homes, telemetry off) are set here,
    from the caller's environment, before any command imports Prefect or MLflow: not at import, so a
    test that imports ``app`` under its sandbox does not fix them for the tests after it. MLflow runs left
    over in the outbox (``run_outbox.drain_leftovers``) get a detached flusher at any command's start
    (``serve`` and the flows' commands included)."""
    configure_environment()
    run_outbox.drain_leftovers()  # MLflow runs a killed process left in the outbox: a detached flusher logs them
    app()
