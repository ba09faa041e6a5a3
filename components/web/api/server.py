"""`facegate serve`: the deployment's app (this repository's gallery, one bound on concurrent model
runs, concurrent requests' faces embedded in batches, DVC snapshots by a background worker) under uvicorn."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from facegate.components.core.inference import InferenceSlots, configure_threads, cpu_cores
from facegate.components.core.settings import Settings, load_settings
from facegate.components.lifecycle.gallery_snapshots import SnapshotWorker, mark_dirty
from facegate.components.service.batching import EmbeddingBatching
from facegate.components.service.facade import FaceGate
from facegate.components.service.warm_up import warm_up
from facegate.components.web.api.app import create_app


def inference_slots(settings: Settings) -> InferenceSlots:
    """The server's bound on concurrent model runs (``api.inference_slots``, 0: one per core), with torch
    and OpenCV set to ``api.inference_threads`` each: N requests on N threads never oversubscribe the cores."""
    configure_threads(settings.api.inference_threads)
    slots = settings.api.inference_slots or max(1, cpu_cores() // settings.api.inference_threads)
    return InferenceSlots(slots)


def embedding_batching(settings: Settings, slots: InferenceSlots) -> EmbeddingBatching | None:
    """Faces of concurrent requests that reach the embedding within ``api.batch_window_ms`` share one forward
    pass of at most ``api.batch_max`` faces, each batch in one of ``slots`` (0 ms: none, each request alone)."""
    api = settings.api
    return EmbeddingBatching(api.batch_window_ms, api.batch_max, slots) if api.batch_window_ms > 0 else None


def build_service_app() -> FastAPI:
    """The deployment's app: the gallery of this repository, DVC snapshots by a background worker."""
    settings = load_settings()
    slots = inference_slots(settings)
    gate = FaceGate(settings, inference=slots, batching=embedding_batching(settings, slots))
    warm_up(gate)  # before uvicorn listens: no request waits for a model to load (service/warm_up.py)
    if gate.settings.gallery.snapshot == "manual":
        return create_app(gate, after_write=mark_dirty)
    snapshots = SnapshotWorker()
    return create_app(gate, after_write=snapshots.request, on_stop=snapshots.close)


def serve(host: str, port: int) -> None:
    uvicorn.run(build_service_app(), host=host, port=port, log_level="info")
