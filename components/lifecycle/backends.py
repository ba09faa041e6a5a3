"""Which backing service is down: the MLflow tracking server, its database, the Prefect server, its
database, or the S3 object store, asked directly after something failed.

In server mode a failure deep inside MLflow, Prefect or DVC surfaces as a 500 from a proxy or a
botocore retry message; ``diagnose()`` turns it into one line that names the service, by probing the
endpoints this process is configured with (``MLFLOW_TRACKING_URI``, ``PREFECT_API_URL``, the S3
endpoint in ``AWS_ENDPOINT_URL`` / ``MLFLOW_S3_ENDPOINT_URL``) with short timeouts. With the embedded
defaults (SQLite, files, the ephemeral Prefect server) there is nothing to probe and it returns None
at once. Secrets are never printed: URLs lose their user-info before they appear in a message.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

PROBE_TIMEOUT_S = 3.0


def redact(url: str) -> str:
    """``url`` without user and password."""
    parts = urlsplit(url)
    if not parts.hostname:
        return url
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _get(url: str) -> tuple[int | None, str]:
    """(HTTP status or None when nothing answers, the first 2 kB of the body)."""
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as resp:
            return resp.status, resp.read(2048).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(2048).decode(errors="replace")
    except (urllib.error.URLError, OSError, ValueError):
        return None, ""


def _tcp_open(url: str) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def s3_endpoint() -> str | None:
    return (
        os.environ.get("AWS_ENDPOINT_URL")
        or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
        or os.environ.get("FACEGATE_S3_ENDPOINT_URL")
    )


def probe_object_store() -> str | None:
    endpoint = s3_endpoint()
    if not endpoint or _tcp_open(endpoint):
        return None
    return f"the object store (S3) at {redact(endpoint)} does not answer"


def probe_mlflow() -> str | None:
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")):
        return None
    base = uri.rstrip("/")
    status, _ = _get(f"{base}/health")
    if status is None:
        return f"the MLflow tracking server at {redact(base)} does not answer"
    status, body = _get(f"{base}/api/2.0/mlflow/experiments/search?max_results=1")
    if status is not None and status >= 500:
        lowered = body.lower()
        what = "Postgres" if "psycopg" in lowered or "postgres" in lowered else "database"
        return (
            f"the MLflow tracking server at {redact(base)} cannot reach its backend store ({what}): "
            f"HTTP {status} {_message(body)}"
        )
    return None


def probe_prefect() -> str | None:
    url = os.environ.get("PREFECT_API_URL", "")
    if not url.startswith(("http://", "https://")):
        return None
    base = url.rstrip("/")
    status, _ = _get(f"{base}/health")
    if status is None:
        return f"the Prefect server at {redact(base)} does not answer"
    status, body = _get(f"{base}/ready")
    if status is not None and status != 200:
        return f"the Prefect server at {redact(base)} cannot reach its database (Postgres): /ready answers {status}"
    return None


def _message(body: str) -> str:
    try:
        text = str(json.loads(body).get("message", body))
    except (ValueError, AttributeError):
        text = body
    return " ".join(text.split())[:200]


def diagnose() -> str | None:
    """One line naming every configured backing service that is down now, or None when all answer.

    The object store is probed first: when it is down, MLflow's artifact proxy fails too, but MLflow
    itself is fine."""
    found = [m for m in (probe_object_store(), probe_mlflow(), probe_prefect()) if m]
    return "; ".join(found) or None


def explain(reason: str) -> str:
    """``reason`` prefixed with the service that is down, when one is (else unchanged)."""
    try:
        down = diagnose()
    except Exception:  # a diagnosis must never hide the failure it explains
        down = None
    return f"{down} ({reason})" if down else reason
