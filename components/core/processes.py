"""Child processes that stop with the command that started them.

`facegate ui` and `facegate schedule` start servers (MLflow with its workers, a Prefect server, flow
runs). Each child starts in its own process group; SIGTERM and SIGINT become an exception in the main
thread (so ``finally`` blocks run), and on the way out every descendant is asked to stop (SIGTERM to
its group and to each process), given ``grace_s`` seconds, then killed. Descendants are found through
psutil, so a grandchild that made its own session is not missed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence

import psutil


class Terminated(SystemExit):
    """Raised in the main thread by SIGTERM / SIGINT while ``stop_children_on_signals`` is active."""

    code: int  # always 128 + signum, never SystemExit's str or None

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def _alive(procs: Sequence[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


def stop_tree(procs: Sequence[psutil.Process], groups: Sequence[int] = (), grace_s: float = 10.0) -> None:
    """SIGTERM to ``groups`` and ``procs``, wait up to ``grace_s``, then SIGKILL whatever is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        for p in _alive(procs):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                p.send_signal(sig)
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline:
            for p in procs:  # reap our own children so they do not linger as zombies
                with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired, ChildProcessError):
                    p.wait(timeout=0)
            if not _alive(procs):
                return
            time.sleep(0.1)


def descendants(pid: int | None = None) -> list[psutil.Process]:
    try:
        return psutil.Process(pid or os.getpid()).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def stop_descendants(groups: Sequence[int] = (), grace_s: float = 10.0) -> None:
    """Stop every process this one started (and their children), and the given process groups."""
    stop_tree(descendants(), groups, grace_s)


@contextlib.contextmanager
def stop_children_on_signals(groups: Sequence[int] = (), grace_s: float = 10.0) -> Iterator[list[int]]:
    """Within the block, SIGTERM/SIGINT raise ``Terminated``; on leaving it, by any path, every
    descendant of this process and every group in the yielded list (add to it as children start)
    is stopped."""
    group_list = list(groups)

    def handler(signum, _frame):
        raise Terminated(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield group_list
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the clean-up short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            stop_descendants(group_list, grace_s)
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def run_until_signalled(cmd: Sequence[str], env: dict[str, str] | None = None, grace_s: float = 10.0) -> int:
    """Run ``cmd`` in its own process group until it exits or this process gets SIGTERM/SIGINT; either
    way nothing it started is left running. Returns its exit code (128+signal when stopped)."""
    with stop_children_on_signals(grace_s=grace_s) as groups:
        proc = subprocess.Popen(list(cmd), env=env, start_new_session=True)
        groups.append(proc.pid)
        try:
            return proc.wait()
        except Terminated as exc:
            return exc.code
