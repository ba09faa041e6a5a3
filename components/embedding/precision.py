"""The number format the embedders infer in: float32, or bfloat16 where the CPU multiplies it natively.

Why: on CPUs with AMX / AVX512-BF16 (Sapphire Rapids and later) oneDNN runs bfloat16 convolutions on
the matrix units, about twice as fast per face as float32 for dlib's ResNet and SFace, while the
embeddings stay within cosine 0.9995 of float32 ones (tests/unit/test_precision.py holds it on real
chips; `facegate bench lfw` measures the accuracy in service). Elsewhere bfloat16 is emulated and slower,
so ``auto`` means bfloat16 only where it is native. Training never sees it: only the inference copies
(facegate.components.embedding.folding, eval mode without autograd) are cast; parameters, gradients, checkpoints
and the weight fingerprint stay float32.
"""

from __future__ import annotations

from functools import cache
from typing import TypeVar

import torch

PRECISIONS = ("auto", "float32", "bfloat16")

M = TypeVar("M", bound=torch.nn.Module)


@cache
def native_bfloat16() -> bool:
    """The CPU has bfloat16 arithmetic in hardware (AMX tiles or AVX512-BF16), as oneDNN uses it."""
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # a torch without these probes: assume emulation
        return False


def inference_dtype(precision: str, device: torch.device | str = "cpu") -> torch.dtype:
    """``precision`` (auto | float32 | bfloat16) on ``device`` as the dtype inference copies compute in.

    GPUs keep float32 (their measured paths are float32); ``bfloat16`` asked for explicitly is honoured on
    any CPU (emulated where not native); ``auto`` is bfloat16 on a CPU with native support."""
    if precision not in PRECISIONS:
        raise ValueError(f"embedding.precision: {precision!r} is not one of {' | '.join(PRECISIONS)}")
    if torch.device(device).type != "cpu" or precision == "float32":
        return torch.float32
    if precision == "bfloat16" or native_bfloat16():
        return torch.bfloat16
    return torch.float32


def set_precision(model: M, precision: str) -> M:
    """Every backbone inside ``model`` infers at ``precision`` (checked now); returns ``model``."""
    inference_dtype(precision)
    for module in model.modules():
        if hasattr(module, "precision") and hasattr(module, "inference_dtype"):
            # nn.Module.__setattr__ is typed Tensor | Module; it takes any value
            module.precision = precision  # type: ignore[assignment]
    return model
