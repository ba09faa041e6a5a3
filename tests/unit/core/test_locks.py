"""The generic file lock: exclusive across processes, re-entrant in a thread, released when its holder dies."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from facegate.components.core.errors import FacegateError, GalleryLocked, Locked
from facegate.components.core.locks import LOCK_FILE, file_lock
from facegate.components.core.paths import repo_root

HOLDER = (
    "import sys,time; from facegate.components.core.locks import file_lock\n"
    "with file_lock(sys.argv[1]):\n print('held', flush=True); time.sleep(30)"
)


@pytest.fixture
def held(tmp_path: Path):
    """A child process holding the lock on ``tmp_path / 'd'``; killed (SIGKILL) afterwards."""
    d = tmp_path / "d"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(d)], cwd=repo_root(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield d, holder
    finally:
        holder.kill()
        holder.wait()


def test_busy_lock_raises_locked_after_the_timeout(held) -> None:
    d, _ = held
    with pytest.raises(Locked) as exc:
        with file_lock(d, timeout=0.2):
            pass
    assert isinstance(exc.value, FacegateError) and exc.value.code == "locked" and exc.value.http_status == 503
    assert str(d) in str(exc.value)
    with pytest.raises(Locked):
        with file_lock(d, timeout=0):  # one try
            pass


def test_the_caller_chooses_the_error(held) -> None:
    d, _ = held
    with pytest.raises(GalleryLocked, match="busy"):
        with file_lock(d, timeout=0, error=lambda p: GalleryLocked(f"{p}: busy")):
            pass


def test_killed_holder_releases_the_lock(held) -> None:
    d, holder = held
    holder.kill()
    holder.wait()
    with file_lock(d, timeout=2):
        pass


def test_creates_the_directory_and_is_reentrant_in_a_thread(tmp_path: Path) -> None:
    d = tmp_path / "a" / "b"
    with file_lock(d, timeout=0):
        assert (d / LOCK_FILE).is_file()
        with file_lock(d, timeout=0):
            pass
        with file_lock(d / ".." / "b", timeout=0):  # the same directory, however it is spelled
            pass
        errors: list[BaseException] = []

        def other_thread() -> None:
            try:
                with file_lock(d, timeout=0.1):
                    pass
            except BaseException as exc:  # noqa: BLE001 - reported to the test thread
                errors.append(exc)

        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        assert len(errors) == 1 and isinstance(errors[0], Locked)  # re-entrancy is per thread
    with file_lock(d, timeout=0):  # released on exit
        pass
