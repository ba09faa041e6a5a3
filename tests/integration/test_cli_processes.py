"""`facegate ui` and `facegate schedule` stop every process they started, on SIGTERM and on SIGINT:
afterwards nothing listens on their port and none of their children is left."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from facegate.components.core.paths import repo_root

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # ~70 s: real MLflow and Prefect servers started and stopped


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def start_and_stop(
    args: list[str], port: int, sig: int, tmp_path, env=None, startup_s: float = 240, ready: str = ""
) -> str:
    log = open(tmp_path / "cmd.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "facegate.cli.main", *args],
        cwd=repo_root(),
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + startup_s
        while not listening(port) or ready not in (tmp_path / "cmd.log").read_text():
            assert proc.poll() is None, (tmp_path / "cmd.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "cmd.log").read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(1.0)  # let the server start its workers
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the command started no child process"
        proc.send_signal(sig)
        assert proc.wait(60) is not None
        deadline = time.monotonic() + 10
        while (listening(port) or alive(children)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not listening(port), f"port {port} still served after the signal"
        assert not alive(children), f"left running: {[p.pid for p in alive(children)]}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in alive(psutil.Process().children(recursive=True)):
            if p.pid != os.getpid():
                p.kill()
    return (tmp_path / "cmd.log").read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_ui_stops_the_mlflow_server_and_its_workers(sandbox, tmp_path, sig):
    port = free_port()
    start_and_stop(["ui", "--port", str(port)], port, sig, tmp_path)


def test_schedule_stops_the_prefect_server_it_started(sandbox, tmp_path):
    port = free_port()
    out = start_and_stop(
        ["schedule", "--port", str(port), "--cron", "0 3 1 1 *"],
        port,
        signal.SIGTERM,
        tmp_path,
        env={"PREFECT_API_URL": "", "PREFECT_HOME": str(tmp_path / "prefect-home")},
        ready="serving deployment",
    )
    assert f"started a Prefect server at http://127.0.0.1:{port}/api" in out
