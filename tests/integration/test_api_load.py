"""The load benchmark, bounded: a few concurrent clients identifying and enrolling through a real
`facegate serve` on loopback for a few seconds lose no acknowledged enrolment, no access-log decision
row and no audit row (benchmarks/api_load.py; the 60 s, 20-client run is the benchmark itself)."""

from __future__ import annotations

import pytest

from facegate.benchmarks.api_load import run
from tests.conftest import requires_dataset, shared_dataset

pytestmark = [pytest.mark.integration, requires_dataset("lfw")]


def test_concurrent_clients_lose_no_enrolment_and_no_access_row(tmp_path):
    result = run(clients=4, seconds=6, enrol_share=0.3, think_ms=0, lfw=shared_dataset("lfw"), workdir=tmp_path)
    log = result["access_log"]
    assert result["n_client_errors"] == 0, result["client_errors"]
    assert result["lost"] == [] and result["acknowledged_enrolments"] >= 1
    assert log["acknowledged_identify"] >= 1 and log["lost_rows"] == [] and log["lost_audit"] == []
    assert log["rows_found"] == log["rows_expected"]  # exactly one row per answered face, none doubled
    assert log["audit_enrol_rows"] == result["acknowledged_enrolments"]
