"""Where torch runs: the ``embedding.device`` setting (auto | cpu | cuda) as a ``torch.device``.

One rule for training and embedding, mirroring ``gallery.device`` for FAISS
(``facegate.components.gallery.index_kinds.resolve_faiss_device``): ``auto`` takes the first CUDA GPU when torch
sees one and the CPU otherwise; ``cpu`` is always the CPU; ``cuda`` (or ``cuda:N``) without a usable
GPU is a configuration error (``DeviceUnavailable``, naming the setting), never a silent CPU
fallback, so a deployment that expects GPU speed learns at start that it has none.

The caller moves its model and batches: ``model.to(device)``, ``batch.to(device, non_blocking=True)``,
and results back with ``.cpu()``; ``loader_options(device)`` gives the matching DataLoader options.
"""

from __future__ import annotations

import re

from facegate.components.core.errors import DeviceUnavailable, SettingsError

TORCH_DEVICES = ("auto", "cpu", "cuda")
DEFAULT_KEY = "embedding.device"
# the values settings accept (components/core/settings.py checks the spelling; availability is checked here)
TORCH_DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"
_CUDA_INDEX = re.compile(r"^cuda:(\d+)$")


def cuda_device_count() -> int:
    """GPUs torch can use here (0 with a CPU build of torch, or when CUDA fails to initialise)."""
    import torch  # heavy: torch loads ~1 s of native code; only the paths that run a model need it

    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except (RuntimeError, AssertionError):  # a CPU build or a broken driver: no GPU to use
        return 0


def resolve_torch_device(setting: str, *, key: str = DEFAULT_KEY, gpus: int | None = None):
    """``setting`` (auto | cpu | cuda | cuda:N) as the ``torch.device`` to run on.

    ``key`` names the setting in errors; ``gpus`` overrides the detected GPU count (tests, or a caller
    that already knows). An unknown value is a ``SettingsError``; a GPU asked for but not there is a
    ``DeviceUnavailable``.
    """
    import torch  # heavy: torch loads ~1 s of native code; only the paths that run a model need it

    value = str(setting).strip().lower()
    index = _CUDA_INDEX.match(value)
    if value not in TORCH_DEVICES and not index:
        raise SettingsError(f"{key}: {setting!r} is not one of {' | '.join(TORCH_DEVICES)} (or cuda:N)")
    if value == "cpu":
        return torch.device("cpu")
    count = cuda_device_count() if gpus is None else gpus
    if value == "auto":
        return torch.device("cuda", 0) if count > 0 else torch.device("cpu")
    wanted = int(index.group(1)) if index else 0
    if count == 0:
        raise DeviceUnavailable(
            f"{key}: {setting}, but torch sees no CUDA GPU here "
            f"({'a CPU build of torch' if not torch.backends.cuda.is_built() else 'no device visible'}); "
            "set cpu or auto"
        )
    if wanted >= count:
        raise DeviceUnavailable(f"{key}: {setting}, but torch sees only {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})")
    return torch.device("cuda", wanted)


def module_device(module):
    """The device a module's weights sit on (the CPU for a module without parameters): embedding code
    follows its model, so whoever places the model decides where the batches go."""
    import torch  # heavy: torch loads ~1 s of native code; only the paths that run a model need it

    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def loader_options(device) -> dict:
    """DataLoader options that fit ``device``: pinned host memory feeds a GPU faster."""
    return {"pin_memory": device.type == "cuda"}


def describe(device) -> str:
    """``cpu`` or ``cuda:0 (NVIDIA H200)``, for logs and MLflow tags."""
    if device.type != "cuda":
        return str(device)
    import torch  # heavy: torch loads ~1 s of native code; only the paths that run a model need it

    return f"{device} ({torch.cuda.get_device_name(device)})"
