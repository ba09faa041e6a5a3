"""infra/ deployment files agree with params.yaml, `facegate schedule` serves what they declare, and the
server check is real HTTP."""

from __future__ import annotations

import contextlib
import json

import yaml

from facegate.components.core.paths import repo_root
from facegate.components.core.settings import load_settings


def test_prefect_yaml_matches_params():
    """The worker's two deployments: the chain weekly, the drift check daily, as params say."""
    r = load_settings(repo_root() / "params.yaml").retrain
    deployments = yaml.safe_load((repo_root() / "infra" / "prefect.yaml").read_text())["deployments"]
    by_name = {d["name"]: d for d in deployments}
    assert list(by_name) == [r.deployment, r.drift_deployment]
    for name, entrypoint, cron in (
        (r.deployment, "flows/retrain.py:retrain_flow", r.cron),
        (r.drift_deployment, "flows/drift.py:drift_flow", r.drift_cron),
    ):
        dep = by_name[name]
        assert dep["entrypoint"] == entrypoint
        assert dep["work_pool"]["name"] == r.work_pool and dep["concurrency_limit"] == 1
        assert dep["schedules"] == [{"cron": cron, "timezone": r.timezone, "active": True}]
        assert dep["work_pool"]["job_variables"]["env"]["MLFLOW_DISABLE_TELEMETRY"] == "true"
    from flows import drift, retrain

    assert callable(retrain.retrain_flow) and callable(drift.drift_flow)
    assert r.cron != r.drift_cron


def test_schedule_serves_the_chain_and_the_drift_check_on_their_crons(monkeypatch):
    """`facegate schedule` registers both deployments with their crons in one runner (one run at a time),
    against the server it found; --cron and --drift-cron override params'. No server: serve is faked."""
    import prefect
    from prefect.settings import PREFECT_API_URL
    from typer.testing import CliRunner

    from facegate.cli import training
    from facegate.cli.main import app
    from facegate.flows import schedule

    r = load_settings(repo_root() / "params.yaml").retrain
    server = schedule.PrefectServer("http://127.0.0.1:9/api", "connected")
    served: list[dict] = []

    def fake_serve(*deployments, **kwargs):
        served.append({"deployments": deployments, "kwargs": kwargs, "api": PREFECT_API_URL.value()})

    monkeypatch.setattr(prefect, "serve", fake_serve)
    monkeypatch.setattr(schedule, "ensure_server", lambda port: server)
    monkeypatch.setattr(training, "stop_children_on_signals", lambda: contextlib.nullcontext([]))

    def crons(call: dict) -> dict:
        return {
            (d.flow_name, d.name): [(s.schedule.cron, s.schedule.timezone, s.active) for s in d.schedules]
            for d in call["deployments"]
        }

    out = CliRunner().invoke(app, ["schedule"])
    assert out.exit_code == 0, out.output
    assert f"retrain/{r.deployment} on cron '{r.cron}'" in out.output
    assert f"drift/{r.drift_deployment} on cron '{r.drift_cron}'" in out.output
    assert crons(served[0]) == {
        ("retrain", r.deployment): [(r.cron, r.timezone, True)],
        ("drift", r.drift_deployment): [(r.drift_cron, r.timezone, True)],
    }
    assert served[0]["kwargs"]["limit"] == 1 and served[0]["api"] == server.api_url
    entrypoints = sorted(d.entrypoint.split(":")[1] for d in served[0]["deployments"])
    assert entrypoints == ["drift_flow", "retrain_flow"]

    out = CliRunner().invoke(app, ["schedule", "--cron", "* * * * *", "--drift-cron", "*/5 * * * *"])
    assert out.exit_code == 0, out.output
    assert crons(served[1]) == {
        ("retrain", r.deployment): [("* * * * *", r.timezone, True)],
        ("drift", r.drift_deployment): [("*/5 * * * *", r.timezone, True)],
    }


def test_work_pool_template_is_a_process_template():
    template = json.loads((repo_root() / "infra" / "work-pool-process.json").read_text())
    assert set(template) == {"job_configuration", "variables"}
    assert template["variables"]["properties"]["env"]["default"]["MLFLOW_DISABLE_TELEMETRY"] == "true"


def test_server_health_on_a_closed_port_is_false():
    import socket

    from facegate.flows.schedule import server_healthy

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not server_healthy(f"http://127.0.0.1:{port}/api", timeout=0.5)
