"""Backbones, one registry entry each: adding a backbone touches this file only (the interface is base.py).

``make_backbone("a+b")`` fuses registered backbones side by side (fusion.py).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facegate.components.core.weights import weight_path
from facegate.components.embedding.base import FUSION_SEPARATOR, Backbone, to_nchw
from facegate.components.embedding.dlib_resnet import DlibResNet, load_dlib_resnet
from facegate.components.embedding.folding import channels_last_copy, inference_copy, use_inference_copy
from facegate.components.embedding.fusion import FusedBackbone, fused_geometry
from facegate.components.embedding.position_gate import PositionGatedHead
from facegate.components.embedding.sface import INPUT_SIZE as SFACE_INPUT_SIZE
from facegate.components.embedding.sface import SFaceExport, SFaceInference, SFaceNet, load_sface
from facegate.components.networks.mobilenet_v2 import MobileNetV2, load_mobilenet_v2_imagenet, normalise


class DlibResNetBackbone(Backbone):
    """dlib's ResNet face descriptor ported to torch; features are its 256-d pooled activations."""

    name = "dlib_resnet"
    feature_dim = 256
    input_size = 150

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()  # the layer structure is read from dlib's file either way (``pretrained`` unused)

        self.net = load_dlib_resnet(weight_path("dlib_resnet_v1"))
        for p in self.net.parameters():
            p.requires_grad_(True)
        fc = self.net.head[-1]
        assert isinstance(fc, nn.Linear)  # DlibResNet checks that the network ends in its fc layer
        self._fc = fc
        self._pool = nn.Sequential(*list(self.net.head)[:-1])

    def preprocess(self, chips: Tensor) -> Tensor:
        x = to_nchw(chips)
        if x.shape[-1] != self.input_size:
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True, align_corners=False
            )
        return x  # 0..255: features() applies dlib's own input normalisation

    def features(self, x: Tensor) -> Tensor:
        compiled = self.compiled_features()
        if compiled is not None:
            return compiled(x)
        x = (x - self.net.mean) / 256.0  # as dlib's input layer: (pixel - mean) / 256, in float32
        if not use_inference_copy(self.net):
            return self._forward(self.net, x)
        dtype = self.inference_dtype()
        net = inference_copy(self.net, lambda n: channels_last_copy(n, dtype), variant=dtype)
        return self._forward(net, x.to(dtype).contiguous(memory_format=torch.channels_last)).float()

    @staticmethod
    def _forward(net: DlibResNet, x: Tensor) -> Tensor:
        return net.head[:-1](net.blocks(net.stem(x))).flatten(1)

    def export_module(self) -> nn.Module:
        return _DlibFeatures(self.net)

    def stages(self) -> list[nn.Module]:
        return [self.net.stem, *self.net.blocks]

    def pretrained_head(self) -> nn.Linear:
        return self._fc


class MobileNetV2Backbone(Backbone):
    """ImageNet MobileNetV2 at 112x112; features are the 1280-d global average."""

    name = "mobilenet_v2"
    feature_dim = 1280
    input_size = 112

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()

        self.net = load_mobilenet_v2_imagenet() if pretrained else MobileNetV2().eval()
        self.net.classifier = nn.Identity()

    def preprocess(self, chips: Tensor) -> Tensor:
        x = F.interpolate(
            to_nchw(chips),
            size=(self.input_size, self.input_size),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        return normalise(x / 255.0)

    def features(self, x: Tensor) -> Tensor:
        compiled = self.compiled_features()
        if compiled is not None:
            return compiled(x)
        dtype = self.inference_dtype()
        if not use_inference_copy(self.net) or dtype == torch.float32:
            return self.net.forward_features(x).mean(dim=(2, 3))

        net = inference_copy(self.net, lambda n: copy.deepcopy(n).to(dtype), variant=dtype)
        return net.forward_features(x.to(dtype)).mean(dim=(2, 3)).float()

    def stages(self) -> list[nn.Module]:
        return list(self.net.stages)

    def export_module(self) -> nn.Module:
        return _PooledFeatures(self.net)


class SFaceBackbone(Backbone):
    """OpenCV Zoo's SFace (MobileFaceNet, Apache-2.0, LFW 99.40% published) ported to torch.

    Chips: ArcFace 112x112, RGB 0..255 (the network normalises them itself). Features are SFace's own
    128-d embedding split by where it comes from: for each of the 7 x 7 map positions, that position's
    share of the linear layer's output (49 x 128 = 6,272 values; SFace has no pooling, and the 50,176-value
    map itself is too large to cache for head training). Their sum plus the layer's bias is SFace's
    embedding, which is what the head (facegate.components.embedding.position_gate) computes before training has
    moved its gates, so the pretrained model embeds exactly as OpenCV's ``FaceRecognizerSF`` after L2
    normalisation. Stages: conv_1 .. conv_13, then conv_14 with ``bn1`` and the linear layer.
    """

    name = "sface"
    positions = (SFACE_INPUT_SIZE // 16) ** 2  # the 7 x 7 map
    embedding_dim = 128
    feature_dim = positions * embedding_dim
    features_revision = 2  # 1: the summed 128-d embedding
    input_size = SFACE_INPUT_SIZE
    chip_geometry = "arcface_112"

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()

        self.net = load_sface(weight_path("sface_2021dec")) if pretrained else SFaceNet().eval()
        for p in self.net.parameters():
            p.requires_grad_(True)

    def preprocess(self, chips: Tensor) -> Tensor:
        x = to_nchw(chips)
        if x.shape[-1] != self.input_size:
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True, align_corners=False
            )
        return x  # 0..255 RGB: features() applies SFace's own (x - 127.5) / 128

    def features(self, x: Tensor) -> Tensor:
        compiled = self.compiled_features()
        if compiled is not None:
            return compiled(x)
        x = (x - self.net.input_mean) * self.net.input_scale
        if not use_inference_copy(self.net):
            return self.net.reference_positional(x).flatten(1)

        dtype = self.inference_dtype()
        net = inference_copy(self.net, lambda n: SFaceInference.from_net(n, dtype), variant=dtype)
        return net.positional(x.to(dtype)).flatten(1)

    def export_module(self) -> nn.Module:
        return SFaceExport(self.net)

    def stages(self) -> list[nn.Module]:
        blocks = list(self.net.blocks)
        return [*blocks[:-1], nn.Sequential(blocks[-1], self.net.bn1, self.net.fc)]

    def embedding_head(self, dim: int) -> PositionGatedHead:
        """The shares summed with SFace's bias, each position gated (1 until trained), then a linear
        layer (the identity at ``dim`` 128)."""
        return PositionGatedHead(self.positions, self.embedding_dim, self.net.fc.bias, out_features=dim)


class _DlibFeatures(nn.Module):
    """DlibResNetBackbone.features in eval mode, float32, for an exporter (its affines are folded already)."""

    def __init__(self, net: DlibResNet) -> None:
        super().__init__()
        self.net = copy.deepcopy(net).float().eval()

    def forward(self, x: Tensor) -> Tensor:
        return DlibResNetBackbone._forward(self.net, (x - self.net.mean) / 256.0)


class _PooledFeatures(nn.Module):
    """MobileNetV2Backbone.features in eval mode, float32, for an exporter."""

    def __init__(self, net: MobileNetV2) -> None:
        super().__init__()
        self.net = copy.deepcopy(net).float().eval()

    def forward(self, x: Tensor) -> Tensor:
        return self.net.forward_features(x).mean(dim=(2, 3))


BACKBONES: dict[str, type[Backbone]] = {b.name: b for b in (DlibResNetBackbone, MobileNetV2Backbone, SFaceBackbone)}


def _members(name: str) -> list[str]:
    members = name.split(FUSION_SEPARATOR)
    unknown = [m for m in members if m not in BACKBONES]
    if unknown or len(set(members)) != len(members):
        raise ValueError(
            f"unknown backbone {name!r} (known: {sorted(BACKBONES)}, or several joined by "
            f"'{FUSION_SEPARATOR}', each once)"
        )
    return members


def chip_geometry(backbone: str) -> str:
    """The chip geometry backbone ``backbone`` needs (class attributes: no weights are loaded)."""
    members = _members(backbone)
    return (
        BACKBONES[members[0]].chip_geometry
        if len(members) == 1
        else fused_geometry([BACKBONES[m].chip_geometry for m in members])
    )


def features_tag(name: str) -> str:
    """The part of a feature-cache name that says which revision of its members' features it holds."""
    revision = max(BACKBONES[m].features_revision for m in _members(name))
    return f"-r{revision}" if revision > 1 else ""


def make_backbone(name: str, pretrained: bool = True) -> Backbone:
    """Backbone ``name`` with its pretrained weights; ``pretrained=False``: the architecture for a state
    dict to be loaded into (a kept model copy skips parsing SFace's ONNX file, ~0.5 s of a CLI command)."""
    members = _members(name)
    if len(members) == 1:
        return BACKBONES[name](pretrained)
    return FusedBackbone([BACKBONES[m](pretrained) for m in members])
