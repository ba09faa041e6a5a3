"""InferenceSlots: never more holders than slots, waiters served in arrival order, 0 = no limit."""

from __future__ import annotations

import threading
import time

import pytest

from facegate.components.core.inference import InferenceSlots, cpu_cores


@pytest.mark.parametrize("n", [1, 2])
def test_at_most_slots_holders_and_fifo_order(n):
    slots = InferenceSlots(n)
    inside, peak, order = [0], [0], []
    lock = threading.Lock()
    gate = threading.Event()

    def work(i: int) -> None:
        with slots():
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
                order.append(i)
            gate.wait(5)
            time.sleep(0.01)
            with lock:
                inside[0] -= 1

    threads = []
    for i in range(8):  # started one by one, so their arrival order is known
        t = threading.Thread(target=work, args=(i,))
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 5
        while len(order) < min(i + 1, n) or (i >= n and slots.waiting < i - n + 1):
            assert time.monotonic() < deadline
            time.sleep(0.001)
    assert slots.waiting == 8 - n and slots.peak_waiting == 8 - n
    gate.set()
    for t in threads:
        t.join(10)
    assert peak[0] == n
    if n == 1:  # one holder at a time: the order they got in is the order they arrived
        assert order == list(range(8))
    else:  # two released together may record in either order, but no one overtakes by more
        assert all(abs(o - i) <= 1 for i, o in enumerate(order))
    assert slots.waiting == 0


def test_zero_slots_is_no_limit():
    slots = InferenceSlots(0)
    with slots(), slots(), slots():  # nested: would deadlock with any finite bound below 3
        pass
    with pytest.raises(ValueError):
        InferenceSlots(-1)


def test_a_failing_holder_gives_its_slot_back():
    slots = InferenceSlots(1)
    with pytest.raises(RuntimeError):
        with slots():
            raise RuntimeError("model failed")
    done = threading.Event()
    threading.Thread(target=lambda: (slots().__enter__(), done.set())).start()
    assert done.wait(5)
    assert cpu_cores() >= 1


def test_first_waiters_are_served_before_the_queue_in_their_own_order():
    slots = InferenceSlots(1)
    order: list[str] = []
    lock = threading.Lock()
    holder = slots()
    holder.__enter__()

    def wait(name: str, first: bool) -> None:
        with slots(first=first):
            with lock:
                order.append(name)

    threads = []
    for name, first in (("new1", False), ("batch1", True), ("new2", False), ("batch2", True)):
        t = threading.Thread(target=wait, args=(name, first))
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 5
        while slots.waiting < len(threads):
            assert time.monotonic() < deadline
            time.sleep(0.001)
    assert slots.peak_waiting == 4
    holder.__exit__(None, None, None)
    for t in threads:
        t.join(5)
    assert order == ["batch1", "batch2", "new1", "new2"] and slots.waiting == 0
