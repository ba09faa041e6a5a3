"""What the system reads, checked and versioned: the pretrained weights, the ingested datasets
(`ingest`, `validate`), their DVC version (`facegate data version|push|pull`), and the deployment's own
data: the confirmed captures exported as a dataset (`facegate data export-captures`) and the employees'
training consent that decides which go in (`facegate data consent`)."""

from __future__ import annotations

from typing import Annotated

import typer

from facegate.cli.options import DatasetOpt, LimitOpt
from facegate.cli.output import friendly, print_json
from facegate.components.core.weights import verify_all
from facegate.components.lifecycle import data_version

data_app = typer.Typer(
    no_args_is_help=True, help="DVC data versions (show, push, pull), the captures dataset and training consent."
)


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


@data_app.command("export-captures")
@friendly
def export_captures() -> None:
    """Write the confirmed captures of enrolled, consenting employees into the captures dataset's source
    folder (data/<path>: images + captures.csv); `facegate ingest` then ingests them (the chain does both)."""
    from facegate.flows.data import export_captures_flow  # heavy: Prefect, GX and MLflow load in seconds

    print_json(export_captures_flow())


@data_app.command("consent")
@friendly
def consent(
    employee_id: Annotated[str, typer.Argument(help="an enrolled employee's id")],
    withdraw: Annotated[bool, typer.Option("--withdraw", help="record a withdrawal instead of a grant")] = False,
    note: Annotated[str, typer.Option(help="e.g. the reference of the signed consent form")] = "",
) -> None:
    """Record an employee's consent (or its withdrawal) to their confirmed captures training the model."""
    from facegate.components.service.capture_export import (  # heavy: torch, FAISS and SQLAlchemy load in seconds
        consent_store,
        set_training_consent,
    )
    from facegate.components.service.facade import FaceGate  # heavy: as above

    gate = FaceGate()
    row = set_training_consent(gate, employee_id, not withdraw, note=note)
    store = consent_store(gate)
    print_json({**row, "history": store.history(employee_id) if store is not None else []})
