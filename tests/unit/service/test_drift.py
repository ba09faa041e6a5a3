"""Drift (service/drift.py): our PSI and KS, the report per entrance, the alarm at a mask onset and none
before it, the retraining trigger, and the /metrics gauges."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from facegate.components.core.settings import load_settings
from facegate.components.service.access_log import AccessLog, Decision, now
from facegate.components.service.captures import CaptureStore
from facegate.components.service.drift import (
    EnrolmentReference,
    drift_report,
    enrolment_reference,
    ks,
    psi,
    retrain_trigger,
    save_report,
)
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


def test_template_update_does_not_move_the_capture_distance(tmp_path):
    """The loop's own gallery change is not drift: a week of the same faces, whose decisions' nearest
    distance falls on the last day (templates added), against the enrolment photos does not alarm; the
    decisions' distance alone would. The not-recognised share falling with it does not count either."""
    settings = load_settings()
    rng = np.random.default_rng(3)
    enrolled = rng.standard_normal((20, 16))
    enrolled /= np.linalg.norm(enrolled, axis=1, keepdims=True)
    log = AccessLog(f"sqlite:///{tmp_path / 'access.db'}")
    store = CaptureStore(log.url)
    model, end = "fake@sha256:0", now()
    decisions, captures = [], []
    for day in range(8):
        at = end - timedelta(days=8 - day - 0.5)
        for _ in range(200):
            face = enrolled[rng.integers(20)] + rng.normal(0, 0.12, 16)
            face /= np.linalg.norm(face)
            d = float(np.sqrt(max(2 - 2 * (enrolled @ face).max(), 0))) * (0.6 if day == 7 else 1.0)
            outcome = "recognized" if d < 0.5 else "not_recognized"
            decisions.append(Decision(at=at, kind="identify", outcome=outcome, entrance="door-1", distance=d))
            captures.append(capture_row(face, at, d, model))
    with Session(log.engine) as s, s.begin():
        s.add_all(decisions)
    store.record(captures)
    nearest_only = drift_report(log, store, settings)
    assert nearest_only["scopes"]["all"]["distance_source"] == "decisions_nearest" and nearest_only["alarm"]
    reference = EnrolmentReference(model, enrolled.astype(np.float32))
    report = drift_report(log, store, settings, reference=reference)
    scope = report["scopes"]["all"]
    assert scope["distance_source"] == "captures_to_enrolment" and scope["distance"]["psi"] < 0.15
    assert scope["nearest_distance"]["psi"] > settings.retrain.trigger_drift  # reported, not scored
    assert scope["rates"]["not_recognised"]["change"] < -0.1 and not report["alarm"]


def capture_row(face: np.ndarray, at, distance: float, model: str) -> dict:
    return {
        "at": at,
        "entrance": "door-1",
        "decision": "recognized",
        "distance": distance,
        "threshold": 0.5,
        "face_px": 100,
        "sharpness": 50.0,
        "model": model,
        "embedding": face.astype(np.float32),
        "chip": np.zeros((8, 8, 3), np.uint8),
    }


def test_enrolment_reference_leaves_captured_templates_out():
    side = pd.DataFrame({"employee_id": ["a", "a", "b"], "photo": ["a.jpg", "capture:7", "b.jpg"]})
    vectors = np.eye(3, dtype=np.float32)
    manifest = SimpleNamespace(embedder_name="fake", embedder_version="sha256:0")
    ref = enrolment_reference(SimpleNamespace(sidecar=side, vectors=vectors, manifest=manifest))
    assert ref.model == "fake@sha256:0" and ref.vectors.shape == (2, 3)
    np.testing.assert_allclose(ref.distances(vectors[1:2]), [np.sqrt(2)], rtol=1e-6)  # not 0: the template is out
    assert enrolment_reference(None) is None
