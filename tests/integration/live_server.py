"""Shared by the API tests: a FaceGate over a fresh gallery with the test recognizer at a fixed tau,
and an ASGI app under a real uvicorn server on a free loopback port (started in a thread, stopped on exit)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from facegate.components.core.settings import load_settings
from facegate.components.gallery import Gallery
from facegate.components.gallery.enrolment import EnrolmentStore
from facegate.components.service.facade import FaceGate

START_TIMEOUT_S = 30


def make_gate(tmp_path, recognizer, settings=None, *, tau: float, **service) -> FaceGate:
    """A FaceGate whose gallery lives under ``tmp_path/gallery``; ``service`` passes on (e.g. access_log)."""
    return FaceGate(
        settings or load_settings(),
        store=EnrolmentStore(tmp_path / "gallery"),
        recognizer=recognizer,
        new_gallery=lambda: Gallery.new(
            128, recognizer.embedder_name, recognizer.embedder_version, tau=tau, target_far=1e-3
        ),
        **service,
    )


@contextlib.contextmanager
def uvicorn_server(app, **config):
    """``app`` served by uvicorn on 127.0.0.1; yields the port once the server has started."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
