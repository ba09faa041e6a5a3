"""Drift of what the entrance sees: the last window of decisions and captures against a reference window.

Per scope (every entrance, and ``all``): the distance distribution (PSI and the two-sample KS
statistic), the not-recognised, no-face, attack and mask shares (absolute change), and, from captures,
face size and sharpness (PSI, KS). A new camera, a new lighting or the first masked week moves these
before anybody complains. PSI and KS are our own (below; docs/decisions/drift.md says why not Evidently).

The distance signal must not move when the loop itself changes the gallery: template update adds an
employee's captured faces, so every later face sits closer to its nearest vector although the door sees
the same faces (in the flywheel that alone raised the alarm on days 2-4). With captures, the distance is
therefore each captured face's distance to the nearest *enrolment-photo* vector of the current gallery
(:class:`EnrolmentReference`), both windows measured against the same vectors; without captures there
are no templates either, and the decisions' nearest distance is used. A falling not-recognised share is
the loop working (templates), not drift: only its rise counts toward the score.

The report holds aggregates only (no image, no embedding, no employee id): it may go to MLflow and to
the state dir's ``drift.json``, which ``/metrics`` reads for its ``facegate_drift_*`` gauges.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from facegate.components.core.paths import state_dir
from facegate.components.core.settings import Settings
from facegate.components.gallery import Gallery
from facegate.components.service.access_log import AccessLog, DecisionFilter, now
from facegate.components.service.captures import MASKED, CaptureStore
from facegate.components.service.templates import enrolment_rows

PSI_BINS = 10
PSI_FLOOR = 1e-4  # an empty bin's share, so the log stays finite
MIN_SAMPLES = 20  # fewer values on either side: no PSI/KS for that signal (too noisy to alarm on)
MAX_ROWS = 100_000


def psi(reference: np.ndarray, current: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index over the reference's quantile bins: sum (c - r) ln(c / r).
    Rule of thumb: < 0.1 stable, 0.1-0.25 moving, > 0.25 shifted."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1) / len(reference)
    c = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1) / len(current)
    r, c = np.maximum(r, PSI_FLOOR), np.maximum(c, PSI_FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


def ks(reference: np.ndarray, current: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs."""
    values = np.sort(np.concatenate([reference, current]))
    fr = np.searchsorted(np.sort(reference), values, side="right") / len(reference)
    fc = np.searchsorted(np.sort(current), values, side="right") / len(current)
    return float(np.max(np.abs(fr - fc)))


@dataclass(frozen=True)
class EnrolmentReference:
    """The current gallery's enrolment-photo vectors (never a captured template) and the model that made
    them (``name@version``, as captures name it): what captured faces' distances are measured against."""

    model: str
    vectors: np.ndarray

    def distances(self, embeddings: np.ndarray) -> np.ndarray:
        """Each embedding's distance to its nearest enrolment vector."""
        if not len(embeddings) or not len(self.vectors):
            return np.zeros(0, np.float64)
        sims = np.asarray(embeddings, np.float32) @ self.vectors.T
        return np.sqrt(np.maximum(2.0 - 2.0 * sims.max(axis=1), 0.0)).astype(np.float64)


def enrolment_reference(g: Gallery | None) -> EnrolmentReference | None:
    """The reference of gallery ``g`` (None: no gallery, or no enrolment photo in it)."""
    if g is None:
        return None
    rows = enrolment_rows(g.sidecar)
    if not len(rows):
        return None
    m = g.manifest
    return EnrolmentReference(f"{m.embedder_name}@{m.embedder_version}", np.ascontiguousarray(g.vectors[rows]))


def _enrolment_distances(captures: CaptureStore, rows: list[dict], reference: EnrolmentReference) -> None:
    """Each capture row made by the reference's model gets ``enrol_distance`` (the others: None)."""
    ids = [r["id"] for r in rows if r.get("model") == reference.model]
    found = captures.embeddings(ids)
    keys = [i for i in ids if i in found]
    d = reference.distances(np.stack([found[i] for i in keys]) if keys else np.zeros((0, reference.vectors.shape[1])))
    by_id = dict(zip(keys, d.tolist()))
    for r in rows:
        r["enrol_distance"] = by_id.get(r["id"])


def _shift(ref: list[float | None], cur: list[float | None]) -> dict | None:
    a, b = np.asarray([v for v in ref if v is not None], float), np.asarray([v for v in cur if v is not None], float)
    if len(a) < MIN_SAMPLES or len(b) < MIN_SAMPLES:
        return None
    return {
        "psi": round(psi(a, b), 4),
        "ks": round(ks(a, b), 4),
        "reference_mean": round(float(a.mean()), 4),
        "current_mean": round(float(b.mean()), 4),
        "n_reference": len(a),
        "n_current": len(b),
    }


def _share(rows: list[dict], test) -> float | None:  # noqa: ANN001 - a predicate on a row
    return round(sum(1 for r in rows if test(r)) / len(rows), 4) if rows else None


def scope_report(ref_dec: list[dict], cur_dec: list[dict], ref_cap: list[dict], cur_cap: list[dict]) -> dict:
    rates = {
        "not_recognised": lambda r: r["outcome"] == "not_recognized",
        "no_face": lambda r: r["outcome"] == "no_face",
        "attack": lambda r: r["outcome"] == "attack",
        "masked": lambda r: r.get("mask") in MASKED,
    }
    out: dict = {"decisions": [len(ref_dec), len(cur_dec)], "captures": [len(ref_cap), len(cur_cap)], "rates": {}}
    for name, test in rates.items():
        a, b = _share(ref_dec, test), _share(cur_dec, test)
        out["rates"][name] = {
            "reference": a,
            "current": b,
            "change": round(b - a, 4) if a is not None and b is not None else None,
        }
    nearest = _shift([r["distance"] for r in ref_dec], [r["distance"] for r in cur_dec])
    enrol = [[r.get("enrol_distance") for r in rows] for rows in (ref_cap, cur_cap)]
    if any(v is not None for v in enrol[0] + enrol[1]):  # captures: against the enrolment photos only
        out["distance"], out["distance_source"] = _shift(*enrol), "captures_to_enrolment"
        out["nearest_distance"] = nearest  # reported, not scored: template update moves it
    else:
        out["distance"], out["distance_source"] = nearest, "decisions_nearest"
    out["face_px"] = _shift([r["face_px"] for r in ref_cap], [r["face_px"] for r in cur_cap])
    out["sharpness"] = _shift([r["sharpness"] for r in ref_cap], [r["sharpness"] for r in cur_cap])
    return out


RISE_ONLY = ("not_recognised",)  # shares whose fall is the loop improving (templates), not drift


def drift_score(scope: dict) -> float:
    """One number per scope: the largest PSI of its distributions, or a rate's change x 2.5 (a 0.1 change
    in a share counts as a PSI of 0.25), whichever is larger; the not-recognised share counts when it rises."""
    psis = [scope[k]["psi"] for k in ("distance", "face_px", "sharpness") if scope.get(k)]
    changes = [
        (max(v["change"], 0.0) if k in RISE_ONLY else abs(v["change"])) * 2.5
        for k, v in scope["rates"].items()
        if v["change"] is not None
    ]
    return round(max(psis + changes, default=0.0), 4)


def drift_report(
    log: AccessLog,
    captures: CaptureStore | None,
    settings: Settings,
    at: datetime | None = None,
    reference: EnrolmentReference | None = None,
) -> dict:
    """The last ``retrain.drift_window_days`` against the ``retrain.drift_reference_days`` before them;
    with ``reference`` (:func:`enrolment_reference` of the gallery in service) and captures, the distance
    signal is the captured faces' distance to the enrolment photos."""
    r = settings.retrain
    end = at or now()
    start = end - timedelta(days=r.drift_window_days)
    ref_start = start - timedelta(days=r.drift_reference_days)

    def decisions(since: datetime, until: datetime) -> list[dict]:
        return log.decisions(DecisionFilter(kind="identify", since=since, until=until, limit=MAX_ROWS))

    ref_dec, cur_dec = decisions(ref_start, start), decisions(start, end)
    ref_cap, cur_cap = (captures.rows(ref_start, start), captures.rows(start, end)) if captures else ([], [])
    if captures is not None and reference is not None:
        _enrolment_distances(captures, ref_cap + cur_cap, reference)
    entrances = sorted({x["entrance"] for x in ref_dec + cur_dec if x["entrance"]})
    scopes = {"all": scope_report(ref_dec, cur_dec, ref_cap, cur_cap)}
    for e in entrances:
        scopes[e] = scope_report(
            *[[x for x in rows if x["entrance"] == e] for rows in (ref_dec, cur_dec, ref_cap, cur_cap)]
        )
    for s in scopes.values():
        s["score"] = drift_score(s)
        s["alarm"] = s["score"] >= r.trigger_drift
    confirmed = captures.count(label="employee") if captures else 0
    return {
        "at": end.isoformat(timespec="seconds"),
        "window": [start.isoformat(timespec="seconds"), end.isoformat(timespec="seconds")],
        "reference": [ref_start.isoformat(timespec="seconds"), start.isoformat(timespec="seconds")],
        "scopes": scopes,
        "alarm": any(s["alarm"] for s in scopes.values()),
        "score": max(s["score"] for s in scopes.values()),
        "confirmed_captures": confirmed,
    }


def retrain_trigger(report: dict, settings: Settings, confirmed_at_last_retrain: int = 0) -> str | None:
    """Why retraining should start now (None: no reason): drift over ``retrain.trigger_drift``, or at least
    ``retrain.trigger_confirmed`` captures confirmed since the last retraining."""
    r = settings.retrain
    if report["alarm"]:
        worst = max(report["scopes"].items(), key=lambda kv: kv[1]["score"])
        return f"drift {worst[1]['score']:.3f} >= {r.trigger_drift} at {worst[0]}"
    new = report["confirmed_captures"] - confirmed_at_last_retrain
    if new >= r.trigger_confirmed:
        return f"{new} newly confirmed captures >= {r.trigger_confirmed}"
    return None


def report_file() -> Path:
    return state_dir() / "drift.json"


def save_report(report: dict, path: Path | None = None) -> Path:
    path = path or report_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def load_report(path: Path | None = None) -> dict | None:
    path = path or report_file()
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
