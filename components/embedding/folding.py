"""Inference-time copies of trainable networks: BatchNorm folded into the layer next to it.

Why: at inference a BatchNorm is a per-channel affine map, so it can live inside the convolution
before it (or the linear layer after it) and cost nothing; on 2 CPU cores the separate BN passes,
and PyTorch's single-threaded path for small-batch 1x1 convolutions, made the SFace port several
times slower than its arithmetic. Training keeps the module with its BatchNorms: the folded copy
is built from it when it is asked for in eval mode without autograd, is cached beside it (never
inside it, so ``state_dict``, the weight fingerprint and pickling are unchanged), and is rebuilt
whenever a parameter or buffer of the original changes (optimiser steps, ``load_state_dict``,
``.to(device)``).
"""

from __future__ import annotations

import copy
import hashlib
import threading
import weakref
from collections.abc import Callable
from typing import TypeVar, cast

import torch
from torch import Tensor, nn

M = TypeVar("M", bound=nn.Module)
C = TypeVar("C", bound=nn.Module)


def weights_fingerprint(module: nn.Module) -> str:
    """Content hash of ``module``'s weights (its state dict, by name): equal fingerprints embed identically.
    The model fingerprint (facegate.components.recognition.recognizer.model_fingerprint) and the OpenVINO
    IR cache's key (facegate.components.embedding.openvino_runtime) are this hash."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def running_stats(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """(running mean, running var) of ``bn``: what its eval-mode affine map is made of."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"{bn} keeps no running statistics: there is no eval-mode map to fold")
    return bn.running_mean, bn.running_var


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """``bn(conv(x))`` in eval mode as one convolution with a bias (folded in float64)."""
    running_mean, running_var = running_stats(bn)
    s = bn.weight.double() / torch.sqrt(running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(s)
    # torch types _ConvNd's sizes tuple[int, ...]; a Conv2d's are pairs
    kernel, stride, dilation = (cast("tuple[int, int]", v) for v in (conv.kernel_size, conv.stride, conv.dilation))
    padding = cast("str | tuple[int, int]", conv.padding)
    out = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        kernel,
        stride,
        padding,
        dilation,
        conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    )
    out = out.to(device=conv.weight.device, dtype=conv.weight.dtype)
    assert out.bias is not None  # built with bias=True
    out.weight.copy_(conv.weight.double() * s.view(-1, *([1] * (conv.weight.dim() - 1))))
    out.bias.copy_((bias - running_mean.double()) * s + bn.bias.double())
    return out.eval().requires_grad_(False)


@torch.no_grad()
def fold_bn_linear(bn: nn.BatchNorm2d, linear: nn.Linear) -> nn.Linear:
    """``linear(flatten(bn(x)))`` in eval mode as one linear layer (x: N x C x H x W, NCHW flatten order)."""
    running_mean, running_var = running_stats(bn)
    s = bn.weight.double() / torch.sqrt(running_var.double() + bn.eps)
    t = bn.bias.double() - running_mean.double() * s
    spatial = linear.in_features // bn.num_features
    if spatial * bn.num_features != linear.in_features:
        raise ValueError(f"{linear.in_features} inputs are not {bn.num_features} channels x a spatial map")
    w = linear.weight.double()
    bias = linear.bias.double() if linear.bias is not None else torch.zeros(linear.out_features, dtype=torch.float64)
    out = nn.Linear(linear.in_features, linear.out_features, bias=True).to(linear.weight.device, linear.weight.dtype)
    out.weight.copy_(w * s.repeat_interleave(spatial))
    out.bias.copy_(bias + w @ t.repeat_interleave(spatial))
    return out.eval().requires_grad_(False)


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # an inference tensor (made under inference_mode) cannot be written in place
        return -1


def _state_key(module: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer of ``module`` is written or moved."""
    return tuple((t.data_ptr(), _version(t), t.device.type, t.dtype) for t in (*module.parameters(), *module.buffers()))


_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> {variant: (state key, copy)}
_LOCK = threading.Lock()


def use_inference_copy(module: nn.Module) -> bool:
    """Eval mode and no autograd: the folded copy computes the same function (up to float rounding)."""
    return not module.training and not torch.is_grad_enabled()


def inference_copy(module: M, build: Callable[[M], C], variant: object = None) -> C:
    """``build(module)``, cached per module and ``variant`` (e.g. the dtype it computes in) and rebuilt
    when the module's weights change; thread-safe."""
    key = _state_key(module)
    hit = _COPIES.get(module, {}).get(variant)
    if hit is not None and hit[0] == key:
        return hit[1]
    with _LOCK:
        copies = _COPIES.setdefault(module, {})
        hit = copies.get(variant)
        if hit is None or hit[0] != key:
            with torch.no_grad():
                hit = (key, build(module).eval().requires_grad_(False))
            copies[variant] = hit
    return hit[1]


def channels_last_copy(module: M, dtype: torch.dtype = torch.float32) -> M:
    """A copy in ``dtype`` with 4-d weights in channels-last memory: oneDNN then convolves channels-last
    maps without reordering the weights on every call (and max-pools them on its fast path)."""
    # Module.to's stubs lack memory_format (its runtime signature takes it)
    return copy.deepcopy(module).to(dtype=dtype, memory_format=torch.channels_last)  # type: ignore[call-overload]
