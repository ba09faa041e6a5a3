"""What the system reads, checked and versioned: the pretrained weights, the ingested datasets
(`ingest`, `validate`) and their DVC version (`facegate data version|push|pull`)."""

from __future__ import annotations

import typer

from facegate.cli.options import DatasetOpt, LimitOpt
from facegate.cli.output import friendly, print_json
from facegate.components.core.weights import verify_all
from facegate.components.lifecycle import data_version

data_app = typer.Typer(no_args_is_help=True, help="DVC data versions: show, push, pull.")


@friendly
def weights() -> None:
    """Locate every pretrained-weight file in its package and check its sha256."""
    for name, path in verify_all().items():
        typer.echo(f"ok  {name:<28} {path}")


@friendly
def ingest(dataset: DatasetOpt = None, limit: LimitOpt = None) -> None:
    """Ingest sources into data/ (manifest + linked images), then `dvc add data` and `dvc push`."""
    from facegate.flows.data import ingest_flow  # heavy: Prefect, GX and MLflow load in seconds

    result = ingest_flow(datasets=dataset, limit=limit)
    print_json(
        {
            "data_version": result["data_version"],
            "datasets": [{k: v for k, v in s.items() if k != "quarantine"} for s in result["datasets"]],
            "quarantined": [q for s in result["datasets"] for q in s["quarantine"]],
        }
    )


@friendly
def validate(dataset: DatasetOpt = None) -> None:
    """Run the Great Expectations suites on the ingested manifests."""
    from facegate.flows.data import validate_flow  # heavy: Prefect, GX and MLflow load in seconds

    for r in validate_flow(datasets=dataset):
        typer.echo(
            f"{r['dataset']}: passed ({r['expectations']} expectations, "
            f"{len(r['quarantined'])} quarantined; Data Docs in MLflow)"
        )


@data_app.command("version")
@friendly
def data_version_cmd() -> None:
    """Print the data version recorded in data.dvc."""
    typer.echo(data_version.read_version() or "none (run `facegate ingest`)")


@data_app.command("push")
@friendly
def data_push() -> None:
    data_version.push()
    typer.echo("pushed")


@data_app.command("pull")
@friendly
def data_pull() -> None:
    """Restore data/ from the DVC remote at the version in data.dvc."""
    data_version.pull()
    typer.echo(f"restored data/ at {data_version.read_version()}")
