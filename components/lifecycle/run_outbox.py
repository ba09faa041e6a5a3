"""MLflow runs logged after the command that made them returned: an outbox of small JSON files.

Importing MLflow and opening its store cost a CLI enrolment more than the enrolment itself, so a CLI
gallery change writes what its run would log as one file under ``state/pending-records/`` (written to a
temporary name, fsynced, then renamed: a reader never sees half a file) and hands it to a detached
``facegate gallery log-records`` process (``spawn_flush``), which logs it and deletes it
(``tracking.flush_pending_runs``). Nothing is lost when that process dies: a file stays until its run is
logged, and every later CLI command and top-level MLflow run looks for files left over
(``drain_leftovers``) and starts a flusher for them.

Claims: a flusher renames a file to ``<name>.claimed-<pid>`` before logging it, so two flushers never
log one twice; a claim whose process is gone is taken over (and its run looked up first, by the
``outbox_id`` tag, in case the dead flusher logged it before it could delete the file). Flushers are
serialised by one flock, held while they log.

This module imports nothing heavy: the check that runs at every CLI start is one directory listing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from facegate.components.core.paths import repo_root, state_dir

FOLDER = "pending-records"
LOCK = "pending-records.lock"
LEFTOVER_AFTER_S = 60.0  # a younger file belongs to a writer whose own flusher is still starting
FLUSH_COMMAND = ("gallery", "log-records")  # the CLI command a detached flusher runs
FLUSHER_ENV = "FACEGATE_OUTBOX_FLUSHER"  # set in a flusher: it takes every file itself, it starts no other


def outbox_dir() -> Path:
    return state_dir() / FOLDER


def put(entry: dict) -> Path:
    """Write one pending run atomically (temporary file, fsync, rename, fsync of the folder); its path.
    ``entry``: what ``tracking.log_pending_run`` logs (experiment, run_name, params, metrics, tags,
    dicts, data_version, tracking_uri); an ``id`` is added (the ``outbox_id`` tag of its run)."""
    folder = outbox_dir()
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
    tmp = folder / f".{name}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({**entry, "id": name}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    path = folder / f"{name}.json"
    os.replace(tmp, path)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a power cut
    finally:
        os.close(fd)
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _claim_pid(path: Path) -> int | None:
    _, sep, pid = path.name.rpartition(".claimed-")
    return int(pid) if sep and pid.isdigit() else None


def pending(stale_claims: bool = True) -> list[Path]:
    """Files to log, oldest first: every ``*.json`` and (``stale_claims``) the claims of dead processes."""
    folder = outbox_dir()
    if not folder.is_dir():
        return []
    files = []
    for p in folder.iterdir():
        if p.suffix == ".json" and not p.name.startswith("."):
            files.append(p)
        elif stale_claims and (pid := _claim_pid(p)) is not None and not _pid_alive(pid):
            files.append(p)
    return sorted(files, key=lambda p: p.name)


@contextlib.contextmanager
def _flush_lock(block: bool = True) -> Iterator[bool]:
    """The flushers' flock (the kernel drops it if the holder dies); yields whether it is held."""
    path = state_dir() / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def flush(log_entry: Callable[[dict, bool], str]) -> list[str]:
    """Log every pending run, oldest first, with ``log_entry(entry, retried) -> run id`` (``retried``:
    a dead flusher's claim, whose run may already exist); returns the run ids. Each file is claimed
    by renaming it and deleted once logged. A failed log puts its file back for a later flush and
    raises (the store is down: the files after it would fail too); runs logged before it stay logged.
    A file that is not JSON is set aside as ``<name>.bad``. Files written meanwhile are taken too."""
    runs: list[str] = []
    with _flush_lock():
        while files := pending():
            for path in files:
                claimed = path.with_name(f"{path.name.split('.')[0]}.claimed-{os.getpid()}")
                try:
                    os.rename(path, claimed)
                except FileNotFoundError:  # another flusher took it
                    continue
                try:
                    entry = json.loads(claimed.read_text(encoding="utf-8"))
                except (ValueError, UnicodeDecodeError):  # not ours to log, nor to delete: kept for a person
                    os.rename(claimed, claimed.with_name(f"{claimed.name.split('.')[0]}.bad"))
                    continue
                try:
                    runs.append(log_entry(entry, path.suffix != ".json"))
                except BaseException:
                    os.rename(claimed, claimed.with_name(f"{claimed.name.split('.')[0]}.json"))
                    raise
                claimed.unlink()
    return runs


def spawn_flush(log: Path | None = None) -> int:
    """A detached ``facegate gallery log-records`` (its own session: it outlives the command that
    started it and a Ctrl-C of it); returns its pid. Output to ``state/logs/pending-records.log``."""
    log = log or state_dir() / "logs" / "pending-records.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "facegate.cli.main", *FLUSH_COMMAND],
            cwd=repo_root(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, FLUSHER_ENV: "1"},
        )
    return proc.pid


def leftovers(min_age_s: float = LEFTOVER_AFTER_S) -> bool:
    """Whether a pending run waits with no flusher on it: a file older than ``min_age_s`` (a younger one
    belongs to a writer whose own flusher is still starting) or a dead flusher's claim."""
    now = time.time()
    for p in pending():
        try:
            if _claim_pid(p) is not None or now - p.stat().st_mtime >= min_age_s:
                return True
        except FileNotFoundError:  # taken meanwhile
            continue
    return False


def drain_leftovers(min_age_s: float = LEFTOVER_AFTER_S) -> int | None:
    """At a start (any CLI command, a top-level MLflow run): a flusher for left-over pending runs when
    there are some and no flusher is running (it takes every file, new ones too); its pid, else None.
    Cheap when there is nothing: one directory listing. Never raises: a start must not fail for this.
    A flusher starts none (it takes every file itself)."""
    if os.environ.get(FLUSHER_ENV):
        return None
    try:
        if not leftovers(min_age_s):
            return None
        with _flush_lock(block=False) as free:
            if not free:
                return None
        return spawn_flush()
    except OSError:
        return None
