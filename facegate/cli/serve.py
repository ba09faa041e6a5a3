"""The long-running servers an operator starts: the REST API and console (`serve`) and the MLflow UI
(`ui`). Each runs until Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from facegate.cli.output import friendly
from facegate.components.core.inference import passive_waits
from facegate.components.core.paths import mlflow_artifact_root, mlflow_tracking_uri
from facegate.components.core.processes import run_until_signalled


@friendly
def ui(port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000) -> None:
    """Open the MLflow UI on the local tracking store (loopback only). Ctrl-C or SIGTERM stops it and
    every worker it started."""
    uri = mlflow_tracking_uri()
    typer.echo(f"MLflow UI on http://127.0.0.1:{port} ({uri}); Ctrl-C stops it")
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--default-artifact-root",
        mlflow_artifact_root(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    code = run_until_signalled(cmd, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    raise typer.Exit(0 if code in (128 + 2, 128 + 15) else code)


@friendly
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default: params api.host, loopback)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default: params api.port)")] = None,
) -> None:
    """Run the REST API (OpenAPI docs at /docs). The key: $FACEGATE_API_KEY or .facegate/api_key."""
    passive_waits()  # before torch loads: idle threads sleep, the cores go to the requests
    from facegate.components.core.settings import load_settings  # heavy: pydantic and the params schema, ~0.15 s
    from facegate.components.web.api.app import api_key  # heavy: FastAPI and torch, ~2 s
    from facegate.components.web.api.server import serve as run_server  # heavy: uvicorn, with the app

    settings = load_settings()
    api_key()  # created now, so the operator can read it before the first request
    run_server(host or settings.api.host, port or settings.api.port)
