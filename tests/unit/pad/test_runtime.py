"""The served path (OpenCV's DNN on the ONNX export) gives the torch network's numbers."""

from __future__ import annotations

import threading

import numpy as np
import torch

from facegate.components.pad.minifasnet import V1SE_SPEC, V2_SPEC, PadNet
from facegate.components.pad.runtime import OpenCvPadRunner, TorchPadRunner


def test_opencv_matches_torch_in_batches_and_threads() -> None:
    torch.manual_seed(0)
    net = PadNet((V2_SPEC, V1SE_SPEC)).eval()
    rng = np.random.default_rng(0)
    crops = [rng.uniform(0, 255, (5, 3, 80, 80)).astype(np.float32) for _ in range(2)]
    reference = TorchPadRunner(net)(crops)
    runner = OpenCvPadRunner(net)
    np.testing.assert_allclose(runner(crops), reference, atol=1e-5)
    np.testing.assert_allclose(runner([c[:1] for c in crops]), reference[:1], atol=1e-5)  # batch of one
    out: dict[int, np.ndarray] = {}

    def run(i: int) -> None:
        out[i] = runner([c[i : i + 1] for c in crops])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_allclose(np.concatenate([out[i] for i in range(5)]), reference, atol=1e-5)


def test_single_member_runner() -> None:
    torch.manual_seed(1)
    net = PadNet((V2_SPEC,)).eval()
    crops = [np.random.default_rng(1).uniform(0, 255, (2, 3, 80, 80)).astype(np.float32)]
    probs = OpenCvPadRunner(net)(crops)
    assert probs.shape == (2, 3) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, TorchPadRunner(net)(crops), atol=1e-5)
