"""Photos -> embeddings with the model in service: detect, align, embed (flip TTA from params).

One object the enrolment, identify/verify commands, the API and the benchmarks share, so every path
detects, aligns and embeds the same way. ``embedder_version`` identifies the model; a gallery built
by another version is refused (embeddings of different models are not comparable). The model runs on
``embedding.device`` (moved there in place; ``cuda`` without a GPU is ``DeviceUnavailable`` at start), its
backbones inferring at ``embedding.precision`` (bfloat16 on CPUs that have it natively) on ``embedding.backend``
(torch, or OpenVINO's compiled copies: facegate.components.embedding.openvino_runtime).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facegate.components.core.devices import resolve_torch_device
from facegate.components.core.settings import Settings
from facegate.components.embedding.folding import weights_fingerprint
from facegate.components.embedding.inference_graphs import prepare_full_graph
from facegate.components.embedding.model import EmbeddingModel, embed_chips
from facegate.components.embedding.openvino_runtime import inference_summary, set_backend
from facegate.components.embedding.precision import set_precision
from facegate.components.faces.align import FaceAligner
from facegate.components.faces.detectors import detector_from_settings
from facegate.components.faces.pipeline import FaceCrop, FaceFinder
from facegate.components.faces.types import FaceBox


@dataclass(frozen=True)
class FaceEmbedding:
    box: FaceBox
    embedding: np.ndarray  # 128-d, unit length
    chip: np.ndarray | None = None  # the aligned face it came from (deployment captures keep it)


def model_fingerprint(model: EmbeddingModel) -> str:
    """Content hash of the weights: two models with the same fingerprint embed identically."""
    return weights_fingerprint(model)


class FaceRecognizer:
    def __init__(self, model: EmbeddingModel, settings: Settings, version: str | None = None) -> None:
        self.device = resolve_torch_device(settings.embedding.device)
        self.flip_tta = settings.embedding.flip_tta
        self.finder = FaceFinder(
            detector_from_settings(settings.faces), FaceAligner(geometry=model.backbone.chip_geometry)
        )
        self.embedder_name = f"{model.name}"
        self.embedder_version = version or f"sha256:{model_fingerprint(model)}"
        self.model = set_precision(model.to(self.device).eval(), settings.embedding.precision)
        # openvino: the served full-embedding graph compiled now (or torch, with a warning); the backbones'
        # own copies only when a path needs them (features for caches, the status page)
        set_backend(self.model, settings.embedding.backend, prepare=False)
        prepare_full_graph(self.model, self.flip_tta)

    @property
    def inference(self) -> dict:
        """What the backbones run on (backend, precision; why torch where openvino was asked for)."""
        return inference_summary(self.model)

    @property
    def embedding_dim(self) -> int:
        """Size of this model's embeddings: a gallery is made for exactly one model."""
        return self.model.embedding_dim

    @torch.inference_mode()
    def embed_one(self, image: np.ndarray, source: str | Path) -> FaceEmbedding:
        """Exactly one face required (enrolment, 1:1): NoFaceFound / MultipleFaces otherwise."""
        crop = self.finder.single_face(image, source)
        return FaceEmbedding(crop.box, embed_chips(self.model, crop.chip[None], self.flip_tta)[0])

    @torch.inference_mode()
    def embed_all(self, image: np.ndarray) -> list[FaceEmbedding]:
        """Every face in a frame (1:K identification)."""
        return self.embed_crops(self.finder.all_faces(image))

    @torch.inference_mode()
    def embed_crops(self, crops: Sequence[FaceCrop]) -> list[FaceEmbedding]:
        """The full embedding of faces already found (the cascade embeds only the undecided ones)."""
        if not crops:
            return []
        embs = embed_chips(self.model, np.stack([c.chip for c in crops]), self.flip_tta)
        return [FaceEmbedding(c.box, e, c.chip) for c, e in zip(crops, embs)]

    @torch.inference_mode()
    def embed_aligned(self, chips: np.ndarray) -> np.ndarray:
        """Embeddings of chips already aligned for this model's geometry (captured templates re-embedded)."""
        return embed_chips(self.model, chips, self.flip_tta)
