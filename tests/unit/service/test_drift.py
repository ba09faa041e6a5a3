"""Drift (service/drift.py): our PSI and KS, the report per entrance, the alarm at a mask onset and none
before it, the retraining trigger, and the /metrics gauges."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from sqlalchemy.orm import Session

from facegate.components.core.settings import load_settings
from facegate.components.service.access_log import AccessLog, Decision, now
from facegate.components.service.drift import drift_report, ks, psi, retrain_trigger, save_report
from facegate.components.web.metrics import ServiceMetrics


def test_psi_and_ks():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 5000), rng.normal(0, 1, 5000)
    assert psi(a, b) < 0.02 and ks(a, b) < 0.05
    shifted = rng.normal(1, 1, 5000)
    assert psi(a, shifted) > 0.25 and 0.3 < ks(a, shifted) < 0.45


def fill(log: AccessLog, days: int, masked_from: int | None, seed: int = 0) -> None:
    """``days`` days of an entrance: 100 faces a day, distances ~N(0.35, 0.05); from ``masked_from`` on,
    half wear masks and their distances grow."""
    rng = np.random.default_rng(seed)
    rows, end = [], now()
    for day in range(days):
        at = end - timedelta(days=days - day - 0.5)
        for _ in range(100):
            masked = masked_from is not None and day >= masked_from and rng.random() < 0.5
            d = float(rng.normal(0.55 if masked else 0.35, 0.05))
            rows.append(
                Decision(
                    at=at,
                    kind="identify",
                    outcome="recognized" if d < 0.5 else "not_recognized",
                    entrance="door-1",
                    distance=d,
                    threshold=0.5,
                    mask="with_mask" if masked else None,
                )
            )
    with Session(log.engine) as s, s.begin():
        s.add_all(rows)


def test_stable_week_no_alarm_then_mask_onset_alarms(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path))
    settings = load_settings()
    stable = AccessLog(f"sqlite:///{tmp_path / 'stable.db'}")
    fill(stable, 8, None)
    report = drift_report(stable, None, settings)
    assert not report["alarm"] and report["scopes"]["door-1"]["decisions"] == [700, 100]
    assert retrain_trigger(report, settings) is None

    onset = AccessLog(f"sqlite:///{tmp_path / 'onset.db'}")
    fill(onset, 8, masked_from=7)
    report = drift_report(onset, None, settings)
    assert report["alarm"] and report["scopes"]["all"]["rates"]["masked"]["change"] > 0.3
    assert "drift" in retrain_trigger(report, settings)

    save_report(report)
    text = ServiceMetrics().render().decode()
    assert 'facegate_drift_alarm{scope="door-1"} 1.0' in text and "facegate_drift_psi" in text


def test_enough_confirmed_captures_trigger():
    settings = load_settings()
    quiet = {"alarm": False, "scopes": {"all": {"score": 0.0}}, "confirmed_captures": 250}
    assert "250 newly confirmed" in retrain_trigger(quiet, settings)
    assert retrain_trigger(quiet, settings, confirmed_at_last_retrain=100) is None
