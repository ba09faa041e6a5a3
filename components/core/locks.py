"""A cross-process mutex on a directory: ``flock`` on ``directory/.lock``.

flock, not a pid file: the kernel drops the lock when its holder dies, so a killed process never
leaves a stale lock behind. Used by the gallery's writers and by the retraining chain.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from facegate.components.core.errors import FacegateError, Locked

LOCK_FILE = ".lock"
POLL_S = 0.05

_held = threading.local()


def _busy(directory: Path) -> FacegateError:
    return Locked(f"{directory}: another process holds the lock")


@contextlib.contextmanager
def file_lock(
    directory: Path | str, timeout: float | None = None, *, error: Callable[[Path], FacegateError] = _busy
) -> Iterator[None]:
    """Hold the exclusive lock on ``directory`` (created if missing) for the ``with`` block.

    Re-entrant within a thread, so a function that locks can be called by one already holding the
    lock (the gallery's ``save`` inside a caller's load-modify-save). ``timeout`` None waits forever;
    otherwise, after ``timeout`` seconds (0: one try), raises ``error(directory)``, by default Locked.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = str(directory.resolve())
    counts: dict[str, int] = _held.__dict__.setdefault("counts", {})
    if counts.get(key, 0) > 0:
        counts[key] += 1
        try:
            yield
        finally:
            counts[key] -= 1
        return
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, directory, timeout, error)
        counts[key] = 1
        try:
            yield
        finally:
            counts.pop(key, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, directory: Path, timeout: float | None, error: Callable[[Path], FacegateError]) -> None:
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise error(directory) from None
            time.sleep(POLL_S)
