"""Which network to look inside, for each model facegate serves, and how an image becomes its input.

- ``embedder``: every member backbone of the embedding model (a fused ``dlib_resnet+sface`` has two:
  layer names are qualified, ``dlib_resnet:blocks.3``, ``sface:blocks.7``). The images are the aligned
  chips the model embeds; a fused model's paired chip holds each member's own geometry, and each member
  sees its own part.
- ``detector``: the MobileNetV2 backbone of the face-mask detector. The two-stage detector's classifier
  sees ``crop_size`` face crops; the one-stage YOLO sees the letterboxed image. With no trained detector,
  the ImageNet MobileNetV2 it starts from, on the two-stage crops.
- ``pad``: each MiniFASNet of the presentation-attack pair, on its own crop of the face (``crop_scale`` x
  the detected box, 80 x 80, BGR 0..255 as the source trains them); a data item stacks the members'
  crops in RGB, 3 channels each.

Each adapter runs the network the way its weights expect but through the modules whose names the user
gives, so forward hooks see them: SFace's and dlib's eval-mode inference copies (BN folded, channels-last)
are bypassed, which changes nothing but speed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from facegate.components.core.errors import ExplainUnavailable, UnknownLayer
from facegate.components.detection.model import YoloDetector
from facegate.components.detection.two_stage import TwoStageDetector
from facegate.components.embedding.base import Backbone
from facegate.components.embedding.fusion import FusedBackbone
from facegate.components.embedding.model import EmbeddingModel
from facegate.components.explain.receptive_field import Forward, PathStep
from facegate.components.faces.align import split_paired
from facegate.components.networks.mobilenet_v2 import MobileNetV2, normalise
from facegate.components.pad.minifasnet import MiniFASNet, PadNet, to_input_tensor

__all__ = [
    "DetectorInput",
    "Network",
    "detector_input",
    "detector_network",
    "embedder_networks",
    "pad_networks",
    "resolve_layers",
]

SEPARATOR = ":"  # "dlib_resnet:blocks.3": a member network's layer


@dataclass
class Network:
    """One network to look inside: ``module``'s ``named_modules()`` are its layer names; ``to_input`` turns
    one image (H x W x 3 uint8, as ``view`` cuts it from a data item) into its 3 x H x W input."""

    name: str
    module: nn.Module
    to_input: Callable[[np.ndarray], Tensor]
    forward: Forward | None = None
    view: Callable[[np.ndarray], np.ndarray] | None = None  # this network's image in a data item (paired chips)
    paths: dict[str, Sequence[PathStep]] = field(default_factory=dict)  # per-layer explicit receptive fields

    def image(self, item: np.ndarray) -> np.ndarray:
        return self.view(item) if self.view is not None else item


def _chip_tensor(image: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(image))[None]


def _member_view(geometry: str) -> Callable[[np.ndarray], np.ndarray]:
    """The member's chip inside an item: the item itself (3 channels) or its part of a paired chip."""
    part = 1 if geometry == "arcface_112" else 0

    def view(item: np.ndarray) -> np.ndarray:
        return item if item.shape[-1] == 3 else split_paired(item[None])[part][0]

    return view


def _backbone_network(member: Backbone) -> Network:
    net: Any = member.net  # each registered backbone keeps its torch network as ``net``
    forward: Forward

    def to_input(image: np.ndarray) -> Tensor:
        return member.preprocess(_chip_tensor(image))[0]

    if member.name == "sface":  # SFaceNet.forward runs a folded copy in eval mode: run the graph as written

        def forward(x: Tensor) -> Tensor:
            return net.reference_forward((x - net.input_mean) * net.input_scale)
    elif member.name == "mobilenet_v2":
        forward = net.forward_features
    else:  # dlib_resnet: DlibResNet.forward takes 0..255 and applies dlib's own (x - mean) / 256
        forward = net
    return Network(member.name, net, to_input, forward, _member_view(member.chip_geometry))


def embedder_networks(model: EmbeddingModel) -> list[Network]:
    """The embedding model's backbone networks: each member of a fused model, or the one backbone."""
    backbone = model.backbone
    members = cast("list[Backbone]", list(backbone.members) if isinstance(backbone, FusedBackbone) else [backbone])
    return [_backbone_network(m) for m in members]


@dataclass(frozen=True)
class DetectorInput:
    """What the detector's backbone sees of a training image: face ``crops`` (the two-stage classifier)
    of ``size`` pixels with ``context`` x the box's side, or the whole image ``letterbox``-ed to ``size``."""

    kind: str  # "crops" | "letterbox"
    size: int
    context: float = 1.0


def detector_input(model: nn.Module | None, crop_size: int, crop_context: float) -> DetectorInput:
    """The input of ``model``'s backbone; with no model, the two-stage crops of params (the ImageNet network)."""
    if isinstance(model, YoloDetector):
        size = model.input_size  # (height, width) of a square letterbox
        return DetectorInput("letterbox", int(max(size) if isinstance(size, (tuple, list)) else size))
    if isinstance(model, TwoStageDetector):
        return DetectorInput("crops", model.crop_size, model.crop_context)
    return DetectorInput("crops", crop_size, crop_context)


def _mobilenet_network(net: MobileNetV2, name: str = "mobilenet_v2") -> Network:
    def to_input(image: np.ndarray) -> Tensor:
        return normalise(np.ascontiguousarray(image))[0]

    return Network(name, net, to_input, net.forward_features)


def detector_network(model: nn.Module | None, imagenet: Callable[[], MobileNetV2]) -> Network:
    """The detector's MobileNetV2: the two-stage classifier's or the YOLO's backbone; ``imagenet()``
    (the pretrained network) when no detector is trained."""
    if isinstance(model, TwoStageDetector):
        return _mobilenet_network(model.classifier.backbone)
    if isinstance(model, YoloDetector):
        return _mobilenet_network(model.backbone)
    if model is not None:
        raise ExplainUnavailable(f"detector: a {type(model).__name__} has no known MobileNetV2 backbone")
    return _mobilenet_network(imagenet())


def _channels(i: int) -> Callable[[np.ndarray], np.ndarray]:
    def view(item: np.ndarray) -> np.ndarray:
        return item[..., 3 * i : 3 * i + 3]

    return view


def _bgr_input(image: np.ndarray) -> Tensor:
    return to_input_tensor(image[..., ::-1])[0]  # RGB on screen, BGR 0..255 into the network


def pad_networks(net: PadNet | None) -> list[Network]:
    """Each MiniFASNet of the PAD network (``minifasnet_v2``, ``minifasnet_v1se``), member i seeing
    channels 3i..3i+2 of an item."""
    if net is None:
        raise ExplainUnavailable("pad: no presentation-attack network to look inside")
    members = cast("list[MiniFASNet]", list(net.members))
    return [Network(m.spec.weights, m, _bgr_input, m, _channels(i)) for i, m in enumerate(members)]


def resolve_layers(
    networks: Sequence[Network], requested: Sequence[str] | None, defaults: Mapping[str, Sequence[str]]
) -> dict[str, list[str]]:
    """``{network name: [layer, ...]}`` from ``requested`` (``net:layer``, or a bare ``layer`` when there is
    one network) or each network's ``defaults``. Names are checked here, before any image is read."""
    by_name = {n.name: n for n in networks}
    if not requested:
        return {n.name: list(defaults.get(n.name, ())) for n in networks}
    out: dict[str, list[str]] = {n.name: [] for n in networks}
    for spec in requested:
        net_name, sep, layer = spec.rpartition(SEPARATOR)
        if not sep:
            if len(networks) != 1:
                raise UnknownLayer(
                    spec,
                    [f"{n.name}{SEPARATOR}{m}" for n in networks for m, _ in n.module.named_modules() if m][:200],
                    "+".join(by_name),
                )
            net_name = networks[0].name
        if net_name not in by_name:
            raise UnknownLayer(spec, [f"{n}{SEPARATOR}..." for n in by_name], "+".join(by_name))
        valid = [m for m, _ in by_name[net_name].module.named_modules() if m]
        if layer not in valid:
            raise UnknownLayer(layer, valid, net_name)
        out[net_name].append(layer)
    return {k: v for k, v in out.items() if v}
