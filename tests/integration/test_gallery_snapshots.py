"""DVC snapshots of the gallery behind the API: requested by each write, made by a background worker,
coalesced (a burst of writes, few snapshots), never in the request's way, flushed when the server stops
so gallery.dvc matches gallery/."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from facegate.components.core.paths import repo_root
from tests.integration.test_api import KEY, PEOPLE, enrol
from tests.integration.test_cli_errors import seed_gallery

pytestmark = pytest.mark.integration


def dvc_status() -> str:
    return subprocess.run(
        [sys.executable, "-m", "dvc", "status", "gallery.dvc"],
        cwd=repo_root(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_a_burst_of_enrolments_is_one_snapshot_flushed_on_stop(sandbox):
    from facegate.components.core.settings import load_settings
    from facegate.components.gallery import Gallery
    from facegate.components.lifecycle import gallery_snapshots
    from facegate.components.lifecycle.data_version import read_version
    from facegate.components.lifecycle.model_loading import service_recognizer
    from facegate.components.service.deployment import gallery_store
    from facegate.components.service.facade import FaceGate
    from facegate.components.web.api.app import create_app

    seed_gallery()  # amy, so the service's recognizer and a gallery exist
    r = service_recognizer(load_settings())
    gate = FaceGate(
        load_settings(),
        store=gallery_store(),
        recognizer=r,
        new_gallery=lambda: Gallery.new(r.embedding_dim, r.embedder_name, r.embedder_version, tau=0.5),
    )
    worker = gallery_snapshots.SnapshotWorker(debounce_s=0.5)
    app = create_app(gate, key=KEY, after_write=worker.request, on_stop=worker.close)
    with TestClient(app) as c:
        # a snapshot in progress (its lock held) does not hold up a write
        hold = threading.Event()
        held = threading.Event()

        def hold_snapshot_lock():
            with gallery_snapshots._snapshot_lock():
                held.set()
                hold.wait(60)

        t = threading.Thread(target=hold_snapshot_lock)
        t.start()
        held.wait(10)
        t0 = time.perf_counter()
        assert enrol(c, "raj").status_code == 201
        blocked_write_s = time.perf_counter() - t0
        hold.set()
        t.join()
        assert blocked_write_s < 30  # answered while the snapshot lock was held
        with ThreadPoolExecutor(4) as pool:  # the burst
            codes = list(pool.map(lambda p: enrol(c, p).status_code, [p for p in PEOPLE if p not in ("amy", "raj")]))
        assert codes == [201] * 6
    # TestClient's exit ran the app's shutdown: the worker flushed the final snapshot
    assert not gallery_snapshots.is_dirty() and worker.last_error is None
    assert 1 <= worker.snapshots <= 4  # 7 writes, coalesced
    assert read_version(target="gallery") and "up to date" in dvc_status()
