"""``embedding.backend: openvino``: the backbones' inference copies compiled by OpenVINO for the CPU.

Why: on the 2-core Xeons here OpenVINO's CPU plugin runs the same folded networks in bfloat16 (AMX) with
about half the CPU per face of torch's bfloat16 copies, and waits far less under load
(docs/decisions/openvino-backend.md has the figures), with embeddings within a hair of torch's float32
ones (tests/unit/embedding/test_openvino_runtime.py holds it on real LFW chips). torch stays the
reference: training, feature caches and any backbone OpenVINO cannot take run on it.

How:
- each backbone names what its ``features`` computes in eval mode as one float32 module of its
  preprocessed input (``Backbone.export_module``: BatchNorms folded, input normalisation inside);
- that module is converted once per weights, keyed by the sha256 of the backbone's state dict (the same
  hash as the model fingerprint, ``folding.weights_fingerprint``), to an IR with float32 weights under
  ``state_dir()/cache/openvino/<fingerprint>-<member>-r<revision>.xml`` (written under a file lock,
  moved into place whole) and read back by every later process;
- the IR is compiled for the CPU per (precision, threads) and cached beside the module as the torch
  inference copies are (``folding.inference_copy``: rebuilt when the weights change): bfloat16 where the
  CPU multiplies it natively and ``embedding.precision`` resolves to it, float32 otherwise; as many
  streams as torch's thread count fits into the cores (``api.inference_threads`` with one inference
  slot per core: a stream of one thread per concurrent request; a CLI command: one stream, all cores);
- if anything fails (openvino missing, conversion, compilation) the backbone runs on torch, the same
  weights, and one warning names the reason; :func:`inference_summary` says what runs (``status``).

Telemetry: ``import openvino`` reports a usage event whenever no consent file exists; openvino is imported
through facegate.components.core.telemetry.import_openvino, which stubs its telemetry out (nothing is sent).
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from facegate.components.core.devices import module_device
from facegate.components.core.inference import cpu_cores
from facegate.components.core.locks import file_lock
from facegate.components.core.paths import state_dir
from facegate.components.core.telemetry import import_openvino
from facegate.components.embedding.folding import inference_copy, use_inference_copy, weights_fingerprint
from facegate.components.embedding.precision import native_bfloat16

BACKENDS = ("torch", "openvino")
IR_REVISION = 1  # bumped when an export module changes what it computes: older IRs are then not read
CONVERT_BATCH = 2  # the example batch the graph is traced with (the batch dimension is left dynamic)
LOCK_TIMEOUT_S = 300.0  # another process converting the same weights: wait for its IR this long

logger = logging.getLogger(__name__)
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


@cache
def _core() -> Any:
    return import_openvino().Core()


def ir_dir() -> Path:
    """The IR cache: the state folder's, or ``FACEGATE_IR_CACHE`` (one cache shared by several state
    folders: a deployment's workers, a test session's sandboxes; IRs are keyed by their weights and
    written whole under a lock, so sharing is safe)."""
    shared = os.environ.get("FACEGATE_IR_CACHE")
    return Path(shared) if shared else state_dir() / "cache" / "openvino"


def ir_path(fingerprint: str, member: str) -> Path:
    """Where the IR of backbone ``member`` with weights ``fingerprint`` lives (its ``.bin`` beside it)."""
    return ir_dir() / f"{fingerprint}-{member}-r{IR_REVISION}.xml"


def precision_hint(dtype: torch.dtype) -> str:
    """OpenVINO's INFERENCE_PRECISION_HINT for the dtype ``embedding.precision`` resolves to: bf16 only
    where the CPU has it natively (OpenVINO does not emulate it), else f32."""
    return "bf16" if dtype == torch.bfloat16 and native_bfloat16() else "f32"


def compile_config(hint: str, threads: int) -> dict[str, Any]:
    """Streams of ``threads`` threads (torch's count), as many as fit into the cores: concurrent callers
    (the API's inference slots) each run on their own stream, a lone caller on one."""
    streams = max(1, cpu_cores() // max(1, threads))
    return {"INFERENCE_PRECISION_HINT": hint, "NUM_STREAMS": streams, "INFERENCE_NUM_THREADS": streams * threads}


def convert(export: nn.Module, input_size: int) -> Any:
    """``export`` (N x 3 x S x S float in, features out) as an OpenVINO model with a dynamic batch."""
    ov = import_openvino()
    example = torch.rand(CONVERT_BATCH, 3, input_size, input_size) * 255
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer warns where Python reads a shape (dlib's zero-padded sums): those are the fixed C x H x W
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return ov.convert_model(export.eval(), example_input=example, input=[-1, 3, input_size, input_size])


def cached_ir(path: Path, make: Callable[[], Any]) -> Any:
    """The IR at ``path`` (an OpenVINO model), made by ``make`` and written first when it is not there:
    under a lock on the folder (another process converting the same weights waits for it), float32
    weights, the ``.bin`` then the ``.xml`` moved into place, so an ``.xml`` present means a whole pair."""
    ov = import_openvino()
    with file_lock(path.parent, timeout=LOCK_TIMEOUT_S):
        if not (path.is_file() and path.with_suffix(".bin").is_file()):
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.xml")
            try:
                ov.save_model(make(), str(tmp), compress_to_fp16=False)
                os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
                tmp.with_suffix(".bin").unlink(missing_ok=True)
    return _core().read_model(str(path))


def export_of(module: Any) -> nn.Module:
    """``module.export_module()``, or NotImplementedError naming a backbone that has none."""
    export = module.export_module()
    if export is None:
        raise NotImplementedError(f"backbone {module.name} has no export module")
    return export


def read_or_convert(backbone: Any, member: str, input_size: int) -> tuple[Any, Path]:
    """The backbone's IR from the cache, converted and written first when it is not there."""
    path = ir_path(weights_fingerprint(backbone), member)
    return cached_ir(path, lambda: convert(export_of(backbone), input_size)), path


class CompiledFeatures(nn.Module):
    """A backbone's ``features`` compiled by OpenVINO: float32 N x 3 x S x S in, float32 features out.
    One infer request per concurrent caller, kept for reuse (a request is not thread-safe)."""

    def __init__(self, compiled: Any, hint: str, threads: int, ir: Path, feature_dim: int) -> None:
        super().__init__()
        self.compiled, self.hint, self.threads, self.ir, self.feature_dim = compiled, hint, threads, ir, feature_dim
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def forward(self, x: Tensor) -> Tensor:
        if len(x) == 0:
            return torch.zeros(0, self.feature_dim)
        with self._lock:
            request = self._idle.pop() if self._idle else self.compiled.create_infer_request()
        try:
            out = request.infer({0: x.detach().float().contiguous().numpy()}, share_inputs=True)[0]
        finally:
            with self._lock:
                self._idle.append(request)
        return torch.from_numpy(np.asarray(out, np.float32))


class TorchFallback(nn.Module):
    """Why this backbone's OpenVINO copy could not be built: it runs on torch (cached, so tried once)."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


def _warn_once(member: str, reason: str) -> None:
    with _warned_lock:
        if (member, reason) in _warned:
            return
        _warned.add((member, reason))
    logger.warning("embedding.backend openvino: %s runs on torch instead: %s", member, reason)


def _build(backbone: Any, hint: str, threads: int) -> nn.Module:
    """The compiled copy, or the reason there is none (logged once)."""
    try:
        model, path = read_or_convert(backbone, backbone.name, backbone.input_size)
        compiled = _core().compile_model(model, "CPU", compile_config(hint, threads))
        return CompiledFeatures(compiled, hint, threads, path, backbone.feature_dim)
    except Exception as exc:  # noqa: BLE001 - any failure means torch, said once
        lines = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"
        _warn_once(backbone.name, reason)
        return TorchFallback(reason)


def _runtime_copy(backbone: Any) -> nn.Module | None:
    """The cached OpenVINO copy (or the reason there is none) for the backbone's current precision and
    torch's thread count; None where OpenVINO is not asked for or does not apply (training, autograd)."""
    if backbone.backend != "openvino" or not use_inference_copy(backbone):
        return None
    device = module_device(backbone)
    if device.type != "cpu":
        reason = f"OpenVINO runs on the CPU only; the model is on {device}"
        _warn_once(backbone.name, reason)
        return TorchFallback(reason)
    hint = precision_hint(backbone.inference_dtype())
    threads = torch.get_num_threads()
    return inference_copy(backbone, lambda b: _build(b, hint, threads), variant=("openvino", hint, threads))


def openvino_features(backbone: Any) -> CompiledFeatures | None:
    """The compiled ``features`` of ``backbone`` where embedding.backend is openvino and it could be
    built; None: run torch's inference path."""
    copy = _runtime_copy(backbone)
    return copy if isinstance(copy, CompiledFeatures) else None


def leaf_backbones(model: nn.Module) -> list[Any]:
    """The backbones that run a network themselves (a fused backbone's members, not the fusion)."""
    return [m for m in model.modules() if hasattr(m, "export_module") and not hasattr(m, "members")]


def set_backend(model: nn.Module, backend: str, prepare: bool = True) -> nn.Module:
    """Every backbone inside ``model`` infers on ``backend``; with ``prepare`` and an eval-mode model the
    OpenVINO copies are built now (a failure is logged at load, not at the first request). Returns ``model``."""
    if backend not in BACKENDS:
        raise ValueError(f"embedding.backend: {backend!r} is not one of {' | '.join(BACKENDS)}")
    for module in model.modules():
        if hasattr(module, "export_module"):
            module.backend = backend  # type: ignore[assignment]  # nn.Module.__setattr__ takes any value
    if backend == "openvino" and prepare:
        with torch.no_grad():
            for b in leaf_backbones(model):
                _runtime_copy(b)
    return model


def inference_summary(model: nn.Module) -> dict[str, Any]:
    """What each backbone of ``model`` runs on now: backend, precision, and why torch where OpenVINO was
    asked for. ``backend`` is the members' common one (``mixed`` when they differ)."""
    members: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        for b in leaf_backbones(model):
            dtype = str(b.inference_dtype()).split(".")[-1]
            row: dict[str, Any] = {"backend": "torch", "precision": dtype}
            copy = _runtime_copy(b)
            if isinstance(copy, CompiledFeatures):
                row = {"backend": "openvino", "precision": "bfloat16" if copy.hint == "bf16" else "float32"}
            elif isinstance(copy, TorchFallback):
                row["fallback"] = copy.reason
            members[b.name] = row
    backends = {r["backend"] for r in members.values()}
    requested = {b.backend for b in leaf_backbones(model)}
    return {
        "backend": backends.pop() if len(backends) == 1 else "mixed",
        "requested": requested.pop() if len(requested) == 1 else "mixed",
        "members": members,
    }
