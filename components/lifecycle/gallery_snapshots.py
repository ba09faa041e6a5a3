"""DVC snapshots of ``gallery/`` (``gallery.dvc``): asked for after every write, made later, coalesced.

A write only marks the gallery dirty (a small file in the state dir, so the request outlives a crash or
a stop); a snapshot clears the mark, then runs ``dvc add gallery`` under the gallery's writer lock and
``dvc push``. A write that lands while a snapshot runs marks the gallery again and the next snapshot
takes it, so a burst of writes costs one or two snapshots, not one each, and no request waits for DVC.

Who makes them: ``SnapshotWorker``, a thread in the API server (flushed when the server stops, so
``gallery.dvc`` matches ``gallery/`` after a clean stop); ``spawn_pending_snapshot``, a detached
``facegate gallery snapshot --pending`` process started by a CLI enrolment; ``snapshot()`` forces one
now (``facegate gallery snapshot``, the end of a batch). Snapshots of all processes are serialised by
one flock, since DVC refuses to run twice at once in a repository.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from facegate.components.core.errors import FacegateError
from facegate.components.core.paths import gallery_dir, repo_root, state_dir
from facegate.components.gallery import gallery_lock
from facegate.components.lifecycle import data_version

TARGET = "gallery"
MARKER = "gallery.dirty"
LOCK = "gallery-snapshot.lock"


def marker_path() -> Path:
    return state_dir() / MARKER


def mark_dirty() -> None:
    """Ask for a snapshot: cheap (one small write), safe to call from any request."""
    path = marker_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{time.time():.6f}\n")


def is_dirty() -> bool:
    return marker_path().is_file()


@contextlib.contextmanager
def _snapshot_lock() -> Iterator[None]:
    path = state_dir() / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the kernel drops it if the holder dies
        yield
    finally:
        os.close(fd)


def dvc_target() -> str | None:
    """The gallery folder as DVC names it (``gallery``: ``gallery.dvc``), None when it lies outside the
    repository (``FACEGATE_HOME`` or ``FACEGATE_GALLERY`` elsewhere), where DVC cannot version it."""
    folder, repo = gallery_dir(), repo_root().resolve()
    return folder.relative_to(repo).as_posix() if folder.is_relative_to(repo) else None


def _snapshot_locked(push: bool) -> str | None:
    marker_path().unlink(missing_ok=True)  # writes from now on ask for the next one
    folder, target = gallery_dir(), dvc_target()
    if not folder.is_dir() or target is None:
        return None
    try:
        with gallery_lock(folder / "index"):
            version = data_version.add_data(target=target)
        if push:
            at_low_priority(data_version.push, target=target)
    except BaseException:
        mark_dirty()
        raise
    return version


PUSH_NICENESS = 10
T = TypeVar("T")


def at_low_priority(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``fn`` on a thread of its own at nice +``PUSH_NICENESS`` (Linux: niceness is per thread, and the
    ``dvc`` processes it starts inherit it): the push copies to the remote while requests need the cores,
    and takes only what they leave. The ``dvc add`` before it holds the gallery's writer lock, so it keeps
    the caller's priority (a low one would keep enrolments waiting behind it)."""
    box: dict = {}

    def run() -> None:
        try:
            os.nice(PUSH_NICENESS)
        except OSError:
            pass
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised on the caller's thread
            box["error"] = exc

    t = threading.Thread(target=run, name="gallery-snapshot-push")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def snapshot(push: bool = True) -> str | None:
    """One snapshot now (``dvc add gallery`` + ``dvc push``), whether or not anything is pending;
    returns the new version (the md5 in gallery.dvc), None when there is no gallery folder yet.
    A failure marks the gallery dirty again and raises DataVersionError."""
    with _snapshot_lock():
        return _snapshot_locked(push)


def snapshot_if_dirty(push: bool = True) -> str | None:
    """A snapshot if one was asked for since the last; coalesces queued callers (the second finds the
    mark already taken by the first and returns None)."""
    if not is_dirty():
        return None
    with _snapshot_lock():  # wait for a running snapshot, then look again
        if not is_dirty():
            return None
        return _snapshot_locked(push)


def spawn_pending_snapshot(log: Path | None = None) -> int:
    """A detached ``facegate gallery snapshot --pending`` (its own session: it outlives the CLI
    command and a Ctrl-C of it); returns its pid. Its output goes to ``state/logs/gallery-snapshot.log``."""
    log = log or state_dir() / "logs" / "gallery-snapshot.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "facegate.cli.main", "gallery", "snapshot", "--pending"],
            cwd=repo_root(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc.pid


class SnapshotWorker:
    """Background snapshots for a long-running process (the API server).

    ``request()`` marks the gallery dirty and wakes the worker: it returns at once. The worker waits for
    the burst to settle (``debounce_s`` without a new request) but never longer than ``max_delay_s``
    after the first pending one, snapshots, and retries after ``retry_s`` on failure (the gallery is
    safely on disk either way; only its DVC pointer lags). ``dvc add`` holds the gallery's writer lock
    (seconds on 2 busy cores), so under a steady stream of enrolments this is one lock hold per
    ``max_delay_s``, not one per write. ``close()`` stops it after a final snapshot of anything pending.
    """

    def __init__(
        self, debounce_s: float = 2.0, retry_s: float = 10.0, push: bool = True, log=None, max_delay_s: float = 30.0
    ) -> None:
        self.debounce_s = debounce_s
        self.max_delay_s = max(max_delay_s, debounce_s)
        self.retry_s = retry_s
        self.push = push
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.snapshots = 0
        self.last_error: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="gallery-snapshot")
        self._thread.start()
        if is_dirty():  # a request left by a crash or a CLI enrolment
            self._wake.set()

    def __call__(self) -> None:
        self.request()

    def request(self) -> None:
        mark_dirty()
        self._wake.set()

    def _run_once(self) -> bool:
        try:
            version = snapshot_if_dirty(push=self.push)
        except FacegateError as exc:
            self.last_error = exc.message
            self.log(f"gallery snapshot failed (retried): {exc.message}")
            return False
        if version is not None:
            self.snapshots += 1
            self.last_error = None
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            if self._stop.is_set():
                return
            first = time.monotonic()
            while True:  # let the burst settle: debounce_s with no new request, at most max_delay_s in all
                self._wake.clear()
                left = self.max_delay_s - (time.monotonic() - first)
                if self._stop.wait(min(self.debounce_s, max(left, 0.0))):
                    return  # close() makes the final snapshot
                if not self._wake.is_set() or time.monotonic() - first >= self.max_delay_s:
                    break
            self._wake.clear()
            if not self._run_once():
                self._stop.wait(self.retry_s)
                self._wake.set()

    def close(self, timeout: float = 120.0) -> None:
        """Stop the worker, then make the final snapshot if anything is pending."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self._run_once()
