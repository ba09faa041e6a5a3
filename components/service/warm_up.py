"""Everything a first request would wait for, done before the server takes requests.

Why: the model in service, its OpenVINO copies and served graphs (converted into a fresh state folder
on first use: seconds), the cascade's calibration and the PAD model are all loaded lazily. In a server
that made the first requests of a deployment wait 1-2.5 s each while the rest queued behind them: the
turnstile load test's identify p99 was 1,050 ms at load 0.8 against a p50 of 41 ms (api_load,
stop 35). A server warms up before it listens; a one-shot CLI command does not (it would pay for what
it never runs).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from facegate.components.embedding.inference_graphs import blank_chips
from facegate.components.faces.types import FaceBox
from facegate.components.service.cascade import served_cascade

if TYPE_CHECKING:
    from facegate.components.service.facade import FaceGate

log = logging.getLogger(__name__)


def warm_up(gate: FaceGate) -> dict[str, float | str]:
    """Load and run once, on blank input, each part a request uses; seconds per part, or why a part did
    not warm. Never raises: a part that fails here (a registry not reachable, PAD weights missing) fails
    again on the first request that needs it, which answers that error itself; the server still starts."""
    out: dict[str, float | str] = {}

    def step(name: str, work: Callable[[], object]) -> bool:
        t = time.perf_counter()
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - warming is best effort; the request path reports errors
            out[name] = f"not warmed: {getattr(exc, 'message', None) or exc}"
            return False
        out[name] = round(time.perf_counter() - t, 3)
        return True

    frame = np.zeros((240, 320, 3), np.uint8)
    if step("recognizer", lambda: gate.recognizer.finder.detector.detect(frame)):
        recognizer = gate.recognizer
        chips = blank_chips(recognizer.model.backbone)
        step("full_embedding", lambda: recognizer.embed_aligned(chips))
        cascade = served_cascade(recognizer, gate.settings)
        if cascade is not None:
            step("cheap_pass", lambda: cascade.embed_chips(chips))
    if gate.liveness.mode != "off":
        step("pad", lambda: gate.liveness.check(frame, [FaceBox(100, 60, 220, 180)]))
    log.info("warmed up: %s", out)
    return out
