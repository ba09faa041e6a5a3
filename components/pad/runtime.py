"""PAD inference through OpenCV's DNN module: the torch network exported once to ONNX, in memory.

Why not torch: a MiniFASNet is ~100 tiny layers on an 80x80 input, and at batch 1 eager torch spends its
time dispatching them (8-16 ms per model on one thread here); OpenCV's classic DNN engine runs the same
graph in ~1.7 ms, which is what lets PAD add at most a few milliseconds to ``identify``. Outputs match
torch to 1e-6 (tests/unit/pad/test_runtime.py). Both members of a pair are one graph, one call.

A ``cv2.dnn.Net`` holds per-run state (``setInput``/``forward``), so each thread gets its own copy of the
parsed network (the API runs requests on several threads).
"""
from __future__ import annotations

import io
import threading
import warnings

import cv2
import numpy as np
import torch

from facegate.components.pad.minifasnet import PadNet


def export_onnx(net: PadNet) -> bytes:
    """``net`` (eval mode) as ONNX bytes, inputs ``crop0..cropN-1`` of shape ``Bx3xHxW`` (B free)."""
    net = net.eval()
    dummies = tuple(torch.zeros(1, 3, *s.input_hw) for s in net.specs)
    names = [f"crop{i}" for i in range(len(dummies))]
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter warns it is legacy; the new one needs onnxscript
        torch.onnx.export(net, dummies, buffer, dynamo=False, opset_version=13, input_names=names,
                          output_names=["probs"], dynamic_axes={n: {0: "batch"} for n in names + ["probs"]})
    return buffer.getvalue()


class OpenCvPadRunner:
    """Runs a PadNet's ONNX export with OpenCV's classic DNN engine; one parsed network per thread."""

    def __init__(self, net: PadNet) -> None:
        self.input_names = [f"crop{i}" for i in range(len(net.specs))]
        self._onnx = np.frombuffer(export_onnx(net), np.uint8)
        self._local = threading.local()
        self._net()  # parse now: a graph OpenCV cannot read fails at load, not at the first face

    def _net(self):
        net = getattr(self._local, "net", None)
        if net is None:
            net = self._local.net = cv2.dnn.readNetFromONNX(self._onnx, engine=cv2.dnn.ENGINE_CLASSIC)
        return net

    def __call__(self, crops: list[np.ndarray]) -> np.ndarray:
        """Fused 3-way probabilities, ``Nx3`` float64, for ``Nx3xHxW`` float32 batches (one per member)."""
        net = self._net()
        for name, batch in zip(self.input_names, crops):
            net.setInput(batch, name)
        return np.asarray(net.forward(), dtype=np.float64).reshape(len(crops[0]), -1)


class TorchPadRunner:
    """The same contract in eager torch: the reference for tests, and the fallback where OpenCV cannot
    parse a graph."""

    def __init__(self, net: PadNet) -> None:
        self.net = net.eval()

    @torch.inference_mode()
    def __call__(self, crops: list[np.ndarray]) -> np.ndarray:
        return self.net(*[torch.from_numpy(c) for c in crops]).double().numpy()
