"""The server's embedding step, batched across concurrent requests (``api.batch_window_ms``, ``api.batch_max``).

Each request detects its own faces (and runs its per-face checks) in its own inference slot, then hands
its chips to the batchers: faces of requests that reach the embedding within the window are embedded in
one forward pass (recognition/batching.py), the cascade's cheap pass in one batch and the band faces'
full, flip-averaged pass in another, each batch in one inference slot. A batch never mixes models: there
is one batcher per model in service (and per cascade member), so a promotion mid-load is safe.

Only a server configures this (``FaceGate(batching=...)``, built by the web layer); the CLI, the flows and
a notebook embed each request's faces themselves, with no window. See docs/decisions/request-batching.md.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence

import numpy as np

from facegate.components.core.inference import InferenceSlots
from facegate.components.faces.pipeline import FaceCrop
from facegate.components.recognition.batching import MicroBatcher
from facegate.components.recognition.recognizer import FaceEmbedding, FaceRecognizer
from facegate.components.service.cascade import ServedCascade

PASSES = ("cheap", "full")


class EmbeddingBatching:
    """The batchers of a server: one per model in service for the full pass, one per served cascade for
    the cheap pass; ``slots`` are the server's inference slots (each batch runs in one)."""

    def __init__(self, window_ms: float, max_faces: int, slots: InferenceSlots | None = None) -> None:
        if window_ms <= 0:
            raise ValueError(f"a batching window must be > 0 ms (0 is no batching: pass none), got {window_ms}")
        self.window_s, self.max_faces, self.slots = window_ms / 1000.0, max_faces, slots
        self._lock = threading.Lock()
        self._closed = False
        self._batchers: dict[str, weakref.WeakKeyDictionary] = {p: weakref.WeakKeyDictionary() for p in PASSES}

    def _batcher(self, kind: str, owner: object, method: Callable[[np.ndarray], np.ndarray]) -> MicroBatcher:
        with self._lock:
            hit = self._batchers[kind].get(owner)
            if hit is None:
                ref = weakref.WeakMethod(method)  # a strong one would keep a replaced model alive, as the key

                def rows(chips: np.ndarray) -> np.ndarray:
                    bound = ref()
                    if bound is None:
                        raise RuntimeError("the model of this batcher is no longer in service")
                    return bound(chips)

                hold = self.slots if self.slots is not None and self.slots.slots else None
                hit = MicroBatcher(rows, window_s=self.window_s, max_rows=self.max_faces, hold=hold)
                if self._closed:
                    hit.close()  # after the drain: requests run alone
                self._batchers[kind][owner] = hit
            return hit

    def full(self, recognizer: FaceRecognizer) -> MicroBatcher:
        """Chips -> full (flip-averaged, fused) unit embeddings of ``recognizer``'s model."""
        return self._batcher("full", recognizer, recognizer.embed_aligned)

    def cheap(self, cascade: ServedCascade) -> MicroBatcher:
        """Chips -> the cascade member's unit embeddings (one pass, no mirror)."""
        return self._batcher("cheap", cascade, cascade.embed_chips)

    def close(self, timeout: float | None = None) -> bool:
        """Drain every batcher (the server stops): True when every batch was answered in time."""
        with self._lock:
            self._closed = True
            batchers = [b for kind in PASSES for b in self._batchers[kind].values()]
        return all([b.close(timeout) for b in batchers])

    def stats(self) -> dict[str, dict[str, int]]:
        """Per pass: batches run, the requests and faces in them, the largest batch (faces)."""
        with self._lock:
            batchers = {kind: list(self._batchers[kind].values()) for kind in PASSES}
        out = {}
        for kind, found in batchers.items():
            total = {"batches": 0, "requests": 0, "rows": 0, "largest": 0}
            for s in (b.stats() for b in found):
                for k in total:
                    total[k] = max(total[k], s[k]) if k == "largest" else total[k] + s[k]
            out[kind] = total
        return out


class Embedder:
    """How one request's faces are embedded: by the request itself (``batching`` None: the CLI, a notebook,
    a test's stand-in) or through the server's batchers. ``cascade`` None: no cheap pass."""

    def __init__(
        self, recognizer: FaceRecognizer, cascade: ServedCascade | None, batching: EmbeddingBatching | None
    ) -> None:
        self.recognizer, self.cascade = recognizer, cascade
        self.batching = batching if isinstance(recognizer, FaceRecognizer) else None

    @property
    def batched(self) -> bool:
        """True: the embedding runs outside the request's slot, in the batches' own."""
        return self.batching is not None

    def cheap(self, crops: Sequence[FaceCrop]) -> np.ndarray:
        """The cascade member's unit embeddings of ``crops`` (the cascade must be on)."""
        assert self.cascade is not None
        if self.batching is None:
            return self.cascade.embed(crops)
        return self.batching.cheap(self.cascade)(self.cascade.chips(crops))

    def full(self, crops: Sequence[FaceCrop]) -> list[FaceEmbedding]:
        """The full embeddings of ``crops`` (with their boxes and chips)."""
        if self.batching is None or not crops:
            return self.recognizer.embed_crops(crops)
        embs = self.batching.full(self.recognizer)(np.stack([c.chip for c in crops]))
        return [FaceEmbedding(c.box, e, c.chip) for c, e in zip(crops, embs)]


__all__ = ["PASSES", "EmbeddingBatching", "Embedder"]
