"""Backbones behind one interface, one registry entry each: adding a backbone touches this file only.

A backbone turns aligned chips (uint8 RGB, N x S x S x 3, from components.faces) into pooled features;
the embedding head on top is shared (components.embedding.model). ``stages`` lists the trainable
blocks from shallow to deep so ``finetune`` can unfreeze the last N; ``pretrained_head`` is the
backbone's own embedding layer where it has one (dlib's fc), used to initialise the head.
``chip_geometry`` names the aligned chip the weights were trained on (components.faces.align:
``dlib_150`` or ``arcface_112``); chip extraction for a backbone uses it (see :func:`chip_geometry`).
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Backbone(nn.Module):
    name: ClassVar[str]
    feature_dim: ClassVar[int]
    input_size: ClassVar[int]
    chip_geometry: ClassVar[str] = "dlib_150"

    def preprocess(self, chips: Tensor) -> Tensor:
        """uint8 N x S x S x 3 -> float N x 3 x input_size x input_size, as the weights expect."""
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def stages(self) -> list[nn.Module]:
        raise NotImplementedError

    def pretrained_head(self) -> nn.Linear | None:
        return None

    def freeze_all_but_last(self, n_stages: int) -> None:
        """Freeze everything, then unfreeze the deepest ``n_stages`` stages (BN of frozen ones in eval)."""
        stages = self.stages()
        if not 0 <= n_stages <= len(stages):
            raise ValueError(f"n_stages must be in [0, {len(stages)}], got {n_stages}")
        for p in self.parameters():
            p.requires_grad_(False)
        for stage in stages[len(stages) - n_stages:]:
            for p in stage.parameters():
                p.requires_grad_(True)
        self._frozen = stages[: len(stages) - n_stages]

    def train(self, mode: bool = True):
        super().train(mode)
        for stage in getattr(self, "_frozen", []):
            stage.eval()  # frozen BN statistics must not drift with face data
        return self


def _to_nchw(chips: Tensor) -> Tensor:
    return chips.permute(0, 3, 1, 2).to(torch.float32)


class DlibResNetBackbone(Backbone):
    """dlib's ResNet face descriptor ported to torch; features are its 256-d pooled activations."""

    name = "dlib_resnet"
    feature_dim = 256
    input_size = 150

    def __init__(self) -> None:
        super().__init__()
        from components.embedding.dlib_resnet import load_dlib_resnet
        from components.weights import weight_path

        self.net = load_dlib_resnet(weight_path("dlib_resnet_v1"))
        for p in self.net.parameters():
            p.requires_grad_(True)
        self._fc = self.net.head[-1]
        self._pool = nn.Sequential(*list(self.net.head)[:-1])

    def preprocess(self, chips: Tensor) -> Tensor:
        x = _to_nchw(chips)
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True,
                              align_corners=False)
        return x  # 0..255: features() applies dlib's own input normalisation

    def features(self, x: Tensor) -> Tensor:
        x = (x - self.net.mean) / 256.0  # as dlib's input layer: (pixel - mean) / 256
        return self._pool(self.net.blocks(self.net.stem(x))).flatten(1)

    def stages(self) -> list[nn.Module]:
        return [self.net.stem, *self.net.blocks]

    def pretrained_head(self) -> nn.Linear:
        return self._fc


class MobileNetV2Backbone(Backbone):
    """ImageNet MobileNetV2 at 112x112; features are the 1280-d global average."""

    name = "mobilenet_v2"
    feature_dim = 1280
    input_size = 112

    def __init__(self) -> None:
        super().__init__()
        from components.embedding.mobilenet_v2 import load_mobilenet_v2_imagenet

        self.net = load_mobilenet_v2_imagenet()
        self.net.classifier = nn.Identity()

    def preprocess(self, chips: Tensor) -> Tensor:
        from components.embedding.mobilenet_v2 import normalise

        x = F.interpolate(_to_nchw(chips), size=(self.input_size, self.input_size), mode="bilinear",
                          antialias=True, align_corners=False)
        return normalise(x / 255.0)

    def features(self, x: Tensor) -> Tensor:
        return self.net.forward_features(x).mean(dim=(2, 3))

    def stages(self) -> list[nn.Module]:
        return list(self.net.stages)


class SFaceBackbone(Backbone):
    """OpenCV Zoo's SFace (MobileFaceNet, Apache-2.0, LFW 99.40% published) ported to torch.

    Chips: ArcFace 112x112, RGB 0..255 (the network normalises them itself). Features are the flattened
    ``bn1`` map (1024 x 7 x 7 = 50,176 values: SFace has no pooling, its embedding layer reads the whole
    map); the pretrained head is its 128-d linear with the final BN folded in. The shared head has no
    bias, so SFace's bias is carried by a constant feature offset c with W c = b (exact, see
    :func:`components.embedding.sface.bias_as_feature_offset`): the pretrained model embeds exactly as
    OpenCV's ``FaceRecognizerSF`` after L2 normalisation. Stages: conv_1 .. conv_13, then conv_14 with
    ``bn1``.
    """

    name = "sface"
    feature_dim = 1024 * 7 * 7
    input_size = 112
    chip_geometry = "arcface_112"

    def __init__(self) -> None:
        super().__init__()
        from components.embedding.sface import bias_as_feature_offset, load_sface
        from components.weights import weight_path

        self.net = load_sface(weight_path("sface_2021dec"))
        for p in self.net.parameters():
            p.requires_grad_(True)
        fc = self.net.fc
        self._fc = nn.Linear(self.feature_dim, fc.out_features, bias=False)
        with torch.no_grad():
            self._fc.weight.copy_(fc.weight)
        self.register_buffer("feature_offset", bias_as_feature_offset(fc))
        self.net.fc = nn.Identity()  # kept once, as _fc (weight) and feature_offset (bias)

    def preprocess(self, chips: Tensor) -> Tensor:
        x = _to_nchw(chips)
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True,
                              align_corners=False)
        return x  # 0..255 RGB: features() applies SFace's own (x - 127.5) / 128

    def features(self, x: Tensor) -> Tensor:
        return self.net.body((x - self.net.input_mean) * self.net.input_scale) + self.feature_offset

    def stages(self) -> list[nn.Module]:
        blocks = list(self.net.blocks)
        return [*blocks[:-1], nn.Sequential(blocks[-1], self.net.bn1)]

    def pretrained_head(self) -> nn.Linear:
        return self._fc


BACKBONES: dict[str, type[Backbone]] = {b.name: b for b in (DlibResNetBackbone, MobileNetV2Backbone, SFaceBackbone)}


def chip_geometry(backbone: str) -> str:
    """The chip geometry backbone ``backbone`` needs (a class attribute: no weights are loaded)."""
    try:
        return BACKBONES[backbone].chip_geometry
    except KeyError:
        raise ValueError(f"unknown backbone {backbone!r} (known: {sorted(BACKBONES)})") from None


def make_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]()
    except KeyError:
        raise ValueError(f"unknown backbone {name!r} (known: {sorted(BACKBONES)})") from None
