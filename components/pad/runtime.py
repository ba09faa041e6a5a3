"""PAD inference through OpenCV's DNN module: the torch network exported once to ONNX, in memory.

Why not torch: a MiniFASNet is ~100 tiny layers on an 80x80 input, and at batch 1 eager torch spends its
time dispatching them (8-16 ms per model on one thread here); OpenCV's classic DNN engine runs the same
graph in ~1.7 ms, which is what lets PAD add only a few milliseconds to ``identify``. Outputs match
torch to 1e-6 (tests/unit/pad/test_runtime.py). Both members of a pair are one graph, one call.

A ``cv2.dnn.Net`` holds per-run state (``setInput``/``forward``), so each thread gets its own copy of the
parsed network (the API runs requests on several threads).
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Sequence
from typing import Any, cast

import cv2
import numpy as np
import torch
from torch import nn

from facegate.components.pad.minifasnet import PadNet


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

    def __call__(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return super().__call__(crops).astype(np.float64).reshape(len(crops[0]), -1)


class TorchPadRunner:
    """The same contract in eager torch: the reference for tests, and the fallback where OpenCV cannot
    parse a graph."""

    def __init__(self, net: PadNet) -> None:
        self.net = net.eval()

    @torch.inference_mode()
    def __call__(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return self.net(*[torch.from_numpy(np.ascontiguousarray(c, dtype=np.float32)) for c in crops]).double().numpy()
