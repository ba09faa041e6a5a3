"""Liveness in the access log: nullable columns, the attack outcome, and a log made before them upgraded."""

from __future__ import annotations

import sqlite3

from facegate.components.service.access_log import AccessLog, engine_for


def test_rows_carry_liveness_and_the_attack_outcome(tmp_path) -> None:
    log = AccessLog(f"sqlite:///{tmp_path / 'access.db'}")
    attack = {"score": 0.01, "label": "attack", "threshold": 0.2}
    log.record_identification(
        {
            "faces": [
                {
                    "employee_id": None,
                    "recognized": False,
                    "distance": 0.3,
                    "tau": 0.5,
                    "decision": "attack",
                    "liveness": attack,
                },
                {"employee_id": "E1", "recognized": True, "distance": 0.2, "tau": 0.5, "liveness": None},
            ],
            "tau": 0.5,
        },
        entrance="door",
        model="m",
        gallery_version="v",
        actor="t",
    )
    log.record_verification(
        {
            "employee_id": "E2",
            "accepted": True,
            "distance": 0.2,
            "tau": 0.4,
            "decision": "accepted",
            "liveness": {"score": 0.9, "label": "live", "threshold": 0.2},
        },
        entrance="door",
        model="m",
        gallery_version="v",
        actor="t",
    )
    rows = {r["id"]: r for r in log.decisions()}
    assert rows[1]["outcome"] == "attack" and rows[1]["liveness"] == "attack" and rows[1]["liveness_score"] == 0.01
    assert rows[1]["liveness_threshold"] == 0.2
    assert rows[2]["outcome"] == "recognized" and rows[2]["liveness"] is None
    assert rows[3]["outcome"] == "accepted" and rows[3]["liveness"] == "live"


def test_a_log_from_before_liveness_gets_the_columns(tmp_path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the decisions table as first released, with one row
        conn.execute(
            "CREATE TABLE decisions (id INTEGER PRIMARY KEY, at DATETIME, kind VARCHAR(16), "
            "outcome VARCHAR(16), entrance VARCHAR(64), employee_id VARCHAR(64), distance FLOAT, "
            "threshold FLOAT, model VARCHAR(200), gallery_version VARCHAR(64), mask VARCHAR(32), "
            "actor VARCHAR(64))"
        )
        conn.execute("INSERT INTO decisions (at, kind, outcome) VALUES ('2099-01-01 00:00:00', 'verify', 'accepted')")
    engine_for.cache_clear()
    log = AccessLog(f"sqlite:///{path}")
    old = log.decisions()[0]
    assert old["outcome"] == "accepted" and old["liveness"] is None
    log.record_verification(
        {
            "employee_id": "E2",
            "accepted": False,
            "distance": 0.6,
            "tau": 0.4,
            "liveness": {"score": 0.9, "label": "live", "threshold": 0.2},
        },
        entrance=None,
        model="m",
        gallery_version="v",
        actor="t",
    )
    assert log.decisions()[0]["liveness_score"] == 0.9 and log.decisions()[0]["outcome"] == "rejected"
