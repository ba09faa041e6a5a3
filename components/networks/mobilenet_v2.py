"""ImageNet MobileNetV2 (width 1.0) in plain torch, loadable from torchvision's ``state_dict``.

Why: torchvision cannot be installed here, but its pretrained MobileNetV2 is a good small backbone for
fine-tuning face embeddings on CPU. Module names mirror torchvision's exactly (``features.0.0``,
``features.N.conv.*``, ``features.18``, ``classifier.1``) so the shipped checkpoint loads with
``strict=True`` and any mismatch fails loudly instead of silently leaving random weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facegate.components.core.weights import weight_path

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "InvertedResidual",
    "MobileNetV2",
    "load_mobilenet_v2_imagenet",
    "normalise",
]

# Normalisation the ImageNet weights were trained with, on RGB scaled to [0, 1].
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# (expansion t, output channels c, repeats n, first stride s): the MobileNetV2 paper's table 2.
_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_STEM_CHANNELS = 32
_LAST_CHANNELS = 1280


class ConvBNReLU6(nn.Sequential):
    """conv -> BN -> ReLU6 as a Sequential, so keys are ``.0.weight`` / ``.1.*`` like torchvision's."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> linear project (1x1); identity shortcut when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.stride = stride
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU6(cin, hidden, kernel=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = cout

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 1.0 with torchvision's module layout.

    ``stages`` groups ``features`` by output stride (2, 4, 8, 16, 32): indices 0-1, 2-3, 4-6, 7-13 and
    14-18 (the last includes the 1x1 conv to 1280 channels). Fine-tuning unfreezes the deepest stages
    first because they hold the most task-specific features; see :meth:`freeze_all_but_last`.
    """

    STAGE_SLICES: tuple[tuple[int, int], ...] = ((0, 2), (2, 4), (4, 7), (7, 14), (14, 19))

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        blocks: list[nn.Module] = [ConvBNReLU6(3, _STEM_CHANNELS, stride=2)]
        cin = _STEM_CHANNELS
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        blocks.append(ConvBNReLU6(cin, _LAST_CHANNELS, kernel=1))
        self.features = nn.Sequential(*blocks)
        # nn.Module: a backbone swaps it for nn.Identity (features only)
        self.classifier: nn.Module = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(_LAST_CHANNELS, num_classes))
        self.num_features = _LAST_CHANNELS
        self._frozen_stages = 0  # stages whose BN is held in eval mode by train()
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation, so training from scratch behaves like the reference model.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def stages(self) -> list[nn.Sequential]:
        """The feature blocks grouped by output stride, shallowest first (views on ``features``)."""
        return [nn.Sequential(*list(self.features)[a:b]) for a, b in self.STAGE_SLICES]

    def forward_features(self, x: Tensor) -> Tensor:
        """N x 1280 x H/32 x W/32 activations, before pooling (for custom heads)."""
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(self.forward_features(x), 1).flatten(1)
        return self.classifier(x)

    def freeze_all_but_last(self, n_stages: int, freeze_bn: bool = True) -> None:
        """Train only the last ``n_stages`` stages (0 freezes everything).

        The classifier trains with the last stage (n >= 1). With ``freeze_bn`` the BatchNorm layers of
        frozen stages stay in eval mode even under ``train()``: otherwise their running statistics
        would drift to the fine-tuning data and the "frozen" layers would still change.
        """
        total = len(self.STAGE_SLICES)
        if not 0 <= n_stages <= total:
            raise ValueError(f"n_stages must be in [0, {total}], got {n_stages}")
        first_trainable = total - n_stages
        for i, (a, b) in enumerate(self.STAGE_SLICES):
            for p in self.features[a:b].parameters():
                p.requires_grad_(i >= first_trainable)
        for p in self.classifier.parameters():
            p.requires_grad_(n_stages > 0)
        self._frozen_stages = first_trainable if freeze_bn else 0
        self.train(self.training)

    def train(self, mode: bool = True) -> MobileNetV2:
        super().train(mode)
        if mode and self._frozen_stages:
            a, b = self.STAGE_SLICES[0][0], self.STAGE_SLICES[self._frozen_stages - 1][1]
            for m in self.features[a:b].modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self


def load_mobilenet_v2_imagenet() -> MobileNetV2:
    """The ImageNet-pretrained network from the verified checkpoint, in eval mode."""
    model = MobileNetV2()
    state = torch.load(weight_path("mobilenet_v2_imagenet"), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def _stat(values: Sequence[float], like: Tensor) -> Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)


def normalise(batch: Tensor | np.ndarray) -> Tensor:
    """ImageNet-normalised float32 N x 3 x H x W from RGB images.

    Accepts uint8 N x H x W x 3 (or one H x W x 3), numpy or torch, as decoded images come; or a float
    tensor N x 3 x H x W (or 3 x H x W) already scaled to [0, 1], as after augmentation.
    """
    x = torch.from_numpy(np.ascontiguousarray(batch)) if isinstance(batch, np.ndarray) else batch
    if x.dtype == torch.uint8:
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"uint8 input must be N x H x W x 3 RGB, got shape {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
    elif x.is_floating_point():
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"float input must be N x 3 x H x W in [0, 1], got shape {tuple(x.shape)}")
        x = x.float()
    else:
        raise TypeError(f"expected uint8 or floating-point images, got {x.dtype}")
    return (x - _stat(IMAGENET_MEAN, x)) / _stat(IMAGENET_STD, x)
