"""The server's embedding batches (service/batching.py) with a tiny stand-in model: concurrent requests
with different faces each get their own embeddings, identical to the unbatched ones; a batch never mixes
two models; the drain answers everyone."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from facegate.components.core.inference import InferenceSlots
from facegate.components.faces.pipeline import FaceCrop
from facegate.components.faces.types import FaceBox
from facegate.components.recognition.recognizer import FaceEmbedding, FaceRecognizer
from facegate.components.service.batching import Embedder, EmbeddingBatching


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class TinyRecognizer(FaceRecognizer):
    """A FaceRecognizer whose 'model' is a per-chip function of the pixels (no weights, no detector)."""

    def __init__(self, scale: float) -> None:  # no super().__init__: nothing to load
        self.scale = scale
        self.batches: list[set[float]] = []  # per call: the models whose chips it saw (the scale tag)
        self.lock = threading.Lock()

    def embed_aligned(self, chips: np.ndarray) -> np.ndarray:
        with self.lock:
            self.batches.append({self.scale})
        x = chips.reshape(len(chips), -1, 3).astype(np.float64).mean(axis=1)
        return unit(np.concatenate([x * self.scale, np.sin(x), np.ones((len(x), 1))], axis=1))

    def embed_crops(self, crops):  # noqa: ANN001, ANN201 - the reference: each face alone
        return [FaceEmbedding(c.box, self.embed_aligned(c.chip[None])[0], c.chip) for c in crops]


class TinyCascade:
    """The cheap pass's stand-in: another per-chip function."""

    def __init__(self, recognizer: TinyRecognizer) -> None:
        self.recognizer = recognizer

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        return unit(chips.reshape(len(chips), -1).astype(np.float64)[:, :5] + 1.0)

    def chips(self, crops):  # noqa: ANN001, ANN201
        return np.stack([c.chip for c in crops])

    def embed(self, crops):  # noqa: ANN001, ANN201
        return self.embed_chips(self.chips(crops))


def faces(n: int, seed: int) -> list[FaceCrop]:
    rng = np.random.default_rng(seed)
    return [
        FaceCrop(FaceBox(i, seed, i + 10, seed + 10), rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)) for i in range(n)
    ]


def run_requests(work, n: int) -> list:  # noqa: ANN001 - one request's work, by number
    results: list = [None] * n
    start = threading.Barrier(n)

    def one(i: int) -> None:
        start.wait(5)
        results[i] = work(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
        assert not t.is_alive()
    return results


def test_concurrent_requests_get_their_own_faces_identical_to_unbatched():
    rec = TinyRecognizer(2.0)
    cascade = TinyCascade(rec)
    batching = EmbeddingBatching(200.0, 64, InferenceSlots(2))
    requests = [faces(1 + i % 3, seed=i) for i in range(10)]

    def served(i: int) -> tuple:
        e = Embedder(rec, cascade, batching)  # type: ignore[arg-type] - a duck-typed cascade
        return e.cheap(requests[i]), e.full(requests[i])

    results = run_requests(served, len(requests))
    alone = Embedder(rec, cascade, None)  # type: ignore[arg-type]
    for crops, (cheap, full) in zip(requests, results):
        np.testing.assert_array_equal(cheap, alone.cheap(crops))
        reference = alone.full(crops)
        assert [f.box for f in full] == [c.box for c in crops] == [f.box for f in reference]
        for got, want, crop in zip(full, reference, crops):
            np.testing.assert_array_equal(got.embedding, want.embedding)
            assert got.chip is crop.chip
    stats = batching.stats()
    assert stats["cheap"]["requests"] == stats["full"]["requests"] == 10
    assert stats["full"]["batches"] < 10 and stats["full"]["largest"] > 3


def test_a_batch_never_mixes_two_models():
    a, b = TinyRecognizer(1.0), TinyRecognizer(3.0)
    batching = EmbeddingBatching(100.0, 64)
    requests = [faces(2, seed=i) for i in range(8)]
    models = [a if i % 2 else b for i in range(8)]
    results = run_requests(lambda i: Embedder(models[i], None, batching).full(requests[i]), 8)
    for i, got in enumerate(results):
        want = models[i].embed_crops(requests[i])
        np.testing.assert_array_equal(np.stack([f.embedding for f in got]), np.stack([f.embedding for f in want]))
    assert all(len(s) == 1 for s in a.batches + b.batches)
    assert batching.stats()["full"]["batches"] == 2  # one batch per model


def test_no_batching_for_a_stand_in_that_is_not_a_face_recognizer_and_no_zero_window():
    class Other:
        def embed_crops(self, crops):  # noqa: ANN001, ANN201
            return []

    e = Embedder(Other(), None, EmbeddingBatching(5.0, 8))  # type: ignore[arg-type]
    assert not e.batched and e.full([]) == []
    with pytest.raises(ValueError):
        EmbeddingBatching(0.0, 8)


def test_close_drains_and_later_requests_run_alone():
    rec = TinyRecognizer(1.0)
    batching = EmbeddingBatching(30_000.0, 64)  # a window no test waits out: only the drain ends it
    requests = [faces(1, seed=i) for i in range(3)]
    done: list = []

    def one(i: int) -> None:
        done.append(Embedder(rec, None, batching).full(requests[i]))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    batcher = batching.full(rec)
    while batcher._open is None or len(batcher._open.futures) < 3:
        threading.Event().wait(0.002)
    assert batching.close(timeout=5)
    for t in threads:
        t.join(5)
    assert len(done) == 3 and batching.stats()["full"]["batches"] == 1
    later = faces(2, seed=9)
    got = Embedder(rec, None, batching).full(later)
    np.testing.assert_array_equal(got[1].embedding, rec.embed_crops(later)[1].embedding)
    assert batching.stats()["full"]["batches"] == 1  # closed: no window, no batch
