"""Looking inside a model (`facegate explain units`): the public training patches that most excite a sample
of units per layer, cut at each unit's receptive field, for one version or two side by side."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from facegate.cli.output import friendly, print_json

explain_app = typer.Typer(no_args_is_help=True, help="Look inside a model: what its units learn.")


class ModelKind(StrEnum):
    embedder = "embedder"
    detector = "detector"
    pad = "pad"


@explain_app.command("units")
@friendly
def units(
    model: Annotated[
        ModelKind,
        typer.Option(
            "--model", help="embedder (each member backbone), detector (its MobileNetV2) or pad (each MiniFASNet)"
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="folder for the grids (one PNG per layer) and units.json")],
    version: Annotated[
        str | None,
        typer.Option(
            help="registered version (default: the one in service; 'pretrained': the network training starts from)"
        ),
    ] = None,
    layers: Annotated[
        list[str] | None,
        typer.Option(
            "--layers", help="NET:LAYER or LAYER, repeatable or comma-separated (default: params explain.layers)"
        ),
    ] = None,
    images: Annotated[
        int | None,
        typer.Option("--images", min=1, help="public training images sampled, seeded (default: params explain.images)"),
    ] = None,
    compare: Annotated[
        tuple[str, str] | None, typer.Option("--compare", help="V1 V2: the same units of two versions side by side")
    ] = None,
) -> None:
    """The nine training patches (LFW's training identities, or the face-mask set's training faces for the
    detector; never enrolment photos or captures) that most excite sampled units of each layer, early to deep; the JSON
    gives each layer's receptive field in pixels, the units shown and their top activations."""
    from facegate.components.core.settings import load_settings  # heavy: pydantic and the params schema, ~0.15 s
    from facegate.components.lifecycle.unit_grids import explain_model  # heavy: torch, the models and MLflow, ~3 s

    names = [name.strip() for spec in (layers or []) for name in spec.split(",") if name.strip()]
    pair = tuple(compare) if compare and all(compare) else None
    doc = explain_model(
        load_settings(),
        model.value,
        out,
        version=version,
        layers=names or None,
        n_images=images,
        compare=pair,
        log=lambda m: typer.echo(m, err=True),
    )
    grids = sorted(str(out / sub["layers"][ly]["grid"]) for sub in doc["networks"].values() for ly in sub["layers"])
    print_json(
        {
            "model": model.value,
            "version": doc.get("versions", doc["version"]),
            "note": doc.get("note"),
            "images": doc["images"],
            "n_images": doc["n_images"],
            "receptive_fields_px": doc["receptive_fields_px"],
            "seconds": doc["total_seconds"],
            "json": str(out / ("compare.json" if pair else "units.json")),
            "grids": grids,
        }
    )
