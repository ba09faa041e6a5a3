"""The nine inputs that most excite each unit of chosen layers, streamed (after Zeiler & Fergus 2013,
"Visualizing and Understanding Convolutional Networks", fig. 2: the top-9 image patches per feature map).

Model-agnostic: any ``nn.Module`` whose chosen layers output N x C x H x W maps. Forward hooks on those
layers reduce each sampled unit (channel) to one number per image, its maximum over positions (and where
it is), and push it into a bounded min-heap of ``k`` entries ``(activation, image_index, y, x)``. Batches
come from an iterator and are dropped after their update: no activation map outlives its batch, and the
forward stops once the deepest requested layer has run. Only python numbers stay, so memory is bounded by
the batch, whatever the number of images.
"""

from __future__ import annotations

import heapq
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from facegate.components.explain.receptive_field import (
    Forward,
    Geometry,
    PathStep,
    Stop,
    check_layers,
    first_tensor,
    run_forward,
    trace_geometry,
)

__all__ = ["Collected", "LayerResult", "TopUnits", "collect", "sample_units"]

Entry = tuple[float, int, int, int]  # (activation, image_index, y, x)


def sample_units(n_channels: int, units_per_layer: int | None, seed: int, layer: str) -> list[int]:
    """Seeded, sorted channel sample; the same (seed, layer name) picks the same units in every model of
    that architecture, so two versions can be compared unit by unit."""
    if units_per_layer is None or units_per_layer >= n_channels:
        return list(range(n_channels))
    rng = np.random.default_rng([seed, zlib.crc32(layer.encode())])
    return sorted(int(c) for c in rng.choice(n_channels, size=units_per_layer, replace=False))


class TopUnits:
    """Bounded min-heaps ``(activation, image_index, y, x)`` per (layer, unit); at most ``k`` entries each."""

    def __init__(self, units: Mapping[str, Sequence[int]], k: int = 9) -> None:
        self.k = k
        self.units = {layer: list(u) for layer, u in units.items()}
        self.heaps: dict[str, list[list[Entry]]] = {layer: [[] for _ in u] for layer, u in self.units.items()}

    def update(self, layer: str, act: Tensor, indices: Sequence[int]) -> None:
        """``act``: N x C x H x W output of ``layer`` for images ``indices``; only its sampled channels are read."""
        a = act.detach()[:, self.units[layer]].float()  # N x U x H x W
        n, u, _, w = a.shape
        best, where = a.flatten(2).max(dim=2)  # N x U
        kk = min(self.k, n)
        values, rows = best.topk(kk, dim=0)  # only a batch's own top k can enter a top k
        top_v, top_n, where_l = values.tolist(), rows.tolist(), where.tolist()
        for j in range(u):
            heap = self.heaps[layer][j]
            for r in range(kk):
                v, i = top_v[r][j], top_n[r][j]
                if len(heap) >= self.k and v <= heap[0][0]:
                    break  # sorted descending: nothing further down enters
                pos = where_l[i][j]
                item = (float(v), int(indices[i]), pos // w, pos % w)
                if len(heap) < self.k:
                    heapq.heappush(heap, item)
                else:
                    heapq.heappushpop(heap, item)

    def top(self, layer: str, j: int) -> list[Entry]:
        """Unit ``j`` (position in ``units[layer]``), best first."""
        return sorted(self.heaps[layer][j], key=lambda t: (-t[0], t[1]))

    def max_heap_size(self) -> int:
        return max((len(h) for hs in self.heaps.values() for h in hs), default=0)


@dataclass
class LayerResult:
    name: str
    geometry: Geometry
    shape: tuple[int, ...]  # C x H x W of the layer's output
    units: list[int]
    top: list[list[Entry]]  # per unit, best first


@dataclass
class Collected:
    layers: dict[str, LayerResult]
    input_hw: tuple[int, int]
    n_images: int
    seconds: float
    extra: dict = field(default_factory=dict)

    def reindexed(self, indices: Sequence[int]) -> Collected:
        """The same result with image positions mapped through ``indices`` (positions in a sample -> ids)."""
        for r in self.layers.values():
            r.top = [[(a, int(indices[i]), y, x) for a, i, y, x in t] for t in r.top]
        return self


class Progress:
    """tqdm on stderr where installed, else a counter line at most once a second; silent when disabled."""

    def __init__(self, total: int | None, desc: str, enabled: bool) -> None:
        self.bar: Any = None
        self.enabled, self.total, self.desc = enabled, total, desc
        self.n, self.last = 0, 0.0
        if enabled:
            try:
                from tqdm.auto import tqdm  # optional: a plain counter line without it
            except ImportError:
                return
            self.bar = tqdm(total=total, desc=desc, unit="img", file=sys.stderr)

    def update(self, n: int) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self.last > 1.0:
            self.last = time.monotonic()
            print(f"\r{self.desc}: {self.n}/{self.total or '?'} images", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            print(f"\r{self.desc}: {self.n}/{self.total or '?'} images", file=sys.stderr)


def batches(
    images: Iterable[Any], to_input: Callable[[Any], Tensor], batch_size: int
) -> Iterator[tuple[list[int], Tensor]]:
    """(positions, N x 3 x H x W) batches of ``to_input(image)``."""
    idx: list[int] = []
    xs: list[Tensor] = []
    for i, img in enumerate(images):
        t = to_input(img)
        xs.append(t[0] if t.dim() == 4 else t)
        idx.append(i)
        if len(xs) == batch_size:
            yield idx, torch.stack(xs)
            idx, xs = [], []
    if xs:
        yield idx, torch.stack(xs)


class _Recorder:
    """Hooks that feed each requested layer's first output per forward into a :class:`TopUnits`."""

    def __init__(self, mods: Mapping[str, nn.Module], rec: TopUnits) -> None:
        self.rec, self.mods = rec, dict(mods)
        self.indices: list[int] = []
        self.fired: set[str] = set()
        self.handles = [mod.register_forward_hook(self._hook(name)) for name, mod in self.mods.items()]

    def _hook(self, name: str):
        def hook(_m, _i, out):
            if name in self.fired:
                return
            self.fired.add(name)
            self.rec.update(name, first_tensor(out), self.indices)
            if len(self.fired) == len(self.mods):
                raise Stop

        return hook

    def run(self, model: nn.Module, forward: Forward | None, idx: list[int], x: Tensor) -> None:
        self.indices, self.fired = idx, set()
        with torch.no_grad():
            run_forward(model, forward, x.to(_device(model)))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _device(model: nn.Module) -> torch.device:
    """Where the model's weights are (a model trained on a GPU is looked inside there)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _chosen_units(
    geos: Mapping[str, tuple[Geometry, tuple[int, ...]]],
    units: Mapping[str, Sequence[int]] | None,
    units_per_layer: int | None,
    seed: int,
) -> dict[str, list[int]]:
    chosen = {}
    for ly, (_g, shape) in geos.items():
        chosen[ly] = list(units[ly]) if units and ly in units else sample_units(shape[0], units_per_layer, seed, ly)
        bad = [c for c in chosen[ly] if not 0 <= c < shape[0]]
        if bad:
            raise ValueError(f"{ly}: units {bad} out of range 0..{shape[0] - 1}")
    return chosen


def collect(
    model: nn.Module,
    layers: Sequence[str],
    images: Iterable[Any],
    to_input: Callable[[Any], Tensor],
    *,
    units_per_layer: int | None = 16,
    seed: int = 0,
    units: Mapping[str, Sequence[int]] | None = None,
    k: int = 9,
    batch_size: int = 32,
    paths: Mapping[str, Iterable[PathStep]] | None = None,
    forward: Forward | None = None,
    total: int | None = None,
    progress: bool = True,
    model_name: str = "",
    on_batch: Callable[[TopUnits, int], None] | None = None,
) -> Collected:
    """One streaming pass: the top ``k`` images of each sampled unit of each layer.

    ``images``: an iterable (index = position in it); ``to_input(image)`` -> 3 x H x W (or 1 x 3 x H x W)
    float tensor, the model's input; every image must give the same input size. ``units``: explicit
    channels per layer (else ``units_per_layer`` sampled with ``seed``; None: all). ``on_batch`` is called
    with the heaps and the number of images seen after every batch.
    """
    layers = list(layers)
    mods = check_layers(model, layers, model_name)
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    if total is None and hasattr(images, "__len__"):
        total = len(images)  # type: ignore[arg-type]
    bar = Progress(total, f"units {model_name}".strip(), progress)
    recorder: _Recorder | None = None
    geos: dict[str, tuple[Geometry, tuple[int, ...]]] = {}
    n_seen, input_hw = 0, (0, 0)
    try:
        for idx, x in batches(images, to_input, batch_size):
            if recorder is None:
                input_hw = (int(x.shape[-2]), int(x.shape[-1]))
                geos = trace_geometry(
                    model, x[:1].to(_device(model)), layers, paths=paths, forward=forward, model_name=model_name
                )
                recorder = _Recorder(mods, TopUnits(_chosen_units(geos, units, units_per_layer, seed), k))
            if tuple(x.shape[-2:]) != input_hw:
                raise ValueError(f"input size {tuple(x.shape[-2:])} differs from the first batch's {input_hw}")
            recorder.run(model, forward, idx, x)
            del x  # the batch is dropped: only the heaps stay
            n_seen += len(idx)
            bar.update(len(idx))
            if on_batch is not None:
                on_batch(recorder.rec, n_seen)
    finally:
        if recorder is not None:
            recorder.remove()
        bar.close()
        model.train(was_training)
    if recorder is None:
        raise ValueError("no images")
    rec = recorder.rec
    out = {
        ly: LayerResult(
            ly, geos[ly][0], geos[ly][1], rec.units[ly], [rec.top(ly, j) for j in range(len(rec.units[ly]))]
        )
        for ly in layers
    }
    return Collected(out, input_hw, n_seen, time.perf_counter() - t0)
