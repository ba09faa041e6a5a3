"""infra/ deployment files agree with params.yaml, and the server check is real HTTP."""

from __future__ import annotations

import json

import yaml

from facegate.components.core.paths import repo_root
from facegate.components.core.settings import load_settings


def test_prefect_yaml_matches_params():
    settings = load_settings(repo_root() / "params.yaml")
    deployments = yaml.safe_load((repo_root() / "infra" / "prefect.yaml").read_text())["deployments"]
    (dep,) = deployments
    assert dep["name"] == settings.retrain.deployment
    assert dep["entrypoint"] == "flows/retrain.py:retrain_flow"
    assert dep["work_pool"]["name"] == settings.retrain.work_pool
    assert dep["schedules"] == [{"cron": settings.retrain.cron, "timezone": settings.retrain.timezone, "active": True}]
    from flows import retrain

    assert callable(getattr(retrain, dep["entrypoint"].split(":")[1]))


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
