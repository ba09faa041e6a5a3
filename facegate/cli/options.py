"""Options that several commands share, spelt once so their flags and help stay the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DatasetOpt = Annotated[
    list[str] | None, typer.Option("--dataset", "-d", help="dataset name from params.yaml (repeatable; default: all)")
]
LimitOpt = Annotated[int | None, typer.Option(help="ingest only the first N files of each source (smoke runs)")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="write the result here too")]
