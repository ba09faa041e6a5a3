"""Bounded model inference for a server: as many forward passes at once as there are cores, one thread each.

A server answers each request on a thread of its pool (FastAPI: 40). Left alone, 20 concurrent requests
each run torch (and OpenCV's DNN) with one thread per core: 40 busy threads on 2 cores, spinning on each
other's barriers. Measured here on a shared 2-core machine: identify p50 2.8 s with torch on 2 threads
against 0.31 s on 1. ``InferenceSlots`` lets ``slots`` requests run the model at a time (the rest queue
in arrival order) and ``configure_threads`` sets the libraries' thread counts once, at start: the cores
stay busy, nothing oversubscribes them, and a queued request costs waiting, not CPU.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


def cpu_cores() -> int:
    """The cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def passive_waits() -> bool:
    """Idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``, unless set already).

    Read once, when torch loads its OpenMP runtime, so call it before torch is imported; returns False
    when that is too late. Measured on the shared 2-core machine at load 13: one face through the
    fused model on 2 threads took 1,513 ms with spinning threads and 149 ms with sleeping ones (1 thread:
    ~210 ms either way); a spinning thread burns the core another process, or another request, needs.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return "torch" not in sys.modules


def configure_threads(threads: int) -> None:
    """torch's intra-op threads and OpenCV's worker threads, process-wide, set once before serving."""
    import cv2  # heavy: OpenCV's native module; only the paths that use it load it
    import torch  # heavy: torch loads ~1 s of native code; only the paths that run a model need it

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


class InferenceSlots:
    """A FIFO semaphore: at most ``slots`` holders at once; waiters are served in arrival order (a plain
    ``threading.Semaphore`` lets a newcomer overtake, which stretches the tail under load).
    ``slots=0`` means no limit (a CLI command or a notebook: one request, all cores). ``first=True``: a
    holder that finishes work already under way (a batch of requests past their detection) is served
    before the newcomers, in arrival order among such holders."""

    def __init__(self, slots: int) -> None:
        if slots < 0:
            raise ValueError(f"slots must be >= 0, got {slots}")
        self.slots = slots
        self._lock = threading.Lock()
        self._busy = 0
        self._queue: deque[threading.Event] = deque()
        self._first: deque[threading.Event] = deque()  # waiters with ``first=True``, served before ``_queue``
        self.peak_waiting = 0  # the longest queue seen (what the server reports for tuning)

    @contextmanager
    def __call__(self, first: bool = False) -> Iterator[None]:
        if self.slots == 0:
            yield
            return
        self._acquire(first)
        try:
            yield
        finally:
            self._release()

    def _acquire(self, first: bool = False) -> None:
        with self._lock:
            if self._busy < self.slots and not self._queue and not self._first:
                self._busy += 1
                return
            turn = threading.Event()
            (self._first if first else self._queue).append(turn)
            self.peak_waiting = max(self.peak_waiting, self.waiting)
        turn.wait()  # the releasing holder hands its slot over (``_busy`` stays counted)

    def _release(self) -> None:
        with self._lock:
            if self._first or self._queue:
                (self._first or self._queue).popleft().set()
            else:
                self._busy -= 1

    @property
    def waiting(self) -> int:
        return len(self._queue) + len(self._first)
