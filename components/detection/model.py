"""The detector network: ImageNet MobileNetV2 features, a small top-down feature pyramid, a YOLO head.

Why a pyramid: faces in the mask set are small (median ~23 px at 416 px input, a quarter under 15 px),
so a stride-32 grid alone would put several faces in one cell; the finer grids get the deeper layers'
semantics by upsampling (FPN / YOLOv3). Each head is a depthwise-separable 3x3 conv then a 1x1 conv to
B x (5 + C) channels per cell: (p_c, b_x, b_y, b_h, b_w, c_1..c_C) for each anchor, as raw logits.

The backbone and the head are separate calls so the frozen phase can train the head on cached
backbone features (``backbone_features`` then ``head``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facegate.components.detection.encoding import GridLayout
from facegate.components.networks.mobilenet_v2 import MobileNetV2, load_mobilenet_v2_imagenet

__all__ = ["YoloDetector", "build_detector", "BACKBONE_STRIDES"]

# MobileNetV2 ``features`` slices ending at output stride 8, 16 and 32. Stride 32 stops before the 1x1
# conv to 1280 channels (``features.18``): that expansion serves ImageNet's classifier, and 320 channels
# at stride 32 are plenty for a pyramid's top.
BACKBONE_STRIDES: dict[int, tuple[int, int, int]] = {8: (0, 7, 32), 16: (7, 14, 96), 32: (14, 18, 320)}


def _conv_bn_act(cin: int, cout: int, kernel: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, 1, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.1, inplace=True),
    )


def _dw_separable(ch: int) -> nn.Sequential:
    return nn.Sequential(_conv_bn_act(ch, ch, 3, groups=ch), _conv_bn_act(ch, ch, 1))


class YoloDetector(nn.Module):
    """Backbone + pyramid + YOLO head; ``forward`` returns one N x S_h x S_w x B x (5 + C) tensor per scale."""

    def __init__(
        self,
        backbone: MobileNetV2,
        layout: GridLayout,
        class_names: tuple[str, ...],
        width: int = 128,
        obj_prior: float = 0.01,
    ) -> None:
        super().__init__()
        if len(class_names) != layout.num_classes:
            raise ValueError(f"{len(class_names)} class names for {layout.num_classes} classes")
        if not set(layout.strides) <= set(BACKBONE_STRIDES):
            raise ValueError(f"strides must be among {sorted(BACKBONE_STRIDES)}, got {layout.strides}")
        self.backbone = backbone
        self.layout = layout
        self.class_names = tuple(class_names)
        self.input_size = layout.input_size
        self.strides = tuple(layout.strides)
        self.register_buffer("anchors", torch.tensor(layout.anchor_array(), dtype=torch.float32))
        self.lateral = nn.ModuleDict(
            {
                str(s): _conv_bn_act(BACKBONE_STRIDES[s][2], width)
                for s in range(min(self.strides), 33)
                if s in BACKBONE_STRIDES
            }
        )
        self.smooth = nn.ModuleDict({str(s): _dw_separable(width) for s in self.strides})
        B, ch = layout.anchors_per_scale, layout.channels
        predict = {str(s): nn.Conv2d(width, B * ch, 1) for s in self.strides}
        self.predict = nn.ModuleDict(predict)
        for conv in predict.values():
            nn.init.normal_(conv.weight, 0.0, 0.01)
            assert conv.bias is not None  # nn.Conv2d's default bias=True
            bias = conv.bias.data.view(B, ch)
            bias.zero_()
            bias[:, 0] = math.log(obj_prior / (1 - obj_prior))  # rare objects: start with low p_c

    def backbone_features(self, x: Tensor) -> list[Tensor]:
        """Backbone activations at strides 8, 16, 32 (shallow to deep), from ImageNet-normalised input."""
        out = []
        for stride in (8, 16, 32):
            a, b, _ = BACKBONE_STRIDES[stride]
            x = self.backbone.features[a:b](x)
            out.append(x)
        return out

    def head(self, feats: list[Tensor]) -> list[Tensor]:
        """Top-down pyramid from stride 32 to the finest stride, then the per-scale predictions."""
        by_stride = dict(zip((8, 16, 32), feats))
        top = None
        pyramid: dict[int, Tensor] = {}
        for s in (32, 16, 8):
            if str(s) not in self.lateral:
                continue
            lat = self.lateral[str(s)](by_stride[s])
            top = lat if top is None else lat + F.interpolate(top, size=lat.shape[-2:], mode="nearest")
            pyramid[s] = top
        B, ch = self.layout.anchors_per_scale, self.layout.channels
        out = []
        for s in self.strides:
            p = self.predict[str(s)](self.smooth[str(s)](pyramid[s]))
            n, _, h, w = p.shape
            out.append(p.view(n, B, ch, h, w).permute(0, 3, 4, 1, 2).contiguous())
        return out

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.head(self.backbone_features(x))

    # -- transfer learning --------------------------------------------------------------------------
    def freeze_backbone(self) -> None:
        """Phase 1: the ImageNet features stay fixed (BN statistics too); only pyramid and head learn."""
        self.backbone.freeze_all_but_last(0)

    def unfreeze_backbone(self, stages: int) -> None:
        """Phase 2: the deepest ``stages`` MobileNetV2 stages learn too (frozen stages keep BN in eval)."""
        self.backbone.freeze_all_but_last(stages)
        for p in self.backbone.classifier.parameters():  # ImageNet classifier: not part of the detector
            p.requires_grad_(False)
        for p in self.backbone.features[18].parameters():
            p.requires_grad_(False)


def build_detector(
    layout: GridLayout, class_names: tuple[str, ...], width: int = 128, pretrained: bool = True
) -> YoloDetector:
    """A detector on the ImageNet MobileNetV2 (the face backbones' verified checkpoint)."""
    backbone = load_mobilenet_v2_imagenet() if pretrained else MobileNetV2()
    return YoloDetector(backbone, layout, class_names, width=width)


def layout_from(input_size: int, strides: tuple[int, ...], anchors: np.ndarray, num_classes: int) -> GridLayout:
    return GridLayout(
        (input_size, input_size), tuple(strides), GridLayout.split_anchors(anchors, tuple(strides)), num_classes
    )
