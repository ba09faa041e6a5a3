"""What the operator does to the gallery as a whole: `facegate gallery build|snapshot|show` (re-embed
everyone, version gallery/ with DVC, look at what is enrolled)."""

from __future__ import annotations

from typing import Annotated

import typer

from facegate.cli.output import friendly, print_json
from facegate.cli.recognition import quiet_for_one_item
from facegate.components.core.paths import gallery_dir
from facegate.components.lifecycle import run_outbox
from facegate.components.lifecycle.tracking import flush_pending_runs

gallery_app = typer.Typer(no_args_is_help=True, help="The FAISS gallery of enrolled employees.")


@gallery_app.command("build")
@friendly
def gallery_build() -> None:
    """Re-embed every enrolled employee with the model in service and recalibrate tau."""
    from facegate.flows.gallery import build_gallery_flow  # heavy: Prefect and MLflow load in seconds

    print_json(build_gallery_flow())


@gallery_app.command("snapshot")
@friendly
def gallery_snapshot(
    pending: Annotated[
        bool, typer.Option("--pending", help="only if a write asked for one (what the background process runs)")
    ] = False,
) -> None:
    """Version gallery/ with DVC now (`dvc add gallery` + push): gallery.dvc matches gallery/ after it.
    Then the gallery changes' pending MLflow runs are logged (as `gallery log-records`), even if the
    snapshot failed."""
    from facegate.components.lifecycle import gallery_snapshots  # heavy: FAISS and numpy, ~0.7 s

    try:
        if gallery_snapshots.dvc_target() is None:
            typer.echo(f"{gallery_dir()} is outside the repository: DVC cannot version it (no snapshot)")
            return
        version = gallery_snapshots.snapshot_if_dirty() if pending else gallery_snapshots.snapshot()
        if version is None and not pending:
            typer.echo("no gallery/ yet: nothing to snapshot")
        elif version is not None:
            typer.echo(f"gallery.dvc: {version}")
    finally:
        _log_pending_records()


def _log_pending_records() -> None:
    if run_outbox.pending():
        quiet_for_one_item()
        for run_id in flush_pending_runs():  # CLI writes' MLflow runs, put in the outbox before their answer
            typer.echo(f"mlflow run: {run_id}")


@gallery_app.command("log-records")
@friendly
def gallery_log_records() -> None:
    """Log the gallery changes' pending MLflow runs now (what a CLI write's background process runs; any
    command starts one for runs left over, e.g. by a process that was killed)."""
    _log_pending_records()


@gallery_app.command("show")
@friendly
def gallery_show() -> None:
    """The current gallery's manifest and employees."""
    from facegate.components.service.deployment import gallery_store  # heavy: torch and the models, ~2 s

    g = gallery_store().load()
    print_json({"manifest": g.manifest.to_dict(), "employees": g.employees().to_dict("records")})
