"""components/lifecycle/backends.py names the backing service that is down, probing what the environment
configures (closed loopback ports here, and a tiny HTTP server standing in for a tracking server whose
database is gone); with the embedded defaults it probes nothing."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from facegate.components.lifecycle import backends

SERVICE_VARS = (
    "MLFLOW_TRACKING_URI",
    "PREFECT_API_URL",
    "AWS_ENDPOINT_URL",
    "MLFLOW_S3_ENDPOINT_URL",
    "FACEGATE_S3_ENDPOINT_URL",
)


@pytest.fixture(autouse=True)
def no_services(monkeypatch):
    for var in SERVICE_VARS:
        monkeypatch.delenv(var, raising=False)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def db_down_server():
    """Answers /health 200 (MLflow and Prefect alike) and 503 with a psycopg2 error everywhere else."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            healthy = self.path.rstrip("/").endswith("/health")
            body = (
                b"OK"
                if healthy
                else json.dumps(
                    {
                        "error_code": "TEMPORARILY_UNAVAILABLE",
                        "message": "(psycopg2.OperationalError) connection refused",
                    }
                ).encode()
            )
            self.send_response(200 if healthy else 503)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_embedded_defaults_probe_nothing(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    assert backends.diagnose() is None
    assert backends.explain("boom") == "boom"


def test_an_unreachable_object_store_is_named(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    assert backends.explain("MlflowException: 500").startswith("the object store (S3) at http://127.0.0.1:")


def test_unreachable_servers_are_named_without_credentials(monkeypatch):
    port = closed_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:secret@127.0.0.1:{port}")
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{port}/api")
    found = backends.diagnose()
    assert f"the MLflow tracking server at http://127.0.0.1:{port} does not answer" in found
    assert f"the Prefect server at http://127.0.0.1:{port}/api does not answer" in found
    assert "secret" not in found


def test_a_database_behind_a_live_server_is_named(monkeypatch, db_down_server):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", db_down_server)
    monkeypatch.setenv("PREFECT_API_URL", f"{db_down_server}/api")
    found = backends.diagnose()
    assert "cannot reach its backend store (Postgres): HTTP 503" in found
    assert "the Prefect server at" in found and "cannot reach its database (Postgres): /ready answers 503" in found
