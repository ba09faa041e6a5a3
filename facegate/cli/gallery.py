"""What the operator does to the gallery as a whole: `facegate gallery build|snapshot|show` (re-embed
everyone, version gallery/ with DVC, look at what is enrolled)."""

from __future__ import annotations

from typing import Annotated

import typer

from facegate.cli.output import friendly, print_json
from facegate.cli.recognition import quiet_for_one_item
from facegate.components.core.paths import gallery_dir, state_dir

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
    """Version gallery/ with DVC now (`dvc add gallery` + push): gallery.dvc matches gallery/ after it."""
    from facegate.components.lifecycle import gallery_snapshots  # heavy: FAISS and numpy, ~0.7 s

    if gallery_snapshots.dvc_target() is None:
        typer.echo(f"{gallery_dir()} is outside the repository: DVC cannot version it (no snapshot)")
        return
    version = gallery_snapshots.snapshot_if_dirty() if pending else gallery_snapshots.snapshot()
    if version is None and not pending:
        typer.echo("no gallery/ yet: nothing to snapshot")
    elif version is not None:
        typer.echo(f"gallery.dvc: {version}")
    pending_records = state_dir() / "pending-records"  # gallery_changes.pending_records_dir, without its imports
    if pending_records.is_dir() and any(pending_records.iterdir()):
        from facegate.components.service.gallery_changes import flush_records  # heavy: torch and MLflow

        quiet_for_one_item()
        for run_id in flush_records():  # CLI enrolments' MLflow runs, written after their answer
            typer.echo(f"mlflow run: {run_id}")


@gallery_app.command("show")
@friendly
def gallery_show() -> None:
    """The current gallery's manifest and employees."""
    from facegate.components.service.deployment import gallery_store  # heavy: torch and the models, ~2 s

    g = gallery_store().load()
    print_json({"manifest": g.manifest.to_dict(), "employees": g.employees().to_dict("records")})
