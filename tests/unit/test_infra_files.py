"""infra/ configuration that CI cannot start (no Docker engine, no cluster) still has to be right:
every compose service has a healthcheck, secrets come only from the environment (infra/.env), the
template names every variable the compose file requires, the Kubernetes manifests parse and probe
/health, and the worker runs the same work pool and deployment files that `make server-check` uses."""

from __future__ import annotations

import re

import yaml

from facegate.components.core.paths import repo_root

INFRA = repo_root() / "infra"
SECRETS = ("POSTGRES_PASSWORD", "AWS_SECRET_ACCESS_KEY", "FACEGATE_API_KEY", "PGPASSWORD")


def compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def test_every_compose_service_has_a_healthcheck_and_the_stack_is_complete():
    services = compose()["services"]
    assert {"postgres", "s3", "mlflow", "prefect-server", "prefect-worker", "api"} <= set(services)
    assert all("healthcheck" in s for s in services.values())
    assert {"pgdata", "s3data", "gallery"} <= set(compose()["volumes"])


def test_secrets_only_from_the_environment():
    text = (INFRA / "docker-compose.yml").read_text()
    for key in SECRETS:
        for line in [x for x in text.splitlines() if re.match(rf"\s*{key}:", x)]:
            assert "${" in line, f"{key} is not taken from the environment: {line.strip()}"
    assert not re.search(r"postgresql(\+asyncpg)?://[^@\s]*:[^@\s]*@", text), "a password in a database URL"
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    example = {
        line.split("=", 1)[0]
        for line in (INFRA / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert required <= example, f"missing from infra/.env.example: {required - example}"


def test_kubernetes_manifests_parse_probe_and_keep_secrets_in_a_secret():
    docs = {}
    for path in sorted((INFRA / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
    api = docs[("Deployment", "facegate-api")]["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/health" == api["livenessProbe"]["httpGet"]["path"]
    assert ("HorizontalPodAutoscaler", "facegate-api") in docs and ("Deployment", "facegate-worker") in docs
    config = docs[("ConfigMap", "facegate-env")]["data"]
    assert not set(config) & set(SECRETS) and "AWS_ACCESS_KEY_ID" not in config
    secret_refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in api["env"] if "valueFrom" in e]
    assert secret_refs and set(secret_refs) == {"facegate-secrets"}


def test_the_worker_deploys_what_server_check_deploys():
    worker = " ".join(compose()["services"]["prefect-worker"]["command"])
    assert "infra/work-pool-process.json" in worker and "infra/prefect.yaml" in worker
    assert "--pool facegate-process" in worker


def test_the_worker_runs_every_deployment_and_server_check_pauses_their_crons():
    """prefect.yaml's deployments (the weekly chain, the daily drift check) all sit on the worker's pool,
    and `make server-check`, which deploys them all, pauses each one's cron so no scheduled run lands in it."""
    deployments = yaml.safe_load((INFRA / "prefect.yaml").read_text())["deployments"]
    flows = {d["entrypoint"]: d for d in deployments}
    assert set(flows) == {"flows/retrain.py:retrain_flow", "flows/drift.py:drift_flow"}
    assert {d["work_pool"]["name"] for d in deployments} == {"facegate-process"}
    assert all(d["schedules"] and d["concurrency_limit"] == 1 for d in deployments)
    check = (INFRA / "server_check.py").read_text()
    for d in deployments:
        flow = d["entrypoint"].split("/")[-1].split(".")[0]
        assert f'"{flow}/{d["name"]}"' in check, f"server_check.py does not know deployment {flow}/{d['name']}"
    assert check.count('{"paused": True}') == len(deployments)
