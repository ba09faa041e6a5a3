"""A cron schedule fires a real retraining run: a real `prefect server` on loopback started by the
test, `facegate schedule` serving the deployments (the chain's and the drift check's) against it, both
stopped by their PIDs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import mlflow
import pytest

from facegate.components.core.paths import repo_root, use_mlflow_store
from facegate.components.core.settings import load_settings
from tests.integration.test_retrain_flow import set_params
from tests.integration.test_train_flow import lfw_slice

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # ~110 s: a real Prefect server waits for the minute


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(60):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    os.killpg(pid, signal.SIGKILL)


def test_cron_schedule_fires_a_real_retraining_run(sandbox, tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from facegate.flows.schedule import server_healthy, start_server

    lfw_slice(sandbox)
    # the schedule is what is tested: one backbone (dlib's) keeps the fired chain short
    set_params(sandbox, augment={"copies": 1}, embedding={"backbone": "dlib_resnet"})
    monkeypatch.setenv("PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS", "5")  # schedule runs promptly
    server = start_server(free_port(), tmp_path / "prefect-server")
    runner = None
    try:
        assert server.how == "started" and server_healthy(server.api_url)
        env = {
            **os.environ,
            "PREFECT_API_URL": server.api_url,
            "PREFECT_RUNNER_POLL_FREQUENCY": "5",
            "PREFECT_HOME": str(tmp_path / "runner-home"),
        }
        log = open(tmp_path / "schedule.log", "wb")
        runner = subprocess.Popen(
            [sys.executable, "-m", "facegate.cli.main", "schedule", "--cron", "* * * * *"],
            cwd=repo_root(),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 420
        finished = None
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            while time.monotonic() < deadline and finished is None:
                assert runner.poll() is None, (tmp_path / "schedule.log").read_text()[-3000:]
                time.sleep(5)
                with get_client(sync_client=True) as client:
                    runs = [r for r in client.read_flow_runs() if r.deployment_id is not None]
                    finished = next((r for r in runs if r.state and r.state.is_final()), None)
            assert finished is not None, (tmp_path / "schedule.log").read_text()[-3000:]
            with get_client(sync_client=True) as client:
                dep = client.read_deployment(finished.deployment_id)
                served = {d.name: [s.schedule.cron for s in d.schedules] for d in client.read_deployments()}
        output = (tmp_path / "schedule.log").read_text()
        assert f"connected to the Prefect server at {server.api_url}" in output
        assert finished.state.is_completed(), output[-3000:]
        assert dep.name == "facegate-retrain" and finished.auto_scheduled
        assert [s.schedule.cron for s in dep.schedules] == ["* * * * *"]
        # the drift check is served from the same process, on params' daily cron
        assert served == {"facegate-retrain": ["* * * * *"], "facegate-drift": [load_settings().retrain.drift_cron]}
        use_mlflow_store()
        exp = mlflow.get_experiment_by_name("facegate-retrain")
        (run,) = mlflow.search_runs(
            [exp.experiment_id], filter_string=f"tags.prefect_flow_run_id = '{finished.id}'", output_format="list"
        )
        assert run.info.status == "FINISHED" and run.data.tags["prefect_deployment"] == "facegate-retrain"
        assert "val_accuracy" in run.data.metrics
    finally:
        if runner is not None:
            stop(runner.pid)
        stop(server.pid)
    assert not server_healthy(server.api_url)
