"""The web layer only configures the embedding batches: from ``api.batch_window_ms`` / ``api.batch_max``,
drained when the app stops, counted in /metrics."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from facegate.components.core.inference import InferenceSlots
from facegate.components.core.settings import load_settings
from facegate.components.gallery.enrolment import EnrolmentStore
from facegate.components.service.batching import Embedder, EmbeddingBatching
from facegate.components.service.facade import FaceGate
from facegate.components.web.api.app import create_app
from facegate.components.web.api.server import embedding_batching
from tests.unit.service.test_batching import TinyRecognizer, faces

KEY = "test-key"


def test_the_window_comes_from_params_and_zero_is_none():
    settings = load_settings()
    slots = InferenceSlots(2)
    assert embedding_batching(settings.replace({"api": {"batch_window_ms": 0}}), slots) is None
    b = embedding_batching(settings.replace({"api": {"batch_window_ms": 4, "batch_max": 8}}), slots)
    assert b is not None and (b.window_s, b.max_faces, b.slots) == (0.004, 8, slots)


def test_the_app_counts_batches_and_drains_them_when_it_stops(tmp_path):
    settings = load_settings()
    batching = EmbeddingBatching(1.0, 8)
    gate = FaceGate(settings, store=EnrolmentStore(tmp_path / "gallery"), access_log=False, batching=batching)
    rec = TinyRecognizer(1.0)
    crops = faces(2, seed=0)
    with TestClient(create_app(gate, key=KEY, console=False)) as c:
        got = Embedder(rec, None, gate.batching).full(crops)
        np.testing.assert_array_equal(got[0].embedding, rec.embed_crops(crops)[0].embedding)
        metrics = c.get("/metrics", headers={"X-API-Key": KEY}).text
    assert 'facegate_embedding_batches{count="rows",pass="full"} 2.0' in metrics
    assert batching.full(rec)._closed  # drained at shutdown: later requests run alone
