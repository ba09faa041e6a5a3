"""The torch device choice (components/core/devices.py): auto, cpu and cuda on a machine without a GPU, and
the GPU branches with the GPU count given (they run on CPU-only CI as well)."""

import pytest
import torch

from facegate.components.core.devices import cuda_device_count, loader_options, resolve_torch_device
from facegate.components.core.errors import DeviceUnavailable, SettingsError
from facegate.components.core.settings import load_settings
from tests.conftest import requires_gpu


def test_auto_is_the_cpu_without_a_gpu():
    assert resolve_torch_device("auto", gpus=0) == torch.device("cpu")
    assert resolve_torch_device("cpu", gpus=2) == torch.device("cpu")


@pytest.mark.skipif(cuda_device_count() > 0, reason="this machine has a GPU: auto picks it")
def test_auto_here_is_the_cpu():
    assert resolve_torch_device("auto").type == "cpu"
    assert loader_options(resolve_torch_device("auto")) == {"pin_memory": False}


def test_auto_takes_the_first_gpu_when_there_is_one():
    assert resolve_torch_device("auto", gpus=1) == torch.device("cuda", 0)
    assert resolve_torch_device("cuda", gpus=2) == torch.device("cuda", 0)
    assert resolve_torch_device("cuda:1", gpus=2) == torch.device("cuda", 1)


@pytest.mark.skipif(cuda_device_count() > 0, reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_typed_error_naming_the_setting():
    with pytest.raises(DeviceUnavailable, match=r"^embedding\.device: cuda, but torch sees no CUDA GPU"):
        resolve_torch_device("cuda")
    with pytest.raises(DeviceUnavailable, match=r"^train\.device: cuda"):
        resolve_torch_device("cuda", key="train.device", gpus=0)


def test_a_gpu_index_past_the_last_gpu_is_refused():
    with pytest.raises(DeviceUnavailable, match=r"cuda:2, but torch sees only 2 CUDA GPU"):
        resolve_torch_device("cuda:2", gpus=2)


def test_unknown_values_are_settings_errors():
    with pytest.raises(SettingsError, match=r"embedding\.device: 'tpu' is not one of auto \| cpu \| cuda"):
        resolve_torch_device("tpu")
    with pytest.raises(SettingsError, match=r"embedding\.device"):
        load_settings(overrides={"embedding": {"device": "gpu"}})


def test_params_default_is_auto():
    assert load_settings().embedding.device == "auto"


@requires_gpu
def test_cuda_runs_a_model_on_the_gpu():
    device = resolve_torch_device("cuda")
    x = torch.ones(4, 8, device=device)
    assert (torch.nn.Linear(8, 2).to(device)(x)).device.type == "cuda"
