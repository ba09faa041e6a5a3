"""Scheduled retraining and drift: the chain and the drift check served as Prefect deployments on the
crons from params (``retrain.cron`` weekly, ``retrain.drift_cron`` daily), from one process.

Cron schedules need a real Prefect server (the ephemeral one used by one-off commands schedules
nothing), so ``facegate schedule`` connects to the server in PREFECT_API_URL, or to one already
listening on 127.0.0.1:<port>, or starts one there (its PID in the state dir) and says which. Server
mode with a work pool and a worker instead of this process runner: infra/prefect.yaml.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from facegate.components.core.errors import SchedulerError
from facegate.components.core.paths import state_dir
from facegate.components.core.settings import Settings
from facegate.flows.drift import drift_flow
from facegate.flows.retrain import retrain_flow

DEFAULT_PORT = 4200


@dataclass
class PrefectServer:
    api_url: str
    how: str  # "connected" | "started"
    pid: int | None = None
    log: Path | None = None

    def describe(self) -> str:
        if self.how == "started":
            return f"started a Prefect server at {self.api_url} (pid {self.pid}, log {self.log})"
        return f"connected to the Prefect server at {self.api_url}"


def server_healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as resp:
            return resp.status == 200 and json.loads(resp.read() or b"false") is True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_server(port: int, home: Path, timeout: float = 180.0) -> PrefectServer:
    """``prefect server start`` on loopback as a child process; waits until /api/health answers."""
    home.mkdir(parents=True, exist_ok=True)
    log = home / "server.log"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_API_URL": ""}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SchedulerError(f"{log}: the Prefect server exited with code {proc.returncode}")
        if server_healthy(url):
            (home / "server.pid").write_text(str(proc.pid))
            return PrefectServer(url, "started", proc.pid, log)
        time.sleep(1.0)
    proc.terminate()
    raise SchedulerError(f"{log}: the Prefect server did not answer on {url} within {timeout:.0f} s")


def ensure_server(port: int = DEFAULT_PORT) -> PrefectServer:
    """PREFECT_API_URL's server if set (it must answer), else 127.0.0.1:<port>, started if needed."""
    url = os.environ.get("PREFECT_API_URL")
    if url:
        if not server_healthy(url):
            raise SchedulerError(f"PREFECT_API_URL={url}: no Prefect server answers there")
        return PrefectServer(url, "connected")
    local = f"http://127.0.0.1:{port}/api"
    if server_healthy(local):
        return PrefectServer(local, "connected")
    return start_server(port, state_dir() / "prefect-server")


def scheduled_deployments(settings: Settings, cron: str | None = None, drift_cron: str | None = None) -> list:
    """The two scheduled deployments, as infra/prefect.yaml declares them for a worker: the retraining
    chain on ``retrain.cron`` (weekly) and the drift check on ``retrain.drift_cron`` (daily), both in
    ``retrain.timezone``; ``cron`` / ``drift_cron`` override params' crons."""
    from prefect.schedules import Cron  # heavy: Prefect takes seconds to import; only flow runs need it

    r = settings.retrain
    return [
        retrain_flow.to_deployment(
            name=r.deployment,
            schedule=Cron(cron or r.cron, timezone=r.timezone),
            tags=["facegate", "retrain"],
            description="facegate retraining chain (ingest -> ... -> gallery), on a cron schedule",
        ),
        drift_flow.to_deployment(
            name=r.drift_deployment,
            schedule=Cron(drift_cron or r.drift_cron, timezone=r.timezone),
            tags=["facegate", "drift"],
            description="facegate drift check; a trigger (retrain.trigger_*) starts a run of the retraining",
        ),
    ]


def serve_schedules(server: PrefectServer, deployments: list) -> None:
    """Register the deployments with their cron schedules and run their flow runs here, one at a time
    (a drift trigger's retraining run waits for the drift run to end), until interrupted."""
    from prefect import serve  # heavy: Prefect takes seconds to import; only flow runs need it
    from prefect.settings import (  # heavy: Prefect takes seconds to import; only flow runs need it
        PREFECT_API_URL,
        temporary_settings,
    )

    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        serve(*deployments, limit=1)
