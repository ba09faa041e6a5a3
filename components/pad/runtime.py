"""PAD inference: the torch network exported once to ONNX, in memory, and run by OpenVINO's CPU plugin
(the served path) or OpenCV's DNN module (the fallback); eager torch is the reference.

Why not torch: a MiniFASNet is ~100 tiny layers on an 80x80 input, and at batch 1 eager torch spends its
time dispatching them (8-16 ms per model on one thread here). OpenCV's classic DNN engine runs the pair's
graph in ~3.2 CPU ms per face; OpenVINO, compiled for a static batch, in ~2.2 (float32, one thread, on
this 2-core Xeon at moderate load; at load 10 both take ~4.3: docs/decisions/pad.md has the breakdown).
Both match torch to 1e-6 (tests/unit/pad/test_runtime.py). Both members of a pair are one graph, one
call. bfloat16 is not used: on real crops it moved live probabilities by up to 0.03, as much as the
threshold's margin.

OpenVINO compiles one model per batch size (1 to ``MAX_STATIC_BATCH``; larger batches go in chunks):
static shapes are faster than a dynamic batch, and compiled models are kept for the process. A
``cv2.dnn.Net`` or an OpenVINO infer request holds per-run state: each thread gets its own net, and
OpenVINO's compiled copies are pooled, one per concurrent caller (the API runs requests on several
threads), each running in its caller's thread. openvino is imported through
:func:`facegate.components.core.telemetry.import_openvino`: nothing is reported, prompted or written
under ``~/intel``.
"""

from __future__ import annotations

import io
import logging
import threading
import warnings
from collections.abc import Sequence
from functools import cache
from typing import Any, cast

import cv2
import numpy as np
import torch
from torch import nn

from facegate.components.core.inference import cpu_cores
from facegate.components.core.telemetry import import_openvino
from facegate.components.pad.minifasnet import PadNet

#: ``pad.runtime``'s choices: the served path, its fallback, the reference.
RUNTIMES = ("openvino", "opencv", "torch")
#: Batch sizes OpenVINO compiles a static model for; a frame with more faces is scored in chunks.
MAX_STATIC_BATCH = 4

logger = logging.getLogger(__name__)


def export_onnx(module: nn.Module, input_shapes: Sequence[tuple[int, ...]]) -> bytes:
    """``module`` (eval mode) as ONNX bytes; inputs ``input0..`` of shape ``(B, *shape)``, B free."""
    module = module.eval()
    dummies = tuple(torch.zeros(1, *shape) for shape in input_shapes)
    names = [f"input{i}" for i in range(len(dummies))]
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter warns it is legacy; the new one needs onnxscript
        target = cast(Any, buffer)  # typed as a path; a stream works
        torch.onnx.export(
            module,
            dummies,
            target,
            dynamo=False,
            opset_version=13,
            input_names=names,
            output_names=["output"],
            dynamic_axes={n: {0: "batch"} for n in names + ["output"]},
        )
    return _copy_shared_initializers(buffer.getvalue())


def _copy_shared_initializers(data: bytes) -> bytes:
    """The exporter stores equal weight tensors once and reads them through ``Identity`` nodes (an untrained
    network's PReLU slopes are all 0.25); OpenCV's classic engine then loses the batch dimension. Each such
    node becomes a copy of the tensor under its output's name."""
    import onnx  # heavy: the ONNX protobuf bindings; only an export needs them
    from onnx import numpy_helper  # heavy: as above

    model = onnx.load_from_string(data)
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    shared = [n for n in graph.node if n.op_type == "Identity" and n.input[0] in weights]
    if not shared:
        return data
    for node in shared:
        graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(weights[node.input[0]]), node.output[0]))
        graph.node.remove(node)
    return model.SerializeToString()


class OpenCvGraph:
    """A torch module run by OpenCV's classic DNN engine; one parsed network per thread."""

    def __init__(self, module: nn.Module, input_shapes: Sequence[tuple[int, ...]]) -> None:
        self.input_names = [f"input{i}" for i in range(len(input_shapes))]
        self._onnx = np.frombuffer(export_onnx(module, input_shapes), np.uint8)
        self._local = threading.local()
        self._net()  # parse now: a graph OpenCV cannot read fails at load, not at the first face

    def _net(self):
        net = getattr(self._local, "net", None)
        if net is None:
            net = self._local.net = cv2.dnn.readNetFromONNX(self._onnx, engine=cv2.dnn.ENGINE_CLASSIC)
        return net

    def __call__(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        net = self._net()
        for name, batch in zip(self.input_names, inputs):
            net.setInput(np.ascontiguousarray(batch, dtype=np.float32), name)
        return np.asarray(net.forward())


class OpenCvPadRunner(OpenCvGraph):
    """A PadNet's fused probabilities: ``Nx3`` float64 for one ``Nx3xHxW`` float32 batch per member."""

    def __init__(self, net: PadNet) -> None:
        super().__init__(net, [(3, *s.input_hw) for s in net.specs])
        self.num_classes = net.specs[0].num_classes

    def __call__(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        if not len(crops[0]):  # OpenCV's DNN dies on an empty batch (SIGFPE): nothing to run
            return np.zeros((0, self.num_classes))
        return super().__call__(crops).astype(np.float64).reshape(len(crops[0]), -1)


@cache
def _openvino_core() -> Any:
    return import_openvino().Core()


#: OpenVINO's CPU settings for one compiled copy: float32 (bfloat16 moved live probabilities by up to
#: 0.03 on real crops), one stream of one thread — it then runs in the caller's thread, as OpenCV's DNN
#: does; streams of their own hand each call to a worker thread, which at load 10 doubled the wall time —
#: and no pinning (on a shared machine a pinned thread waits for its busy core).
OPENVINO_CONFIG = {
    "INFERENCE_PRECISION_HINT": "f32",
    "NUM_STREAMS": 1,
    "INFERENCE_NUM_THREADS": 1,
    "ENABLE_CPU_PINNING": False,
}


class OpenVinoPadRunner:
    """A PadNet's fused probabilities through OpenVINO's CPU plugin, float32: the same contract as
    :class:`OpenCvPadRunner` (``Nx3`` float64 for one ``Nx3xHxW`` float32 batch per member).

    Per batch size, a pool of compiled copies, each with its infer request: a caller takes an idle one,
    or compiles one more while there are fewer than ``max_copies`` (default: the cores; the API's
    inference slots are as many), or waits for one. Concurrent requests so run side by side, each in
    its own thread, and a process compiles only what its concurrency needs.
    """

    def __init__(self, net: PadNet, max_copies: int | None = None) -> None:
        self._shapes = [(3, *s.input_hw) for s in net.specs]
        self.input_names = [f"input{i}" for i in range(len(self._shapes))]
        self.num_classes = net.specs[0].num_classes
        self.max_copies = max_copies or cpu_cores()
        self._model = _openvino_core().read_model(export_onnx(net, self._shapes))
        self._idle: dict[int, list[Any]] = {}
        self._copies: dict[int, int] = {}
        self._cond = threading.Condition()
        self._release(1, self._acquire(1))  # compile now: a graph OpenVINO cannot take fails at load

    def _compile(self, batch: int) -> Any:
        model = self._model.clone()
        model.reshape({name: [batch, *shape] for name, shape in zip(self.input_names, self._shapes)})
        return _openvino_core().compile_model(model, "CPU", OPENVINO_CONFIG).create_infer_request()

    def _acquire(self, batch: int) -> Any:
        with self._cond:
            while True:
                idle = self._idle.setdefault(batch, [])
                if idle:
                    return idle.pop()
                if self._copies.get(batch, 0) < self.max_copies:
                    self._copies[batch] = self._copies.get(batch, 0) + 1
                    break
                self._cond.wait()
        try:
            return self._compile(batch)  # outside the lock: compiling takes a while
        except BaseException:
            with self._cond:
                self._copies[batch] -= 1
                self._cond.notify()
            raise

    def _release(self, batch: int, request: Any) -> None:
        with self._cond:
            self._idle[batch].append(request)
            self._cond.notify()

    def __call__(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        n = len(crops[0])
        out = []
        for start in range(0, n, MAX_STATIC_BATCH):
            chunk = [np.ascontiguousarray(c[start : start + MAX_STATIC_BATCH], dtype=np.float32) for c in crops]
            batch = len(chunk[0])
            request = self._acquire(batch)
            try:
                request.infer(dict(zip(self.input_names, chunk)))
                out.append(np.array(request.get_output_tensor(0).data, dtype=np.float64))  # a copy: reused buffer
            finally:
                self._release(batch, request)
        return np.concatenate(out).reshape(n, -1) if out else np.zeros((0, self.num_classes))


def pad_runner(net: PadNet, runtime: str = "openvino") -> OpenVinoPadRunner | OpenCvPadRunner | TorchPadRunner:
    """The runner ``runtime`` names; ``openvino`` falls back to OpenCV's DNN (one warning naming why)
    where openvino is missing or cannot compile the graph."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown PAD runtime {runtime!r} (known: {RUNTIMES})")
    if runtime == "torch":
        return TorchPadRunner(net)
    if runtime == "openvino":
        try:
            return OpenVinoPadRunner(net)
        except Exception as exc:  # noqa: BLE001 - any failure to load or compile: the OpenCV path serves
            _warn_fallback(f"{type(exc).__name__}: {exc}")
    return OpenCvPadRunner(net)


_warned: set[str] = set()


def _warn_fallback(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        logger.warning("PAD runs on OpenCV's DNN instead of OpenVINO (%s)", reason)


class TorchPadRunner:
    """The same contract in eager torch: the reference for tests, and the fallback where OpenCV cannot
    parse a graph."""

    def __init__(self, net: PadNet) -> None:
        self.net = net.eval()

    @torch.inference_mode()
    def __call__(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return self.net(*[torch.from_numpy(np.ascontiguousarray(c, dtype=np.float32)) for c in crops]).double().numpy()
