"""Prometheus metrics of the service (prometheus_client), all named ``facegate_*``.

One registry per app (not the process-global one), so two apps in one process (tests) never share or
collide. Requests are counted by route template (``/employees/{employee_id}``, never the raw path:
the series stay few), decisions by kind and outcome; the gallery's size is read when scraped.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from facegate.components.service.drift import load_report

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServiceMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(
        self,
        gallery_size: Callable[[], tuple[int, int]] | None = None,
        batches: Callable[[], dict[str, dict[str, int]]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "facegate_requests", "HTTP requests answered", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "facegate_request_duration_seconds",
            "time to answer a request, by route",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "facegate_decisions", "identify faces and verify answers, by outcome", ["kind", "outcome"], registry=r
        )
        self.attacks = Counter(
            "facegate_presentation_attacks",
            "faces judged a presentation attack (printed "
            "photo, screen), by kind and pad.mode (enforce: refused, flag: only flagged)",
            ["kind", "mode"],
            registry=r,
        )
        self.decision_paths = Counter(
            "facegate_decision_paths",
            "identify faces and verify answers, by the cascade pass that decided them (cheap | full)",
            ["kind", "path"],
            registry=r,
        )
        self.gallery_changes = Counter("facegate_gallery_changes", "enrolments and removals", ["action"], registry=r)
        self.logins = Counter("facegate_logins", "console logins", ["result"], registry=r)
        self.employees = Gauge("facegate_gallery_employees", "employees in the gallery in service", registry=r)
        self.vectors = Gauge("facegate_gallery_vectors", "vectors in the gallery in service", registry=r)
        self._gallery_size = gallery_size
        # the embedding batches (service/batching.py), read when scraped: faces / batches is the mean batch
        self.batch_counts = Gauge(
            "facegate_embedding_batches",
            "batched forward passes run so far, and the requests and faces in them, by cascade pass (cheap | full)",
            ["pass", "count"],
            registry=r,
        )
        self._batches = batches
        # the drift flow's last report (flows/drift.py writes the state dir's drift.json), read when scraped
        self.drift_score = Gauge(
            "facegate_drift_score",
            "drift score of the last drift check (largest PSI, or a share's change x 2.5), by entrance (all: overall)",
            ["scope"],
            registry=r,
        )
        self.drift_alarm = Gauge(
            "facegate_drift_alarm", "1 when the last drift check crossed retrain.trigger_drift", ["scope"], registry=r
        )
        self.drift_psi = Gauge(
            "facegate_drift_psi",
            "PSI of a signal (distance, face_px, sharpness), last window against the reference",
            ["scope", "signal"],
            registry=r,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)

    def decision(self, kind: str, outcome: str, n: int = 1) -> None:
        self.decisions.labels(kind, outcome).inc(n)

    def attack(self, kind: str, mode: str, n: int = 1) -> None:
        self.attacks.labels(kind, mode).inc(n)

    def decision_path(self, kind: str, path: str, n: int = 1) -> None:
        self.decision_paths.labels(kind, path).inc(n)

    def render(self) -> bytes:
        if self._gallery_size is not None:
            employees, vectors = self._gallery_size()
            self.employees.set(employees)
            self.vectors.set(vectors)
        for kind, counts in (self._batches() if self._batches is not None else {}).items():
            for count, value in counts.items():
                self.batch_counts.labels(kind, count).set(value)
        self._set_drift(load_report())
        return generate_latest(self.registry)

    def _set_drift(self, report: dict | None) -> None:
        for scope, s in ((report or {}).get("scopes") or {}).items():
            self.drift_score.labels(scope).set(s["score"])
            self.drift_alarm.labels(scope).set(float(s["alarm"]))
            for signal in ("distance", "face_px", "sharpness"):
                if s.get(signal):
                    self.drift_psi.labels(scope, signal).set(s[signal]["psi"])


class MetricsMiddleware:
    """ASGI: every HTTP request counted and timed by its route template (unmatched paths: ``other``)."""

    def __init__(self, app, *, metrics: ServiceMetrics) -> None:  # noqa: ANN001 - an ASGI app
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - ASGI
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        status = {"code": 500}

        async def counted_send(message) -> None:  # noqa: ANN001
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, counted_send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or (
                "static" if scope.get("path", "").startswith("/console/static/") else "other"
            )
            self.metrics.observe(path, scope.get("method", "GET"), status["code"], time.perf_counter() - t0)
