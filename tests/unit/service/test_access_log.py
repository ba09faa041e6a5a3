"""The access log on a real SQLite file: rows written, filtered, purged by retention, erased on request."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy.orm import Session

from facegate.components.service.access_log import AccessLog, Decision, DecisionFilter, now


def face(eid, recognized=True, distance=0.2):
    return {"employee_id": eid, "recognized": recognized, "distance": distance, "tau": 0.4, "mask": None}


def test_rows_filters_erasure_and_retention(tmp_path):
    log = AccessLog(f"sqlite:///{tmp_path / 'access.db'}", retention_days=30)
    assert (
        log.record_identification(
            {"faces": [face("amy"), face(None, False, 0.7)], "tau": 0.4},
            entrance="door-1",
            model="m@1",
            gallery_version="v000002",
            actor="gate1",
        )
        == 2
    )
    assert (
        log.record_identification(
            {"faces": [], "tau": 0.4}, entrance="door-2", model="m@1", gallery_version="v000002", actor="gate1"
        )
        == 1
    )
    log.record_verification(
        {"employee_id": "amy", "accepted": False, "distance": 0.5, "tau": 0.4},
        entrance="door-1",
        model="m@1",
        gallery_version="v000002",
        actor="gate1",
    )
    rows = log.decisions()
    assert [r["outcome"] for r in rows] == ["rejected", "no_face", "not_recognized", "recognized"]
    assert (
        rows[-1]["employee_id"] == "amy" and rows[-1]["gallery_version"] == "v000002" and rows[-1]["threshold"] == 0.4
    )
    assert {r["outcome"] for r in log.decisions(DecisionFilter(entrance="door-1"))} == {
        "recognized",
        "not_recognized",
        "rejected",
    }
    assert [r["outcome"] for r in log.decisions(DecisionFilter(employee_id="amy", kind="identify"))] == ["recognized"]
    assert log.decisions(DecisionFilter(since=now() + timedelta(minutes=1))) == []

    log.audit("ops", "enrol", "amy", photos=1)
    assert log.erase_employee("amy") == 2  # the identify face and the verify answer; the audit row stays
    assert log.count(employee_id="amy") == 0 and log.count() == 2
    assert log.audit_events("amy")[0]["detail"] == {"photos": 1}

    with Session(log.engine) as s, s.begin():  # a row from 40 days ago, over the 30-day retention
        s.add(Decision(at=now() - timedelta(days=40), kind="identify", outcome="no_face"))
    assert log.count() == 3
    assert log.purge() == 1 and log.count() == 2


def test_concurrent_writers_lose_no_row(tmp_path):
    url = f"sqlite:///{tmp_path / 'access.db'}"
    logs = [AccessLog(url), AccessLog(url)]  # two stores on one file, as the API and a CLI process

    def write(i):
        for _ in range(25):
            logs[i % 2].record_identification(
                {"faces": [face(f"e{i}")], "tau": 0.4}, entrance=None, model=None, gallery_version=None, actor=f"t{i}"
            )

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert logs[0].count() == 200 and all(logs[1].count(actor=f"t{i}") == 25 for i in range(8))
