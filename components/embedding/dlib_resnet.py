"""dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1``) as a plain torch module.

Why: the same 128-d descriptor as ``dlib.face_recognition_model_v1`` but batched, threaded by torch and
usable on GPU, with weights read straight from dlib's ``.dat`` (see :mod:`.dlib_dat`).

Network (``anet_type`` in dlib's face_recognition.cpp): conv7x7/2 + affine + relu + maxpool3x3/2, then
residual blocks ``relu(x + affine(conv(relu(affine(conv(x))))))``; the downsampling ones use a stride-2
first conv and add ``avg_pool2x2/2(x)`` instead of ``x``. dlib's ``add_prev`` adds tensors of different
shapes by zero-padding the smaller one (channels, and also rows/cols: at 8x8 -> 3x3 vs 4x4 and at
4x4 -> 1x1 vs 2x2 the conv branch is padded bottom/right), so that is reproduced here. Then a global
average pool and a 128-output fc without bias. The output is NOT normalised (dlib's descriptor is raw);
use :func:`l2_normalize` when a unit vector is wanted.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .dlib_dat import (
    AddPrev,
    Affine,
    Con,
    DlibFormatError,
    DlibNet,
    Fc,
    LayerRecord,
    Pool,
    Relu,
    TagOrSkip,
    parse_dlib_dat,
)

__all__ = [
    "DlibResNet",
    "default_model_path",
    "face_recognition_models_file",
    "l2_normalize",
    "load_dlib_resnet",
]


def face_recognition_models_file(name: str) -> Path:
    """A file in the ``face_recognition_models`` package's ``models/`` folder.

    Located with ``find_spec`` instead of importing the package: its ``__init__`` needs
    ``pkg_resources``, which setuptools >= 82 no longer ships.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package face_recognition_models is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found in face_recognition_models")
    return path


def default_model_path() -> Path:
    """``dlib_face_recognition_resnet_model_v1.dat`` shipped in ``face_recognition_models``."""
    return face_recognition_models_file("dlib_face_recognition_resnet_model_v1.dat")


def l2_normalize(descriptors: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Unit-length rows; kept separate because dlib's own descriptor (and its 0.6 threshold) is raw."""
    return descriptors / descriptors.norm(dim=-1, keepdim=True).clamp_min(eps)


class _Affine(nn.Module):
    """``y = gamma * x + beta`` (dlib's inference-time batch norm) when it cannot be folded into a conv."""

    gamma: torch.Tensor  # buffers (register_buffer in __init__)
    beta: torch.Tensor

    def __init__(self, rec: Affine) -> None:
        super().__init__()
        self.register_buffer("gamma", torch.from_numpy(rec.gamma.copy()).unsqueeze(0))
        self.register_buffer("beta", torch.from_numpy(rec.beta.copy()).unsqueeze(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.beta, x, self.gamma)


class _Pool(nn.Module):
    """dlib pooling: floor output size; padding ignored in max/mean (the window is clipped)."""

    def __init__(self, rec: Pool) -> None:
        super().__init__()
        self.kind, self.nr, self.nc = rec.kind, rec.nr, rec.nc
        self.stride, self.padding = rec.stride, rec.padding

    def extra_repr(self) -> str:
        size = "whole input" if self.nr == 0 and self.nc == 0 else f"{self.nr}x{self.nc}"
        return f"{self.kind}, {size}, stride={self.stride}, padding={self.padding}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.nr == 0 and self.nc == 0 and self.padding == (0, 0):
            return x.mean(dim=(2, 3), keepdim=True)  # avg_pool_everything
        kernel = (self.nr or x.shape[2], self.nc or x.shape[3])
        if self.kind == "max":
            return F.max_pool2d(x, kernel, self.stride, self.padding)
        return F.avg_pool2d(x, kernel, self.stride, self.padding, count_include_pad=False)


def _add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``tt::add(dest, a, b)``: dest has the max of each dim, missing values count as 0."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class _Residual(nn.Module):
    """``relu(shortcut(x) + body(x))`` with ``shortcut`` identity or dlib's avg-pool downsampling."""

    def __init__(self, body: nn.Sequential, shortcut: nn.Module | None, post_relu: bool) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut
        self.post_relu = post_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        y = _add_zero_padded(skip, self.body(x))
        return F.relu(y) if self.post_relu else y


def _conv(rec: Con, affine: Affine | None) -> nn.Sequential:
    """A conv (optionally with the following affine folded into its weights, in float64)."""
    out_c, in_c, kh, kw = rec.filters.shape
    w = rec.filters.astype(np.float64)
    b = np.zeros(out_c) if rec.bias is None else rec.bias.astype(np.float64)
    has_bias = rec.bias is not None
    if affine is not None:
        g = affine.gamma.reshape(-1).astype(np.float64)
        w = w * g[:, None, None, None]
        b = b * g + affine.beta.reshape(-1).astype(np.float64)
        has_bias = True
    conv = nn.Conv2d(in_c, out_c, (kh, kw), stride=rec.stride, padding=rec.padding, bias=has_bias)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w.astype(np.float32)))
        if conv.bias is not None:  # built with bias=has_bias
            conv.bias.copy_(torch.from_numpy(b.astype(np.float32)))
    mods: list[nn.Module] = [conv]
    if rec.fused_relu:
        mods.append(nn.ReLU(inplace=True))
    return nn.Sequential(*mods)


def _sequential(records: list[LayerRecord], fuse_affine: bool, net: DlibNet) -> nn.Sequential:
    """Straight-line records (conv/affine/relu/pool/fc) as modules."""
    mods: list[nn.Module] = []
    i = 0
    while i < len(records):
        rec = records[i]
        if isinstance(rec, Con):
            nxt = records[i + 1] if i + 1 < len(records) else None
            fold = fuse_affine and isinstance(nxt, Affine) and nxt.conv_mode and not nxt.disabled and not rec.fused_relu
            mods.extend(_conv(rec, nxt if fold else None))  # type: ignore[arg-type]
            i += 2 if fold else 1
            continue
        if isinstance(rec, Affine):
            if not rec.disabled:
                mods.append(_Affine(rec))
        elif isinstance(rec, Relu):
            mods.append(nn.ReLU(inplace=True))
        elif isinstance(rec, Pool):
            mods.append(_Pool(rec))
        elif isinstance(rec, Fc):
            lin = nn.Linear(rec.weights.shape[0], rec.weights.shape[1], bias=rec.bias is not None)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(rec.weights.T)))
                if rec.bias is not None:
                    lin.bias.copy_(torch.from_numpy(rec.bias))
            mods.extend([nn.Flatten(), lin])
        else:
            raise DlibFormatError(net.source, rec.offset, f"{type(rec).__name__} outside a residual block pattern")
        i += 1
    return nn.Sequential(*mods)


class DlibResNet(nn.Module):
    """dlib's metric-learning ResNet. Input N x 3 x H x W RGB in 0..255 (uint8 or float); output N x 128 raw.

    Built from parsed records: ``stem`` (everything before the first tag), residual blocks recognised
    by dlib's ``residual`` / ``residual_down`` record patterns (tag ids are not stored in the file),
    then ``head`` (global average + fc). ``fuse_affine`` folds each affine into its conv (faster; same
    result up to float rounding).
    """

    mean: torch.Tensor  # a buffer (register_buffer in __init__)

    def __init__(self, net: DlibNet, fuse_affine: bool = True) -> None:
        super().__init__()
        self.source = net.source
        self.input_size = (net.input.nr, net.input.nc)
        mean = torch.tensor(net.input.avg_rgb, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("mean", mean)
        recs = net.layers
        first_tag = next((i for i, r in enumerate(recs) if isinstance(r, TagOrSkip)), len(recs))
        self.stem = _sequential(recs[:first_tag], fuse_affine, net)
        blocks: list[nn.Module] = []
        i = first_tag
        while i < len(recs) and isinstance(recs[i], TagOrSkip):
            block, i = self._match_block(recs, i, fuse_affine, net)
            blocks.append(block)
        self.blocks = nn.Sequential(*blocks)
        self.head = _sequential(recs[i:], fuse_affine, net)
        layers = list(self.head) or list(self.stem)
        last = layers[-1] if layers else None
        if not isinstance(last, nn.Linear):
            raise DlibFormatError(net.source, recs[-1].offset if recs else 0, "network does not end in an fc layer")

    @staticmethod
    def _match_block(recs: list[LayerRecord], i: int, fuse: bool, net: DlibNet) -> tuple[_Residual, int]:
        """``T body AddPrev [Relu]`` or ``T body T T Pool(avg) AddPrev [Relu]`` starting at ``recs[i]``."""
        start = recs[i].offset
        j = i + 1
        while j < len(recs) and not isinstance(recs[j], (TagOrSkip, AddPrev)):
            j += 1
        body = _sequential(recs[i + 1 : j], fuse, net)
        tail = recs[j : j + 4]
        shortcut: nn.Module | None
        if tail and isinstance(tail[0], AddPrev):
            shortcut, k = None, j + 1
        elif (
            len(tail) == 4
            and isinstance(tail[0], TagOrSkip)
            and isinstance(tail[1], TagOrSkip)
            and isinstance(tail[2], Pool)
            and tail[2].kind == "avg"
            and isinstance(tail[3], AddPrev)
        ):
            shortcut, k = _Pool(tail[2]), j + 4
        else:
            raise DlibFormatError(
                net.source, start, "records after this tag match neither dlib's residual nor residual_down pattern"
            )
        post_relu = k < len(recs) and isinstance(recs[k], Relu)
        return _Residual(body, shortcut, post_relu), k + int(post_relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # input_rgb_image_sized::to_tensor: (pixel - avg) / 256, in float32
        x = (x.to(torch.float32) - self.mean) / 256.0
        return self.head(self.blocks(self.stem(x)))


def load_dlib_resnet(path: str | Path | None = None, *, fuse_affine: bool = True) -> DlibResNet:
    """Parse dlib's ``.dat`` (default: the one in ``face_recognition_models``) into an eval-mode module."""
    net = parse_dlib_dat(default_model_path() if path is None else path)
    model = DlibResNet(net, fuse_affine=fuse_affine)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
