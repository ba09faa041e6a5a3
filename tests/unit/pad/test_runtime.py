"""The served paths (OpenVINO, and OpenCV's DNN as its fallback, on the ONNX export) give the torch
network's numbers, in batches (OpenVINO: static batches of at most MAX_STATIC_BATCH, chunked) and threads."""

from __future__ import annotations

import threading
import typing

import numpy as np
import pytest
import torch

from facegate.components.core.settings import PadSettings
from facegate.components.pad import runtime
from facegate.components.pad.minifasnet import V1SE_SPEC, V2_SPEC, PadNet
from facegate.components.pad.runtime import (
    MAX_STATIC_BATCH,
    RUNTIMES,
    OpenCvPadRunner,
    OpenVinoPadRunner,
    TorchPadRunner,
    pad_runner,
)


def _pair_and_crops(n: int) -> tuple[PadNet, list[np.ndarray]]:
    torch.manual_seed(0)
    net = PadNet((V2_SPEC, V1SE_SPEC)).eval()
    rng = np.random.default_rng(0)
    return net, [rng.uniform(0, 255, (n, 3, 80, 80)).astype(np.float32) for _ in range(2)]


def _one_per_thread(runner, crops: list[np.ndarray], n: int) -> np.ndarray:
    out: dict[int, np.ndarray] = {}

    def run(i: int) -> None:
        out[i] = runner([c[i : i + 1] for c in crops])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return np.concatenate([out[i] for i in range(n)])


@pytest.mark.parametrize("runner_class", [OpenCvPadRunner, OpenVinoPadRunner])
def test_served_runtimes_match_torch_in_batches_and_threads(runner_class) -> None:
    n = MAX_STATIC_BATCH + 2  # OpenVINO: one full static batch and a chunk of two
    net, crops = _pair_and_crops(n)
    reference = TorchPadRunner(net)(crops)
    runner = runner_class(net)
    first = runner([c[:1] for c in crops])  # batch of one
    np.testing.assert_allclose(runner(crops), reference, atol=1e-5)
    np.testing.assert_allclose(first, reference[:1], atol=1e-5)  # a copy: not overwritten by the next call
    np.testing.assert_allclose(_one_per_thread(runner, crops, n), reference, atol=1e-5)
    assert runner([c[:0] for c in crops]).shape == (0, 3)
    if isinstance(runner, OpenVinoPadRunner):  # six threads at once: no more compiled copies than cores
        assert 1 <= runner._copies[1] <= runner.max_copies and runner._copies[MAX_STATIC_BATCH] == 1


def test_single_member_runner() -> None:
    torch.manual_seed(1)
    net = PadNet((V2_SPEC,)).eval()
    crops = [np.random.default_rng(1).uniform(0, 255, (2, 3, 80, 80)).astype(np.float32)]
    reference = TorchPadRunner(net)(crops)
    for runner in (OpenCvPadRunner(net), OpenVinoPadRunner(net)):
        probs = runner(crops)
        assert probs.shape == (2, 3) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
        np.testing.assert_allclose(probs, reference, atol=1e-5)


def test_runner_choice_and_fallback(monkeypatch, caplog) -> None:
    assert set(typing.get_args(PadSettings.model_fields["runtime"].annotation)) == set(RUNTIMES)
    net = PadNet((V2_SPEC,)).eval()
    assert isinstance(pad_runner(net, "torch"), TorchPadRunner)
    with pytest.raises(ValueError, match="unknown PAD runtime 'tflite'"):
        pad_runner(net, "tflite")

    def broken(net) -> None:
        raise ImportError("No module named 'openvino'")

    monkeypatch.setattr(runtime, "OpenVinoPadRunner", broken)
    monkeypatch.setattr(runtime, "_warned", set())
    with caplog.at_level("WARNING", logger=runtime.__name__):
        assert isinstance(pad_runner(net, "openvino"), OpenCvPadRunner)
    assert "OpenCV's DNN instead of OpenVINO" in caplog.text and "No module named" in caplog.text
