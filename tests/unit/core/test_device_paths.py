"""Training and embedding on the resolved torch device (components/core/devices.py), checked on the CPU:
device=cpu trains to exactly the default path's weights, a GPU asked for but missing fails at config
time naming the setting (the CLI: one line, before Prefect or any data), and the GPU benchmark script
refuses to run without CUDA. The ``requires_gpu`` tests run the same steps on a GPU where there is one."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from facegate.components.core.devices import cuda_device_count, module_device
from facegate.components.core.errors import DeviceUnavailable
from facegate.components.core.paths import repo_root
from facegate.components.core.settings import load_settings
from facegate.components.detection.train import DetectTrainConfig
from facegate.components.embedding.backbones import Backbone
from facegate.components.embedding.model import EmbeddingModel, embed_chips
from facegate.components.embedding.train import TrainConfig, train_finetune, train_head
from tests.conftest import requires_gpu

NO_GPU = pytest.mark.skipif(cuda_device_count() > 0, reason="this machine has a GPU")
LABELS = np.repeat(np.arange(4), 3)  # 4 identities x 3 images: P x K batches of 2 x 2


class TinyBackbone(Backbone):
    """Two conv stages on 16x16 chips, 8 pooled features: a real network small enough for a unit test."""

    name = "tiny"
    feature_dim = 8
    input_size = 16

    def __init__(self) -> None:
        super().__init__()
        self.s1 = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.s2 = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())

    def preprocess(self, chips: torch.Tensor) -> torch.Tensor:
        return chips.permute(0, 3, 1, 2).to(torch.float32) / 255.0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.s2(self.s1(x)).mean(dim=(2, 3))

    def stages(self) -> list[nn.Module]:
        return [self.s1, self.s2]


def tiny_model(seed: int = 0) -> EmbeddingModel:
    torch.manual_seed(seed)
    return EmbeddingModel(TinyBackbone())


def config(**overrides) -> TrainConfig:
    """Two P x K batches of one epoch; the default path unless ``device`` is given."""
    return TrainConfig.from_settings(
        load_settings(), p=2, k=2, epochs=1, batches_per_epoch=2, lr=1e-2, seed=3, finetune_stages=1, **overrides
    )


def assert_same_weights(a: nn.Module, b: nn.Module, exact: bool) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if exact:
            assert torch.equal(sa[key], sb[key]), key
        else:  # another device's kernels move the last bits
            torch.testing.assert_close(sa[key], sb[key], rtol=1e-4, atol=1e-5, msg=key)


def train_both(step, devices: tuple[str | None, str | None]) -> tuple[EmbeddingModel, EmbeddingModel, EmbeddingModel]:
    """The same tiny training step from the same start under two device settings (None: the default)."""
    start = tiny_model()
    models = [copy.deepcopy(start), copy.deepcopy(start)]
    for model, device in zip(models, devices):
        step(model, config() if device is None else config(device=device))
    return start, *models


def head_step(model: EmbeddingModel, cfg: TrainConfig) -> None:
    feats = np.random.default_rng(5).normal(size=(len(LABELS), 8)).astype(np.float32)
    history = train_head(model, feats, feats[:, ::-1].copy(), LABELS, cfg)
    assert len(history) == 1 and np.isfinite(history[0]["loss"])


def finetune_step(model: EmbeddingModel, cfg: TrainConfig) -> None:
    chips = np.random.default_rng(6).integers(0, 256, (len(LABELS), 16, 16, 3), dtype=np.uint8)
    history = train_finetune(model, chips, LABELS, cfg)
    assert len(history) == 1 and np.isfinite(history[0]["loss"])


@pytest.mark.parametrize("step", [head_step, finetune_step], ids=["head", "finetune"])
def test_device_cpu_trains_exactly_as_the_default_path(step):
    start, default, on_cpu = train_both(step, (None, "cpu"))
    assert config().device == ("cuda:0" if cuda_device_count() else "cpu")  # auto, resolved
    assert config(device="cpu").device == "cpu"
    assert_same_weights(default, on_cpu, exact=config().device == "cpu")
    assert not torch.equal(start.head.weight, on_cpu.head.weight)  # a step was taken
    assert module_device(default).type == module_device(on_cpu).type == "cpu"  # results come back


@NO_GPU
def test_cuda_without_a_gpu_fails_when_the_config_is_built():
    settings = load_settings(overrides={"embedding": {"device": "cuda"}, "detection": {"device": "cuda:1"}})
    with pytest.raises(DeviceUnavailable, match=r"^embedding\.device: cuda, but torch sees no CUDA GPU") as exc:
        TrainConfig.from_settings(settings)
    assert exc.value.code == "device_unavailable" and exc.value.http_status == 503
    with pytest.raises(DeviceUnavailable, match=r"^detection\.device: cuda:1, but torch sees no CUDA GPU"):
        DetectTrainConfig.from_settings(settings)
    with pytest.raises(DeviceUnavailable, match=r"^embedding\.device: cuda:0"):
        TrainConfig.from_settings(load_settings(), device="cuda:0")  # an override is checked the same way
    assert TrainConfig.from_settings(settings, device="cpu").device == "cpu"


def run_cli(
    tmp_path, *args: str, params: dict | None = None, module: str = "facegate.cli.main"
) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` with its own params, state and an empty datasets root; Prefect pointed
    at a port where nothing listens, so a command that got as far as a flow would fail differently."""
    raw = yaml.safe_load((repo_root() / "params.yaml").read_text())
    for section, values in (params or {}).items():
        raw[section].update(values)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "datasets").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "FACEGATE_PARAMS": str(tmp_path / "params.yaml"),
        "FACEGATE_HOME": str(tmp_path / "state"),
        "FACEGATE_DATASETS": str(tmp_path / "datasets"),
        "PREFECT_API_URL": "http://127.0.0.1:9/api",
    }
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=repo_root(), env=env, capture_output=True, text=True, timeout=180
    )


@NO_GPU
@pytest.mark.parametrize("command, key", [("train", "embedding"), ("train-detector", "detection")])
def test_cli_prints_a_missing_gpu_as_one_line(tmp_path, command, key):
    r = run_cli(tmp_path, command, params={key: {"device": "cuda"}})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error [device_unavailable]: {key}.device: cuda, but torch sees no CUDA GPU")
    assert not (tmp_path / "state" / "mlflow.db").exists()  # stopped before any run or data


@NO_GPU
def test_gpu_benchmark_exits_2_without_cuda(tmp_path):
    r = run_cli(tmp_path, module="facegate.benchmarks.gpu_paths")
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0], r.stderr


@requires_gpu
@pytest.mark.parametrize("step", [head_step, finetune_step], ids=["head", "finetune"])
def test_cuda_trains_as_the_cpu_does(step):
    _, on_cpu, on_gpu = train_both(step, ("cpu", "cuda"))
    assert module_device(on_gpu).type == "cpu"  # back on the CPU after training on the GPU
    assert_same_weights(on_cpu, on_gpu, exact=False)


@requires_gpu
def test_embedding_follows_the_model_to_the_gpu():
    model = tiny_model().eval()
    chips = np.random.default_rng(7).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    on_cpu = embed_chips(model, chips, flip_tta=True)
    on_gpu = embed_chips(copy.deepcopy(model).to("cuda"), chips, flip_tta=True)
    assert isinstance(on_gpu, np.ndarray) and on_gpu.dtype == np.float32
    np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-5)


def test_detector_device_cpu_trains_exactly_as_the_default_path():
    from facegate.components.detection.data import DetectionSample
    from facegate.components.detection.train import train_detector

    rng = np.random.default_rng(8)
    boxes, labels = np.array([[10, 12, 40, 44], [60, 20, 90, 58]], np.float32), np.array([0, 1])
    train = [
        DetectionSample(f"s{i}", rng.integers(0, 256, (96, 120, 3), dtype=np.uint8), boxes, labels) for i in range(4)
    ]
    knobs = dict(input_size=64, batch_size=2, frozen_epochs=1, frozen_copies=1, finetune_epochs=0, seed=3)
    default = train_detector(train, [], DetectTrainConfig.from_settings(load_settings(), **knobs)).model
    on_cpu = train_detector(train, [], DetectTrainConfig.from_settings(load_settings(), device="cpu", **knobs)).model
    assert module_device(default).type == module_device(on_cpu).type == "cpu"
    assert_same_weights(default, on_cpu, exact=cuda_device_count() == 0)
