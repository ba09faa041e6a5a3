"""Receptive fields traced from the forward pass the network really runs, not read from a table.

One forward of one example runs under a ``TorchFunctionMode`` that sees every torch call (functional
ones too, so dlib's pooling module that calls ``F.avg_pool2d`` counts, which a walk over
``nn.MaxPool2d`` instances would miss) and carries a :class:`Geometry` with every 4-D tensor:

* ``conv2d`` / ``max_pool2d`` / ``avg_pool2d`` apply the standard recurrence per axis::

      rf_out    = rf_in + (k - 1) * dilation * jump_in
      jump_out  = jump_in * stride
      start_out = start_in + ((k - 1) / 2 * dilation - padding) * jump_in

  (groups and depthwise do not change geometry; ``ceil_mode`` only adds positions at the end);
* ``pad`` moves ``start`` out by the top / left padding;
* an op whose output keeps its input's spatial size (BN, activations, arithmetic, channel concat) is the
  identity; where several mapped inputs meet (a residual ``x + f(x)``, a concat) the result is the union
  of their boxes. For a residual network that union IS the main path's field: a shortcut (identity, 1x1
  projection, dlib's 2x2 average pool) covers a box inside the main path's;
* anything else that changes the spatial size (interpolate, adaptive or global pooling, slicing) makes
  the geometry unknown: asking for such a layer raises ``ReceptiveFieldUntraceable`` unless an explicit
  chain of ``(kernel, stride, padding, dilation)`` steps is given for it (:func:`geometry_from_path`).

``Geometry.box(y, x)`` maps a feature-map position to its box of input pixels; :func:`gradient_support`
checks it empirically (where d(unit)/d(input) is non-zero lies inside the box).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from facegate.components.core.errors import ReceptiveFieldUntraceable, UnknownLayer

__all__ = [
    "Geometry",
    "PathStep",
    "Stop",
    "check_layers",
    "first_tensor",
    "geometry_from_path",
    "gradient_support",
    "receptive_field",
    "run_forward",
    "trace_geometry",
]

PathStep = tuple  # (kernel, stride, padding, dilation), each an int or a (y, x) pair; the last ones optional
Forward = Callable[[Tensor], Any]
SPATIAL_OPS = ("conv2d", "max_pool2d", "avg_pool2d", "max_pool2d_with_indices", "mkldnn_max_pool2d")


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1])) if len(v) else (0, 0)
    return int(v), int(v)


@dataclass(frozen=True)
class Geometry:
    """Receptive field of one position of a feature map, per axis (y, x), in model-input pixels.

    ``rf``: side of the field; ``jump``: input pixels between neighbouring positions (effective stride);
    ``start``: centre of position 0 (may be negative or x.5: padding puts it off the image).
    """

    rf: tuple[int, int] = (1, 1)
    jump: tuple[int, int] = (1, 1)
    start: tuple[float, float] = (0.0, 0.0)

    def step(self, kernel: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1) -> Geometry:
        """The geometry after one conv / pool with these (int or per-axis) settings."""
        k, s, p, d = _pair(kernel), _pair(stride), _pair(padding), _pair(dilation)
        return Geometry(
            rf=(self.rf[0] + (k[0] - 1) * d[0] * self.jump[0], self.rf[1] + (k[1] - 1) * d[1] * self.jump[1]),
            jump=(self.jump[0] * s[0], self.jump[1] * s[1]),
            start=(
                self.start[0] + ((k[0] - 1) / 2 * d[0] - p[0]) * self.jump[0],
                self.start[1] + ((k[1] - 1) / 2 * d[1] - p[1]) * self.jump[1],
            ),
        )

    def shifted(self, top: int, left: int) -> Geometry:
        """After zero-padding ``top`` rows and ``left`` columns in front (position 0 moves out by that)."""
        return Geometry(self.rf, self.jump, (self.start[0] - top * self.jump[0], self.start[1] - left * self.jump[1]))

    def area(self) -> int:
        return self.rf[0] * self.rf[1]

    def union(self, other: Geometry) -> Geometry:
        """Two maps added or concatenated position by position (same jump): the union of their boxes."""
        if self.jump != other.jump:  # not position-aligned: keep the larger (main) field
            return self if self.area() >= other.area() else other
        lo = [min(self.start[a] - (self.rf[a] - 1) / 2, other.start[a] - (other.rf[a] - 1) / 2) for a in (0, 1)]
        hi = [max(self.start[a] + (self.rf[a] - 1) / 2, other.start[a] + (other.rf[a] - 1) / 2) for a in (0, 1)]
        return Geometry(
            (round(hi[0] - lo[0]) + 1, round(hi[1] - lo[1]) + 1), self.jump, ((lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2)
        )

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """Input-pixel box ``(y0, x0, y1, x1)``, half-open, of position (y, x); not clamped to the input."""
        y0 = round(self.start[0] + y * self.jump[0] - (self.rf[0] - 1) / 2)
        x0 = round(self.start[1] + x * self.jump[1] - (self.rf[1] - 1) / 2)
        return y0, x0, y0 + self.rf[0], x0 + self.rf[1]

    def as_json(self) -> dict:
        def one(t: tuple) -> Any:
            return t[0] if t[0] == t[1] else list(t)

        return {"receptive_field_px": one(self.rf), "jump_px": one(self.jump), "start_px": one(self.start)}


def geometry_from_path(path: Iterable[PathStep]) -> Geometry:
    """Geometry after an explicit chain of ``(kernel, stride, padding, dilation)`` steps (the last ones
    optional): the escape hatch for a layer that tracing cannot follow."""
    g = Geometry()
    for st in path:
        st = tuple(st)
        g = g.step(st[0], st[1] if len(st) > 1 else 1, st[2] if len(st) > 2 else 0, st[3] if len(st) > 3 else 1)
    return g


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[i] if len(args) > i else default


_UNKNOWN = object()  # a tensor whose geometry could not be followed


def _conv_step(g: Geometry, args: tuple, kwargs: dict) -> Geometry:
    weight = _arg(args, kwargs, 1, "weight", None)
    pad = _arg(args, kwargs, 4, "padding", 0)
    dil = _pair(_arg(args, kwargs, 5, "dilation", 1))
    k = tuple(weight.shape[-2:])
    if isinstance(pad, str):  # 'valid' | 'same' (same: the odd pixel goes right / bottom)
        pad = (0, 0) if pad == "valid" else ((dil[0] * (k[0] - 1)) // 2, (dil[1] * (k[1] - 1)) // 2)
    return g.step(k, _arg(args, kwargs, 3, "stride", 1), pad, dil)


def _pool_step(g: Geometry, name: str, args: tuple, kwargs: dict) -> Geometry:
    k = _arg(args, kwargs, 1, "kernel_size", 1)
    s = _arg(args, kwargs, 2, "stride", None)
    s = k if s is None or (isinstance(s, (tuple, list)) and len(s) == 0) else s
    d = _arg(args, kwargs, 4, "dilation", 1) if "max" in name else 1
    return g.step(k, s, _arg(args, kwargs, 3, "padding", 0), d)


class _GeometryMode(TorchFunctionMode):
    """Carries a Geometry with every 4-D tensor derived from the traced input."""

    def __init__(self) -> None:
        super().__init__()
        self.geo: dict[int, Any] = {}
        self.keep: list[Tensor] = []  # every tracked tensor stays alive, so ids are not reused mid-trace

    def track(self, t: Tensor, g: Any) -> None:
        self.geo[id(t)] = g
        self.keep.append(t)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        outs = [o for o in (out if isinstance(out, (tuple, list)) else [out]) if isinstance(o, Tensor)]
        values = (*args, *kwargs.values())
        inputs = [a for a in values if isinstance(a, Tensor)]
        inputs += [t for a in values if isinstance(a, (tuple, list)) for t in a if isinstance(t, Tensor)]
        mapped = [a for a in inputs if id(a) in self.geo]
        if outs and mapped:
            g = self._geometry(getattr(func, "__name__", str(func)).lstrip("_"), args, kwargs, mapped, outs[0])
            for o in outs:
                self.track(o, g if o.dim() == 4 else _UNKNOWN)
        return out

    def _geometry(self, name: str, args: tuple, kwargs: dict, mapped: list[Tensor], out: Tensor) -> Any:
        x = args[0] if args and isinstance(args[0], Tensor) else None
        g_in: Any = self.geo.get(id(x), _UNKNOWN) if x is not None else _UNKNOWN
        if name in SPATIAL_OPS:
            if g_in is _UNKNOWN:
                return _UNKNOWN
            return _conv_step(g_in, args, kwargs) if name == "conv2d" else _pool_step(g_in, name, args, kwargs)
        if name == "pad" and x is not None and x.dim() == 4:
            pad = [*_arg(args, kwargs, 1, "pad", ()), 0, 0, 0, 0]
            return _UNKNOWN if g_in is _UNKNOWN else g_in.shifted(pad[2], pad[0])
        if out.dim() != 4:
            return _UNKNOWN
        # inputs of the output's size carry its geometry; a broadcast one (a squeeze-excite N x C x 1 x 1
        # scale) only rescales channels and is left out
        geos = [self.geo[id(a)] for a in mapped if a.dim() == 4 and a.shape[-2:] == out.shape[-2:]]
        if not geos or any(g is _UNKNOWN for g in geos):
            return _UNKNOWN  # the spatial size changed in a way this tracer does not model
        merged = geos[0]
        for g in geos[1:]:
            merged = merged.union(g)
        return merged


def check_layers(model: nn.Module, layers: Iterable[str], model_name: str = "") -> dict[str, nn.Module]:
    """``{name: module}`` for each requested name; :class:`UnknownLayer` (listing the valid ones) otherwise."""
    modules = dict(model.named_modules())
    out = {}
    for name in layers:
        if name not in modules or name == "":
            raise UnknownLayer(name, [n for n in modules if n], model_name)
        out[name] = modules[name]
    return out


def first_tensor(out: Any) -> Tensor | None:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return next((o for o in out if isinstance(o, Tensor)), None)
    return None


class Stop(Exception):
    """Raised from the deepest requested layer's hook: the rest of the forward is not needed."""


def run_forward(model: nn.Module, forward: Forward | None, x: Tensor) -> None:
    """``forward(x)`` (default ``model(x)``) until a hook raises :class:`Stop`."""
    try:
        (forward or model)(x)
    except Stop:
        pass


def _first_outputs(
    model: nn.Module, mods: dict[str, nn.Module], forward: Forward | None, x: Tensor, mode: _GeometryMode
) -> dict[str, Tensor | None]:
    """Each layer's first output in one forward of ``x`` under ``mode``."""
    seen: dict[str, Tensor | None] = {}
    handles = []
    for name, mod in mods.items():

        def hook(_m, _i, out, name=name):
            if name not in seen:  # a module called twice: its first call
                seen[name] = first_tensor(out)
            if len(seen) == len(mods):
                raise Stop

        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad(), mode:
            x = x.clone()
            mode.track(x, Geometry())
            run_forward(model, forward, x)
    finally:
        for h in handles:
            h.remove()
    return seen


def trace_geometry(
    model: nn.Module,
    example: Tensor,
    layers: Iterable[str],
    *,
    paths: Mapping[str, Iterable[PathStep]] | None = None,
    forward: Forward | None = None,
    model_name: str = "",
) -> dict[str, tuple[Geometry, tuple[int, ...]]]:
    """``{layer: (geometry, output shape C x H x W)}`` from one forward of ``example`` (N x 3 x H x W or
    3 x H x W; its first item).

    ``paths[layer]``: an explicit (kernel, stride, padding, dilation) chain for that layer, over the trace.
    ``forward``: how to run the model (default ``model(x)``), e.g. a method that bypasses a cached
    inference copy, so that the hooked modules are the ones that run.
    """
    layers = list(layers)
    mods = check_layers(model, layers, model_name)
    paths = dict(paths or {})
    example = (example if example.dim() == 4 else example.unsqueeze(0))[:1]
    mode = _GeometryMode()
    seen = _first_outputs(model, mods, forward, example, mode)
    result = {}
    for name in layers:
        if name not in seen:
            raise ReceptiveFieldUntraceable(
                f"layer {name!r} did not run in the forward pass (is another module, "
                "e.g. a cached inference copy, run instead?)"
            )
        t = seen[name]
        if t is None or t.dim() != 4:
            raise ReceptiveFieldUntraceable(
                f"layer {name!r} outputs {None if t is None else tuple(t.shape)}, not an N x C x H x W feature map"
            )
        g = geometry_from_path(paths[name]) if name in paths else mode.geo.get(id(t), _UNKNOWN)
        if g is _UNKNOWN:
            raise ReceptiveFieldUntraceable(
                f"receptive field of {name!r} cannot be traced (an op on the way changes the map size and is "
                f"not a conv, pool or pad); give its path: paths={{{name!r}: [(kernel, stride, padding), ...]}}"
            )
        result[name] = (g, tuple(t.shape[1:]))
    return result


def receptive_field(
    model: nn.Module,
    layer: str,
    example: Tensor,
    *,
    path: Iterable[PathStep] | None = None,
    forward: Forward | None = None,
) -> Geometry:
    """The receptive field of ``layer`` (side ``.rf``, effective stride ``.jump``, offset ``.start``)."""
    paths = {layer: path} if path is not None else None
    return trace_geometry(model, example, [layer], paths=paths, forward=forward)[layer][0]


def gradient_support(
    model: nn.Module,
    layer: str,
    example: Tensor,
    channel: int | None,
    y: int,
    x: int,
    *,
    forward: Forward | None = None,
) -> tuple[int, int, int, int] | None:
    """Empirical check: the input box ``(y0, x0, y1, x1)`` where d(unit at y, x)/d(input) is non-zero.

    Always inside the traced box (clipped to the input); can be smaller (dead ReLUs, max-pool routing).
    ``channel=None``: the channel most active at (y, x) (a dead unit has no gradient at all)."""
    mod = check_layers(model, [layer])[layer]
    grabbed: list[Any] = []

    def hook(_m, _i, out):
        if not grabbed:
            grabbed.append(first_tensor(out))
            raise Stop

    h = mod.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            inp = (example if example.dim() == 4 else example.unsqueeze(0))[:1].detach().clone().requires_grad_(True)
            run_forward(model, forward, inp)
            out = grabbed[0][0, :, y, x]
            out[int(out.argmax()) if channel is None else channel].backward()
    finally:
        h.remove()
    grad = inp.grad
    if grad is None:  # the unit does not depend on the input at all
        return None
    nz = (grad[0].abs().sum(0) > 0).nonzero()
    if len(nz) == 0:
        return None
    (y0, x0), (y1, x1) = nz.min(0).values.tolist(), nz.max(0).values.tolist()
    return y0, x0, y1 + 1, x1 + 1
