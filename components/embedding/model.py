"""The face-embedding model: a backbone, a 128-d linear head, L2 normalisation.

Two ways to run it, matching the two transfer-learning modes: end to end on chips (``finetune``,
serving) and head-only on cached backbone features (``head``: the backbone is frozen, so its features
never change and are computed once). The functions below run where the model's weights are
(``devices.module_device``): whoever places the model (``embedding.device``) decides, batches follow it
and results come back as CPU numpy arrays.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facegate.components.core.devices import module_device
from facegate.components.embedding.backbones import Backbone, SFaceBackbone, features_tag, make_backbone
from facegate.components.embedding.fusion import FusedHead
from facegate.components.embedding.inference_graphs import full_graph
from facegate.components.embedding.position_gate import PositionGatedHead
from facegate.components.embedding.precision import inference_dtype, set_precision

EMBEDDING_DIM = 128


class EmbeddingModel(nn.Module):
    def __init__(self, backbone: Backbone, dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.backbone = backbone
        own = backbone.embedding_head(dim)
        if own is not None:
            self.head = own
            return
        self.head = nn.Linear(backbone.feature_dim, dim, bias=False)
        pretrained = backbone.pretrained_head()
        if pretrained is not None and pretrained.weight.shape == self.head.weight.shape:
            with torch.no_grad():  # start from the backbone's own embedding (dlib's fc)
                self.head.weight.copy_(pretrained.weight)
        else:
            nn.init.xavier_uniform_(self.head.weight)

    @property
    def name(self) -> str:
        return self.backbone.name

    @property
    def embedding_dim(self) -> int:
        """Size of the embeddings: the head's outputs."""
        # ``head`` is an nn.Module to torch: a linear head, or the backbone's own (gated or fused)
        return int(cast("nn.Linear | PositionGatedHead | FusedHead", self.head).out_features)

    def embed_features(self, feats: Tensor) -> Tensor:
        return F.normalize(self.head(feats), dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Preprocessed float input -> unit-length embeddings."""
        return self.embed_features(self.backbone.features(x))


def upgrade_sface_heads(model: EmbeddingModel) -> EmbeddingModel:
    """A model pickled before SFace's features became per-position shares (``features_revision`` 1: its
    head was a linear layer on SFace's summed 128-d embedding) as today's exact equivalent: the gated
    head with every gate at 1 and that linear layer. Anything else is returned unchanged."""

    def upgraded(member: Backbone, head: nn.Module) -> nn.Module:
        if (
            not isinstance(member, SFaceBackbone)
            or not isinstance(head, nn.Linear)
            or head.in_features != member.embedding_dim
        ):
            return head
        if "_identity" in member._modules:
            del member._modules["_identity"]  # revision 1's initial head, kept on the backbone
        gated = member.embedding_head(head.out_features)
        with torch.no_grad():
            gated.linear.weight.copy_(head.weight)
        return gated

    members = getattr(model.backbone, "members", None)
    if members is None:
        model.head = upgraded(model.backbone, model.head)
    else:
        head = model.head
        assert isinstance(head, FusedHead)  # a fused backbone's own head (FusedBackbone.embedding_head)
        for i, member in enumerate(members):
            head.heads[i] = upgraded(member, head.heads[i])
        head.in_dims = [m.feature_dim for m in members]
        model.backbone.feature_dim = sum(head.in_dims)  # an instance attribute: pickled with revision 1's
    return model


def ensure_eval(module: nn.Module) -> None:
    """Eval mode, set only where a submodule is training: ``.eval()`` itself walks and re-assigns every
    submodule (and the backbones' train() hooks): 2.7 ms of Python per call on the fused model, twice per
    face on the serving path, against 0.5 ms for this check."""
    if any(m.training for m in module.modules()):
        module.eval()


@torch.inference_mode()
def chip_features(
    backbone: Backbone, chips: np.ndarray, batch_size: int = 64, flip: bool = False, progress=None
) -> np.ndarray:
    """Pooled backbone features of uint8 chips (optionally of their mirror images), float32."""
    ensure_eval(backbone)
    device = module_device(backbone)
    out = np.zeros((len(chips), backbone.feature_dim), np.float32)
    for start in range(0, len(chips), batch_size):
        batch = torch.from_numpy(np.array(chips[start : start + batch_size]))  # a copy: chips may be a read-only memmap
        batch = batch.to(device, non_blocking=True)  # uint8 travels: 4x fewer bytes than float
        if flip:
            batch = batch.flip(2)  # N x H x W x C: mirror along W
        x = backbone.preprocess(batch).contiguous(memory_format=torch.channels_last)
        out[start : start + len(batch)] = backbone.features(x).cpu().numpy()
        if progress:
            progress(min(start + batch_size, len(chips)), len(chips))
    return out


@torch.inference_mode()
def embed_from_features(model: EmbeddingModel, feats: np.ndarray, flip_feats: np.ndarray | None = None) -> np.ndarray:
    """Embeddings from cached features; with ``flip_feats``, flip TTA: mean of both, re-normalised."""
    ensure_eval(model)
    device = module_device(model)
    e = model.embed_features(torch.from_numpy(feats).to(device))
    if flip_feats is not None:
        e = F.normalize(e + model.embed_features(torch.from_numpy(flip_feats).to(device)), dim=1)
    return e.cpu().numpy()


@torch.inference_mode()
def embed_chips(model: EmbeddingModel, chips: np.ndarray, flip_tta: bool = False, batch_size: int = 64) -> np.ndarray:
    """Chips -> unit-length embeddings, end to end (serving path). With flip TTA each chip and its mirror
    image share one forward pass (one batch of 2n, not two of n: on one face, half the per-call cost)."""
    graph = full_graph(model, np.asarray(chips[:1]), flip_tta)
    if graph is not None:  # embedding.backend openvino: the whole path is one graph (inference_graphs.py)
        step = max(1, batch_size // 2) if flip_tta else batch_size
        parts = [graph.embed(np.array(chips[i : i + step])) for i in range(0, len(chips), step)]  # a copy: memmaps
        return np.concatenate(parts) if parts else np.zeros((0, model.embedding_dim), np.float32)
    if not flip_tta:
        return embed_from_features(model, chip_features(model.backbone, chips, batch_size))
    half = max(1, batch_size // 2)
    out = []
    for start in range(0, len(chips), half):
        part = np.asarray(chips[start : start + half])
        feats = chip_features(model.backbone, np.concatenate([part, part[:, :, ::-1]]), 2 * len(part))
        out.append(embed_from_features(model, feats[: len(part)], feats[len(part) :]))
    return np.concatenate(out) if out else np.zeros((0, model.embedding_dim), np.float32)


def _cache_tag(backbone: str, precision: str, device: str | torch.device) -> str:
    """The cache-name part for the backbone's features revision and the dtype ``precision`` resolves to:
    bfloat16 features are the service's, not float32 ones ('' for revision 1 in float32, so those caches
    keep their names)."""
    return features_tag(backbone) + ("-bf16" if inference_dtype(precision, device) == torch.bfloat16 else "")


def feature_cache_path(
    cache_dir: Path,
    chip_key: str,
    backbone: str,
    flip: bool,
    precision: str = "float32",
    device: str | torch.device = "cpu",
) -> Path:
    """Where the frozen features of a chip set live: by chip key, backbone, resolved dtype, plain or mirrored."""
    tag = _cache_tag(backbone, precision, device)
    return Path(cache_dir) / f"features-{chip_key}-{backbone}{tag}-{'flip' if flip else 'plain'}.npy"


def cached_features(
    chips: np.ndarray,
    chip_key: str,
    backbone_name: str,
    cache_dir: Path,
    progress=None,
    device: str | torch.device = "cpu",
    precision: str = "float32",
) -> tuple[np.ndarray, np.ndarray]:
    """Frozen-backbone features of every chip and of its mirror image, cached on disk by chip key;
    computed on ``device`` when missing (the cache does not depend on it: GPU features differ from CPU
    ones in their last bits only). ``precision`` (facegate.components.embedding.precision) is part of the key
    when it resolves to bfloat16: the service's own features, not float32 ones."""
    out = []
    backbone = None
    for flip in (False, True):
        path = feature_cache_path(cache_dir, chip_key, backbone_name, flip, precision, device)
        if not path.is_file():
            if backbone is None:
                backbone = make_backbone(backbone_name).to(device)
                set_precision(backbone, precision)
            stage = "features-flip" if flip else "features"
            feats = chip_features(
                backbone,
                chips,
                flip=flip,
                progress=(lambda i, n, stage=stage: progress(stage, i, n)) if progress else None,
            )
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, feats)
            tmp.replace(path)
        out.append(np.load(path))
    return out[0], out[1]


def cached_augmented_features(
    chips: np.ndarray,
    chip_key: str,
    backbone_name: str,
    cache_dir: Path,
    make_pipeline,
    description: dict,
    copies: int,
    seed: int,
    batch_size: int = 64,
    progress=None,
    device: str | torch.device = "cpu",
    precision: str = "float32",
) -> list[np.ndarray]:
    """Frozen-backbone features of ``copies`` albumentations copies of every chip, cached on disk.

    The key covers the chips, the backbone, the pipeline's serialised form and the seed, so a changed
    augmentation param means new copies and an unchanged one reuses them (a re-run costs nothing).
    ``make_pipeline(seed)`` builds the pipeline; copy ``c`` is drawn with seed ``seed + c``; the
    backbone runs on ``device`` (the augmentation itself on the CPU).
    """
    aug_key = hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()[:12]
    tag = _cache_tag(backbone_name, precision, device)
    out, backbone = [], None
    for c in range(copies):
        path = Path(cache_dir) / f"features-{chip_key}-{backbone_name}{tag}-aug{aug_key}-s{seed + c}.npy"
        if not path.is_file():
            if backbone is None:
                backbone = set_precision(make_backbone(backbone_name).to(device), precision)
            backbone.eval()
            pipeline = make_pipeline(seed + c)
            feats = np.zeros((len(chips), backbone.feature_dim), np.float32)
            for start in range(0, len(chips), batch_size):
                batch = np.stack(
                    [pipeline(image=np.ascontiguousarray(chip))["image"] for chip in chips[start : start + batch_size]]
                )
                feats[start : start + len(batch)] = chip_features(backbone, batch, batch_size)
                if progress:
                    progress(f"augmented copy {c + 1}/{copies}", min(start + batch_size, len(chips)), len(chips))
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, feats)
            tmp.replace(path)
        out.append(np.load(path))
    return out
