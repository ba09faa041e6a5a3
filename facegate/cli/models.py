"""What the ML engineer does to a registered model after training: calibrate it (`calibrate`) and
choose which version serves (`facegate models list|promote|rollback`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from facegate.cli.output import friendly, print_json
from facegate.components.lifecycle import registry

models_app = typer.Typer(no_args_is_help=True, help="Registered embedding models: list, promote, roll back.")


@models_app.command("list")
@friendly
def models_list() -> None:
    """Every registered version with its aliases, gate state and held-out metrics."""
    from facegate.components.core.settings import load_settings  # heavy: pydantic and the params schema, ~0.15 s

    name = load_settings().registry.embedder_model
    print_json(
        {
            "model": name,
            "champion_history": registry.history(name),
            "versions": [v.to_dict() for v in registry.list_versions(name)],
        }
    )


@models_app.command("promote")
@friendly
def models_promote(
    version: Annotated[str, typer.Argument(help="registered version to make champion")],
    reason: Annotated[str, typer.Option(help="why (kept on the version)")] = "",
) -> None:
    """Make VERSION the champion; the gallery is re-embedded with it in the same step."""
    from facegate.flows.retrain import switch_champion_flow  # heavy: Prefect and MLflow load in seconds

    print_json(switch_champion_flow(version=version, reason=reason))


@models_app.command("rollback")
@friendly
def models_rollback(reason: Annotated[str, typer.Option(help="why (kept on the demoted version)")] = "") -> None:
    """Champion back to the previous champion; the gallery follows."""
    from facegate.flows.retrain import switch_champion_flow  # heavy: Prefect and MLflow load in seconds

    print_json(switch_champion_flow(rollback=True, reason=reason))


@friendly
def calibrate(
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="another held-out set with identities, NAME=KIND:PATH (KIND: image_folder | lfw; PATH "
            "under the datasets root, or absolute); repeatable",
        ),
    ] = None,
    backbone: Annotated[str | None, typer.Option(help="a pretrained backbone, not the model in service")] = None,
    out: Annotated[Path | None, typer.Option(help="write the file here, not where the model keeps it")] = None,
) -> None:
    """Calibrate the model once: distance sketches on LFW's held-out identities (read from the datasets
    root, no ingest) and any --set, stored with the model (a registered version: its MLflow run; the
    pretrained model: calibration/<embedder>-<fingerprint>.npz, to commit). Enrolment then never waits."""
    from facegate.components.core.settings import load_settings  # heavy: pydantic and the params schema, ~0.15 s
    from facegate.components.service.calibrations import calibrate_model  # heavy: torch and the models, ~2 s

    print_json(calibrate_model(load_settings(), backbone, sets or [], out, log=lambda m: typer.echo(m, err=True)))


@friendly
def calibrate_pad(
    model: Annotated[
        list[str] | None,
        typer.Option(help="shipped PAD model(s) to calibrate, repeatable (default: the pair and each member)"),
    ] = None,
) -> None:
    """Calibrate the shipped PAD weights once: their scores on params' pad.dataset (every subject: the
    weights never saw them), stored as calibration/pad/<model>-<fingerprint>.json, to commit; the threshold
    for pad.target_apcer comes from them."""
    from facegate.flows.pad import pad_calibrate_flow  # heavy: Prefect, MLflow and torch load in seconds

    print_json(pad_calibrate_flow(models=model))
