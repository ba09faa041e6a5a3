"""MicroBatcher on real threads and tiny generated rows: each request gets exactly its own rows back (the
same as running alone), batches stay within max_rows, an error reaches only its own request, and close
drains."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from facegate.components.core.inference import InferenceSlots
from facegate.components.recognition.batching import MicroBatcher


def embed(rows: np.ndarray) -> np.ndarray:
    """A row-wise stand-in for a forward pass: each output row depends only on its own input row, and
    carries the row's tag (column 0) through, so a crossed row is caught."""
    rows = np.asarray(rows, np.float64)
    out = np.tanh(3.0 * rows + rows.sum(axis=1, keepdims=True))
    out[:, 0] = rows[:, 0]
    return out


class Recording:
    """``embed`` that records each call's batch size and the most calls running at once."""

    def __init__(self, delay_s: float = 0.0, poison: float | None = None) -> None:
        self.sizes: list[int] = []
        self.running = self.peak = 0
        self.delay_s, self.poison = delay_s, poison
        self.lock = threading.Lock()

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        with self.lock:
            self.sizes.append(len(rows))
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            time.sleep(self.delay_s)
            if self.poison is not None and np.any(rows == self.poison):
                raise ValueError(f"bad rows: {self.poison}")
            return embed(rows)
        finally:
            with self.lock:
                self.running -= 1


def requests(n: int, seed: int = 0) -> list[np.ndarray]:
    """n requests of 1..3 rows each, 6 columns, column 0 tagging the request."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        rows = rng.normal(size=(1 + i % 3, 6))
        rows[:, 0] = i
        out.append(rows)
    return out


def concurrently(batcher: MicroBatcher, reqs: list[np.ndarray]) -> list[np.ndarray | BaseException]:
    """Every request on a thread of its own, released together; each one's result (or error)."""
    results: list = [None] * len(reqs)
    start = threading.Barrier(len(reqs))

    def one(i: int) -> None:
        start.wait(5)
        try:
            results[i] = batcher(reqs[i])
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(reqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
        assert not t.is_alive()
    return results


def test_concurrent_requests_each_get_their_own_rows_as_if_alone():
    fn = Recording()
    batcher = MicroBatcher(fn, window_s=0.2, max_rows=64)
    reqs = requests(12)
    results = concurrently(batcher, reqs)
    for rows, got in zip(reqs, results):
        assert isinstance(got, np.ndarray)
        np.testing.assert_array_equal(got, embed(rows))  # identical to the unbatched answer, never crossed
    stats = batcher.stats()
    assert stats["requests"] == 12 and stats["rows"] == sum(len(r) for r in reqs)
    assert stats["batches"] < 12 and max(fn.sizes) > 3  # several requests did share a forward pass


def test_batches_stay_within_max_rows_and_a_larger_request_runs_alone():
    fn = Recording()
    batcher = MicroBatcher(fn, window_s=0.2, max_rows=4)
    reqs = requests(10) + [np.full((7, 6), 99.0)]
    results = concurrently(batcher, reqs)
    for rows, got in zip(reqs, results):
        np.testing.assert_array_equal(got, embed(rows))
    assert 7 in fn.sizes and all(s <= 4 for s in fn.sizes if s != 7)


def test_window_zero_never_batches():
    fn = Recording()
    batcher = MicroBatcher(fn, window_s=0.0, max_rows=64)
    reqs = requests(6)
    for rows, got in zip(reqs, concurrently(batcher, reqs)):
        np.testing.assert_array_equal(got, embed(rows))
    assert sorted(fn.sizes) == sorted(len(r) for r in reqs) and batcher.stats()["batches"] == 0
    with pytest.raises(ValueError):
        MicroBatcher(fn, window_s=-1, max_rows=1)
    with pytest.raises(ValueError):
        MicroBatcher(fn, window_s=0.01, max_rows=0)


def test_an_error_reaches_only_the_request_whose_rows_caused_it():
    fn = Recording(poison=-7.0)
    batcher = MicroBatcher(fn, window_s=0.2, max_rows=64)
    reqs = requests(8)
    reqs[3] = np.full((2, 6), -7.0)
    results = concurrently(batcher, reqs)
    assert isinstance(results[3], ValueError) and "bad rows" in str(results[3])
    for i, (rows, got) in enumerate(zip(reqs, results)):
        if i != 3:
            np.testing.assert_array_equal(got, embed(rows))
    assert max(fn.sizes) > 2  # the poisoned rows were in a shared batch first, then each request alone


def test_rows_that_cannot_stack_fail_only_their_own_request():
    batcher = MicroBatcher(Recording(), window_s=0.2, max_rows=64)
    reqs = requests(5)
    reqs[1] = np.zeros((1, 4))  # 4 columns among 6-column rows: the stacked batch fails, then alone it works
    results = concurrently(batcher, reqs)
    for rows, got in zip(reqs, results):
        np.testing.assert_array_equal(got, embed(rows))


def test_batches_run_in_the_hold_and_latecomers_ride_along_while_it_is_awaited():
    slots = InferenceSlots(1)
    fn = Recording()
    batcher = MicroBatcher(fn, window_s=0.001, max_rows=64, hold=slots)
    reqs = requests(6)
    results: list = [None] * 6
    busy = slots()
    busy.__enter__()  # the one slot is taken (another request detecting): the batch waits for it

    def one(i: int) -> None:
        results[i] = batcher(reqs[i])

    threads = []
    for i in range(6):
        t = threading.Thread(target=one, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(0.02)  # each arrives well after the window of the first
    busy.__exit__(None, None, None)
    for t in threads:
        t.join(10)
    for rows, got in zip(reqs, results):
        np.testing.assert_array_equal(got, embed(rows))
    assert fn.sizes == [sum(len(r) for r in reqs)] and fn.peak == 1


def test_batches_never_run_beyond_the_slots():
    slots = InferenceSlots(2)
    fn = Recording(delay_s=0.01)
    batcher = MicroBatcher(fn, window_s=0.002, max_rows=3, hold=slots)
    reqs = requests(24)
    for rows, got in zip(reqs, concurrently(batcher, reqs)):
        np.testing.assert_array_equal(got, embed(rows))
    assert fn.peak <= 2 and slots.waiting == 0


def test_close_drains_the_open_batch_and_later_requests_run_alone():
    fn = Recording()
    batcher = MicroBatcher(fn, window_s=30.0, max_rows=64)  # a window no test waits out
    reqs = requests(3)
    results: list = [None] * 3

    def one(i: int) -> None:
        results[i] = batcher(reqs[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while batcher.stats()["batches"] == 0 and (batcher._open is None or len(batcher._open.futures) < 3):
        assert time.monotonic() < deadline
        time.sleep(0.002)
    t0 = time.monotonic()
    assert batcher.close(timeout=5)
    assert time.monotonic() - t0 < 5
    for t in threads:
        t.join(5)
        assert not t.is_alive()
    for rows, got in zip(reqs, results):
        np.testing.assert_array_equal(got, embed(rows))
    after = requests(1, seed=1)[0]
    np.testing.assert_array_equal(batcher(after), embed(after))  # no window after the drain
    assert fn.sizes[-1] == len(after) and batcher.stats()["batches"] == 1
