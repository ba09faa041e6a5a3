"""The backbone interface every embedding backbone implements (the registry is backbones.py).

A backbone turns aligned chips (uint8 RGB, N x S x S x 3, from facegate.components.faces) into pooled features;
the embedding head on top is shared (facegate.components.embedding.model). ``stages`` lists the trainable
blocks from shallow to deep so ``finetune`` can unfreeze the last N; ``pretrained_head`` is the
backbone's own embedding layer where it has one (dlib's fc), used to initialise the head.
``chip_geometry`` names the aligned chip the weights were trained on (facegate.components.faces.align:
``dlib_150`` or ``arcface_112``). In its own module so a fused backbone (fusion.py) and the registry
can both build on it without importing each other.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from facegate.components.core.devices import module_device
from facegate.components.embedding.openvino_runtime import openvino_features
from facegate.components.embedding.precision import inference_dtype


class Backbone(nn.Module):
    # class attributes, which a fused backbone sets per instance (its members' names, sizes and chips)
    name: str
    feature_dim: int
    input_size: ClassVar[int]
    chip_geometry: str = "dlib_150"
    features_revision: ClassVar[int] = 1  # bumped when features() changes meaning: cached features are keyed by it
    precision: str = "float32"  # inference number format (facegate.components.embedding.precision.set_precision)
    backend: str = "torch"  # inference runtime (facegate.components.embedding.openvino_runtime.set_backend)

    def inference_dtype(self) -> torch.dtype:
        """The dtype this backbone's inference copy computes in, from ``precision`` and its device."""
        return inference_dtype(self.precision, module_device(self))

    def export_module(self) -> nn.Module | None:
        """What ``features`` computes in eval mode as one float32 module of the preprocessed input, for a
        compiler (the OpenVINO backend) to take whole; None: this backbone runs on torch only."""
        return None

    def compiled_features(self) -> nn.Module | None:
        """``features`` compiled by ``embedding.backend`` (OpenVINO) where it is asked for and applies (eval
        mode, no autograd, CPU) and could be built; None: torch's own path."""
        return openvino_features(self) if self.backend == "openvino" else None

    def preprocess(self, chips: Tensor) -> Tensor:
        """uint8 N x S x S x 3 -> float N x 3 x input_size x input_size, as the weights expect."""
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def stages(self) -> list[nn.Module]:
        raise NotImplementedError

    def pretrained_head(self) -> nn.Linear | None:
        return None

    def embedding_head(self, dim: int) -> nn.Module | None:
        """A head of the backbone's own making (a fused backbone's per-member heads); None: the shared
        linear head of ``dim`` outputs."""
        return None

    def freeze_all_but_last(self, n_stages: int) -> None:
        """Freeze everything, then unfreeze the deepest ``n_stages`` stages (BN of frozen ones in eval)."""
        stages = self.stages()
        if not 0 <= n_stages <= len(stages):
            raise ValueError(f"n_stages must be in [0, {len(stages)}], got {n_stages}")
        for p in self.parameters():
            p.requires_grad_(False)
        for stage in stages[len(stages) - n_stages :]:
            for p in stage.parameters():
                p.requires_grad_(True)
        self._frozen = stages[: len(stages) - n_stages]

    def train(self, mode: bool = True):
        super().train(mode)
        for stage in getattr(self, "_frozen", []):
            stage.eval()  # frozen BN statistics must not drift with face data
        return self


def to_nchw(chips: Tensor) -> Tensor:
    return chips.permute(0, 3, 1, 2).to(torch.float32)


FUSION_SEPARATOR = "+"  # "dlib_resnet+sface": several backbones fused (facegate.components.embedding.fusion)
