"""The access log and accounts on a real PostgreSQL server (Debian's binaries, a throw-away cluster on
loopback, as `make server-check` runs it): rows, erasure, concurrent writers, accounts; no password in
an error message. Skipped, with the reason, where PostgreSQL is not installed."""

from __future__ import annotations

import glob
import threading

import pytest

from facegate.components.core.errors import AccessLogError
from facegate.components.service.access_log import AccessLog, DecisionFilter, engine_for
from facegate.components.web.accounts import Accounts, Principal

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        reason="PostgreSQL binaries not installed (apt-get install postgresql)",
    ),
]


@pytest.fixture(scope="module")
def pg_url():
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from infra.local_stack import PG_USER, LocalStack

    root = Path(tempfile.mkdtemp(prefix="facegate-pg-"))  # pytest's tmp is 700: the postgres account must reach it
    os.chmod(root, 0o711)
    stack = LocalStack(root / "stack")
    try:
        stack.start_postgres()
        stack.sql("postgres", "CREATE DATABASE access")
        yield f"postgresql://{PG_USER}:{stack.pg_password}@127.0.0.1:{stack.pg_port}/access", stack.pg_password
    finally:
        stack.stop_all()
        shutil.rmtree(root, ignore_errors=True)


def test_access_log_on_postgres(pg_url):
    url, password = pg_url
    log = AccessLog(url)
    face = {"employee_id": "amy", "recognized": True, "distance": 0.2, "tau": 0.4, "mask": None}

    def write(i):
        for _ in range(20):
            log.record_identification(
                {"faces": [face], "tau": 0.4},
                entrance=f"door-{i}",
                model="m@1",
                gallery_version="v000001",
                actor="gate",
            )

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.count() == 120 and len(log.decisions(DecisionFilter(entrance="door-3", limit=1000))) == 20
    log.audit("ops", "enrol", "amy", photos=1)
    assert log.erase_employee("amy") == 120 and log.count() == 0 and log.audit_events()[0]["actor"] == "ops"
    accounts = Accounts(log.engine)
    secret = accounts.add("gate-1", "turnstile")
    assert accounts.from_key(f"gate-1.{secret}".encode()) == Principal("gate-1", "turnstile")
    with pytest.raises(AccessLogError) as exc:
        engine_for(url.rsplit("/", 1)[0] + "/no_such_database")
    assert password not in exc.value.message and "no_such_database" in exc.value.message
