"""MiniFASNet presentation-attack detection (PAD), ported to plain torch.

The two shipped classifiers come from minivision-ai's Silent-Face-Anti-Spoofing (Apache-2.0, commit
b6d5f04ad787; weights, LICENSE and the source's facts in ``<weights root>/minifasnet``). This module
rebuilds the network so the shipped state dicts load with ``strict=True``, reproduces the source's
face-crop geometry and input convention, and fuses several members the way the source's ``test.py``
does (softmax per model, averaged).

Conventions reproduced from the source (``src/generate_patches.py::CropImage``,
``src/anti_spoof_predict.py``, ``src/data_io/functional.py::to_tensor``):

* box: ``[x, y, w, h]`` integers, ``w = right - left + 1`` (:func:`source_box` from a FaceBox);
* crop: the box scaled by ``s`` (2.7 for V2, 4.0 for V1SE, from the file name) about its centre, ``s``
  capped so the crop fits the image, the crop *shifted* (not cut) back inside the image, corners
  truncated with ``int()``, slice inclusive of the bottom-right pixel;
* resize: ``cv2.resize`` to 80x80, bilinear;
* tensor: BGR channel order, float 0-255 (the source's ``to_tensor`` has its ``/255`` commented out),
  CHW, no mean/std;
* output: 3 logits; class 1 is *live*, classes 0 and 2 are attack kinds.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from facegate.components.core.errors import WeightFileError
from facegate.components.core.weights import ROOT_WEIGHTS, root_weight_path, sha256_file, verified_file
from facegate.components.faces.types import FaceBox

#: Index of the "live" class in the source's 3-way output (0 and 2 are attack kinds).
LIVE_CLASS: int = 1


@dataclass(frozen=True)
class ModelSpec:
    """Channel plan of one pruned MiniFASNet, plus how the source feeds it.

    The source stores a flat ``keep`` list of 49 numbers; here the same plan is written per block as the
    width of its expanded (depth-wise) layer, the only thing that varies. Output widths are fixed at
    64 / 128 / 128 per stage by the architecture. ``weights`` names the pinned file in
    ``facegate.components.core.weights.ROOT_WEIGHTS``.
    """

    name: str
    weights: str
    crop_scale: float
    input_hw: tuple[int, int]
    stem: int  # conv1 / conv2_dw width
    down_23: int  # expanded width of the stride-2 block before stage 3
    stage3: tuple[int, ...]  # expanded widths of the 4 residual blocks (64 channels)
    down_34: int
    stage4: tuple[int, ...]  # 6 residual blocks (128 channels)
    down_45: int
    stage5: tuple[int, ...]  # 2 residual blocks (128 channels)
    squeeze_excite: bool  # V1SE: SE on the last block of every residual stage
    drop_p: float  # only matters in training; kept for parity with the source
    embedding: int = 128
    num_classes: int = 3
    head_width: int = 512

    @property
    def conv6_kernel(self) -> tuple[int, int]:
        """The source's ``get_kernel``: the map left after 4 stride-2 steps, ceil(h/16) x ceil(w/16)."""
        h, w = self.input_hw
        return (h + 15) // 16, (w + 15) // 16

    @property
    def sha256(self) -> str:
        return ROOT_WEIGHTS[self.weights].sha256


# V2 is the source's keep_dict['1.8M_'] (no SE); V1SE is keep_dict['1.8M'] with SE.
V2_SPEC = ModelSpec(
    name="MiniFASNetV2",
    weights="minifasnet_v2",
    crop_scale=2.7,
    input_hw=(80, 80),
    stem=32,
    down_23=103,
    stage3=(13, 13, 13, 13),
    down_34=231,
    stage4=(231, 52, 26, 77, 26, 26),
    down_45=308,
    stage5=(26, 26),
    squeeze_excite=False,
    drop_p=0.2,
)
V1SE_SPEC = ModelSpec(
    name="MiniFASNetV1SE",
    weights="minifasnet_v1se",
    crop_scale=4.0,
    input_hw=(80, 80),
    stem=32,
    down_23=103,
    stage3=(13, 26, 13, 52),
    down_34=231,
    stage4=(154, 52, 26, 52, 26, 26),
    down_45=308,
    stage5=(26, 26),
    squeeze_excite=True,
    drop_p=0.75,
)


class ConvBNPReLU(nn.Module):
    """Bias-free conv, batch norm, per-channel PReLU (the source's ``Conv_block``)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int | tuple[int, int] = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.prelu = nn.PReLU(c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.prelu(self.bn(self.conv(x)))


class ConvBN(nn.Module):
    """Bias-free conv and batch norm, no activation (the source's ``Linear_block``)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int | tuple[int, int] = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class SqueezeExcite(nn.Module):
    """Channel gate: global average, 1x1 down (/4) + BN + ReLU, 1x1 up + BN, sigmoid, multiply.

    Unlike the common SE, both 1x1 convs are bias-free and followed by batch norm, as trained.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = channels // reduction
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        g = x.mean(dim=(2, 3), keepdim=True)
        g = torch.relu(self.bn1(self.fc1(g)))
        g = torch.sigmoid(self.bn2(self.fc2(g)))
        return x * g


class Bottleneck(nn.Module):
    """1x1 expand (PReLU), 3x3 depth-wise (PReLU), 1x1 linear projection; optional skip and SE.

    Attribute names (``conv``, ``conv_dw``, ``project``, ``se_module``) are the state-dict names.
    SE, when present, gates the projected branch before the skip is added.
    """

    def __init__(
        self, c_in: int, c_mid: int, c_out: int, stride: int, residual: bool, squeeze_excite: bool = False
    ) -> None:
        super().__init__()
        self.residual = residual
        self.conv = ConvBNPReLU(c_in, c_mid, 1)
        self.conv_dw = ConvBNPReLU(c_mid, c_mid, 3, stride, 1, groups=c_mid)
        self.project = ConvBN(c_mid, c_out, 1)
        self.se_module: SqueezeExcite | None = SqueezeExcite(c_out) if squeeze_excite else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.conv_dw(self.conv(x)))
        if not self.residual:
            return y
        if self.se_module is not None:
            y = self.se_module(y)
        return x + y


class ResidualStage(nn.Module):
    """Stride-1 residual bottlenecks at constant width; SE (if any) only on the last one."""

    def __init__(self, channels: int, mids: Sequence[int], squeeze_excite: bool) -> None:
        super().__init__()
        last = len(mids) - 1
        self.model = nn.Sequential(
            *[Bottleneck(channels, m, channels, 1, True, squeeze_excite and i == last) for i, m in enumerate(mids)]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class MiniFASNet(nn.Module):
    """MiniFASNet (pruned MobileFaceNet) returning 3 logits for an 80x80 BGR 0-255 crop.

    Spatial path for 80x80: 40 (conv1, stride 2) -> 20 -> 10 -> 5, then a 5x5 depth-wise conv
    (the "global depth-wise" head) to 1x1x512, a 512->128 linear + BN embedding, and a
    128->3 classifier. Submodule names follow the source so the shipped weights load strictly.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        se = spec.squeeze_excite
        self.conv1 = ConvBNPReLU(3, spec.stem, 3, 2, 1)
        self.conv2_dw = ConvBNPReLU(spec.stem, spec.stem, 3, 1, 1, groups=spec.stem)
        self.conv_23 = Bottleneck(spec.stem, spec.down_23, 64, 2, residual=False)
        self.conv_3 = ResidualStage(64, spec.stage3, se)
        self.conv_34 = Bottleneck(64, spec.down_34, 128, 2, residual=False)
        self.conv_4 = ResidualStage(128, spec.stage4, se)
        self.conv_45 = Bottleneck(128, spec.down_45, 128, 2, residual=False)
        self.conv_5 = ResidualStage(128, spec.stage5, se)
        self.conv_6_sep = ConvBNPReLU(128, spec.head_width, 1)
        self.conv_6_dw = ConvBN(spec.head_width, spec.head_width, spec.conv6_kernel, groups=spec.head_width)
        self.linear = nn.Linear(spec.head_width, spec.embedding, bias=False)
        self.bn = nn.BatchNorm1d(spec.embedding)
        self.drop = nn.Dropout(spec.drop_p)
        self.prob = nn.Linear(spec.embedding, spec.num_classes, bias=False)

    #: The convolutional blocks in order; the classifier head (linear, bn, drop, prob) follows them.
    BLOCKS = (
        "conv1",
        "conv2_dw",
        "conv_23",
        "conv_3",
        "conv_34",
        "conv_4",
        "conv_45",
        "conv_5",
        "conv_6_sep",
        "conv_6_dw",
    )

    def trunk(self, x: Tensor, stop: int) -> Tensor:
        """The first ``stop`` blocks: the frozen part of a fine-tuning run, computed once per crop."""
        for name in self.BLOCKS[:stop]:
            x = getattr(self, name)(x)
        return x

    def forward_from(self, x: Tensor, start: int) -> Tensor:
        """Blocks ``start`` onwards and the head, on what :meth:`trunk` with ``stop=start`` returned."""
        for name in self.BLOCKS[start:]:
            x = getattr(self, name)(x)
        x = torch.flatten(x, 1)
        return self.prob(self.drop(self.bn(self.linear(x))))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_from(x, 0)


class PadNet(nn.Module):
    """Several MiniFASNets on their own crops of the same face, fused as the source fuses its pair.

    ``forward(crop_0, crop_1, ...)`` (one ``Nx3xHxW`` BGR 0-255 batch per member, in ``specs`` order)
    returns the members' 3-way softmaxes averaged, ``Nx3``; column ``LIVE_CLASS`` is the live
    probability. One graph for the whole fusion: the inference runtime runs it in one call.
    """

    def __init__(self, specs: Sequence[ModelSpec]) -> None:
        super().__init__()
        if not specs:
            raise ValueError("a PadNet needs at least one MiniFASNet")
        self.specs = tuple(specs)
        self.members = nn.ModuleList(MiniFASNet(s) for s in self.specs)

    def member_logits(self, crops: Sequence[Tensor]) -> list[Tensor]:
        return [m(x) for m, x in zip(self.members, crops)]

    def forward(self, *crops: Tensor) -> Tensor:
        probs = [torch.softmax(logits, dim=1) for logits in self.member_logits(crops)]
        return torch.stack(probs).mean(dim=0)


# ---------------------------------------------------------------------------------------------- weights


def _strip_module_prefix(state: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
    """Drop the ``module.`` prefix that ``nn.DataParallel`` added when the source saved the weights."""
    return OrderedDict((k.removeprefix("module."), v) for k, v in state.items())


def load_minifasnet(spec: ModelSpec, path: Path | str | None = None, expected_sha256: str | None = None) -> MiniFASNet:
    """Verify the file's sha256, then build the model and load its state dict strictly, in eval mode.

    ``path`` defaults to the pinned file under the weights root. ``torch.load`` runs with
    ``weights_only=True``: the files are plain state dicts, so no pickled code runs.
    """
    expected = expected_sha256 or spec.sha256
    file = verified_file(path, expected) if path is not None else root_weight_path(spec.weights)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - verified bytes that still fail to unpickle: a weights error
        raise WeightFileError(file, expected, sha256_file(file), f"unreadable ({type(exc).__name__})") from None
    model = MiniFASNet(spec)
    model.load_state_dict(_strip_module_prefix(state), strict=True)
    return model.eval()


def load_pad_net(specs: Sequence[ModelSpec]) -> PadNet:
    """The shipped weights of each member, verified, in one fused PadNet (eval mode)."""
    net = PadNet(specs)
    for i, spec in enumerate(net.specs):
        net.members[i] = load_minifasnet(spec)
    return net.eval()


# ----------------------------------------------------------------------------------- crop and input


def source_box(box: FaceBox) -> tuple[int, int, int, int]:
    """A FaceBox as the source's ``[x, y, w, h]`` (``w = right - left + 1``, its detector's convention)."""
    return box.left, box.top, box.right - box.left + 1, box.bottom - box.top + 1


def source_crop_box(image_wh: tuple[int, int], bbox: Sequence[float], scale: float) -> tuple[int, int, int, int]:
    """Crop rectangle ``(x0, y0, x1, y1)``, inclusive, for a face box, exactly as the source cuts it.

    The box ``[x, y, w, h]`` is scaled by ``scale`` about its centre (the crop keeps the box's aspect
    ratio). ``scale`` is first capped at ``min((H-1)/h, (W-1)/w)`` so the crop can always fit; a crop that
    runs off one side is *moved* back inside (its size is kept), which is why the face is off-centre near
    image borders. Corners are truncated with ``int()``; the source slices ``[y0:y1+1, x0:x1+1]``.
    """
    src_w, src_h = image_wh
    x, y, box_w, box_h = (float(v) for v in bbox[:4])
    if box_w <= 0 or box_h <= 0:
        raise ValueError(f"face box must have positive size, got {tuple(bbox)}")
    scale = min((src_h - 1) / box_h, (src_w - 1) / box_w, scale)
    new_w, new_h = box_w * scale, box_h * scale
    cx, cy = x + box_w / 2, y + box_h / 2
    x0, y0, x1, y1 = cx - new_w / 2, cy - new_h / 2, cx + new_w / 2, cy + new_h / 2
    if x0 < 0:
        x1 -= x0
        x0 = 0.0
    if y0 < 0:
        y1 -= y0
        y0 = 0.0
    if x1 > src_w - 1:
        x0 -= x1 - src_w + 1
        x1 = float(src_w - 1)
    if y1 > src_h - 1:
        y0 -= y1 - src_h + 1
        y1 = float(src_h - 1)
    return int(x0), int(y0), int(x1), int(y1)


def crop_face(frame: np.ndarray, bbox: Sequence[float], spec: ModelSpec, *, rgb: bool = False) -> np.ndarray:
    """The model's input patch: the source crop of ``frame`` resized (bilinear) to ``spec.input_hw``, BGR uint8.

    ``frame`` is ``HxWx3`` uint8, BGR (OpenCV's order) or RGB with ``rgb=True`` (the service's frames):
    only the small patch is swapped to BGR, resizing being per channel (a view: :func:`to_input_array` or
    ``np.stack`` makes the one copy).
    """
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = source_crop_box((w, h), bbox, spec.crop_scale)
    out_h, out_w = spec.input_hw
    patch = cv2.resize(frame[y0 : y1 + 1, x0 : x1 + 1], (out_w, out_h))  # OpenCV reads the slice in place
    return patch[..., ::-1] if rgb else patch


def to_input_array(patches_bgr: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """BGR uint8 patches -> float32 ``Nx3xHxW`` in 0-255: the source's ``to_tensor`` (no /255, no mean)."""
    arr = patches_bgr if isinstance(patches_bgr, np.ndarray) else np.stack(list(patches_bgr))
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[3] != 3:
        raise ValueError(f"expected HxWx3 or NxHxWx3 BGR patches, got shape {arr.shape}")
    return np.ascontiguousarray(arr.transpose(0, 3, 1, 2), dtype=np.float32)


def to_input_tensor(patches_bgr: Sequence[np.ndarray] | np.ndarray) -> Tensor:
    """:func:`to_input_array` as a torch tensor (training and the torch reference path)."""
    return torch.from_numpy(to_input_array(patches_bgr))
