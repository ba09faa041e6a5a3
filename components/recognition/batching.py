"""Micro-batching: rows that concurrent requests submit within a short window go through one call.

A server answers each request on a thread of its own. On CPU a forward pass of several faces costs much
less than that many passes of one (docs/decisions/request-batching.md has the figures), so faces of
requests that reach the embedding together are worth embedding together. ``MicroBatcher`` does that
without a thread of its own (leader and followers):

- the first request to arrive opens a batch and leads it: it waits up to ``window_s`` for others, then
  takes a turn of ``hold`` (the server's inference slot) and seals the batch only then, so requests that
  arrive while the cores are busy join it too; a batch with ``max_rows`` rows is sealed at once;
- the leader runs ``fn`` on the batch's rows, stacked in arrival order, and hands each request its own
  rows back (a ``Future`` per request); a request's rows never cross to another;
- when ``fn`` fails on a batch of several requests, each request's rows are run alone (in the same turn),
  so an error reaches only the request whose rows caused it, and the others still get their answer;
- ``close`` drains: the open batch runs now, without waiting out its window, and ``close`` returns when no
  batch is left; a request after that runs alone, unbatched (nothing is refused or lost).

``window_s=0`` means no batching: each request runs ``fn`` on its own rows, in its own turn of ``hold``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext

import numpy as np

RowsFn = Callable[[np.ndarray], np.ndarray]


class _Batch:
    """The requests of one forward pass: their rows and the future each waits on, in arrival order."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.futures: list[Future] = []
        self.n = 0
        self.sealed = threading.Event()  # set when the batch is full or the batcher closes: lead it now

    def add(self, rows: np.ndarray) -> Future:
        future: Future = Future()
        self.rows.append(rows)
        self.futures.append(future)
        self.n += len(rows)
        return future


class MicroBatcher:
    """Rows submitted by concurrent threads within ``window_s`` go through ``fn`` as one batch of at most
    ``max_rows`` rows (a request with more runs alone). ``fn`` maps n stacked rows to n output rows.
    ``hold`` is entered around every call of ``fn`` (a server's inference slot: ``first=True`` is passed
    when it takes one, work already under way goes first)."""

    def __init__(
        self,
        fn: RowsFn,
        *,
        window_s: float,
        max_rows: int,
        hold: Callable[..., AbstractContextManager] | None = None,
    ) -> None:
        if window_s < 0 or max_rows < 1:
            raise ValueError(f"window_s must be >= 0 and max_rows >= 1, got {window_s}, {max_rows}")
        self.fn, self.window_s, self.max_rows = fn, window_s, max_rows
        self._hold = hold
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._open: _Batch | None = None  # the batch new requests join
        self._active = 0  # batches opened and not yet answered
        self._closed = False
        self.batches = self.requests = self.rows = self.largest = 0  # what ran batched (stats)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """``fn`` of ``rows``, batched with other threads' rows: this request's output rows."""
        rows = np.asarray(rows)
        with self._lock:
            alone = self._closed or self.window_s == 0 or len(rows) == 0
            if not alone:
                batch, lead = self._join(rows)
                future = batch.futures[-1]
        if alone:
            with self._turn():
                return self.fn(rows)
        if lead:
            self._lead(batch)
        return future.result()

    def _join(self, rows: np.ndarray) -> tuple[_Batch, bool]:
        """(the batch ``rows`` joined, whether this request leads it); under the lock."""
        batch, lead = self._open, False
        if batch is not None and batch.n + len(rows) > self.max_rows:
            self._seal(batch)  # full: its leader runs it now, this request leads the next one
            batch = None
        if batch is None:
            batch, lead = _Batch(), True
            self._open = batch
            self._active += 1
        batch.add(rows)
        if batch.n >= self.max_rows:
            self._seal(batch)
        return batch, lead

    def _seal(self, batch: _Batch) -> None:
        """No one joins ``batch`` any more; its leader stops waiting (under the lock)."""
        if self._open is batch:
            self._open = None
        batch.sealed.set()

    def _turn(self) -> AbstractContextManager:
        return nullcontext() if self._hold is None else self._hold(first=True)

    def _lead(self, batch: _Batch) -> None:
        """Wait out the window (or until sealed), take a turn, seal, run, answer everyone in the batch."""
        try:
            batch.sealed.wait(self.window_s)
            with self._turn():
                with self._lock:
                    self._seal(batch)  # who came while the turn was awaited rides along
                    self.batches += 1
                    self.requests += len(batch.futures)
                    self.rows += batch.n
                    self.largest = max(self.largest, batch.n)
                self._run(batch)
        finally:
            for f in batch.futures:  # never a follower left waiting, whatever happened (an interrupt)
                if not f.done():
                    f.set_exception(RuntimeError("the batch this request was in did not run"))
            with self._lock:
                self._active -= 1
                self._idle.notify_all()

    def _run(self, batch: _Batch) -> None:
        try:
            out = self.fn(np.concatenate(batch.rows) if len(batch.rows) > 1 else batch.rows[0])
            if len(out) != batch.n:
                raise RuntimeError(f"the batched call returned {len(out)} rows for {batch.n}")
        except Exception as exc:
            if len(batch.futures) == 1:
                batch.futures[0].set_exception(exc)
                return
            for rows, future in zip(batch.rows, batch.futures):  # whose rows failed: each alone
                try:
                    future.set_result(self.fn(rows))
                except Exception as own:
                    future.set_exception(own)
            return
        start = 0
        for rows, future in zip(batch.rows, batch.futures):
            future.set_result(out[start : start + len(rows)])
            start += len(rows)

    def close(self, timeout: float | None = None) -> bool:
        """Drain: the open batch runs now; True once every batch is answered (False: ``timeout`` passed).
        Requests after this run alone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._closed = True
            if self._open is not None:
                self._seal(self._open)
            while self._active:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def stats(self) -> dict[str, int]:
        """Batches run, the requests and rows in them, the largest batch (rows)."""
        with self._lock:
            return {"batches": self.batches, "requests": self.requests, "rows": self.rows, "largest": self.largest}
