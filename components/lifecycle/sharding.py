"""Chip extraction, frozen-backbone features and embeddings of one shard of an image list, and the
assembly of shards into the very cache entries the training chain reads.

The work per image is independent, so an image list cut into contiguous shards can be processed
anywhere (a Dask worker, another machine) and put back together in order: the result is the same
arrays as one process would make (uint8 chips bit for bit; float features and embeddings up to the
last bits of a different thread count). Assembled chips and features are written under the keys of
``facegate.components.faces.chips.cached_chips`` and ``facegate.components.embedding.model.cached_features``, so a chain
that runs afterwards detects, aligns and embeds nothing again. No Prefect here: flows/distributed.py
fans these functions out with a task runner.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from facegate.components.embedding.backbones import make_backbone
from facegate.components.embedding.model import EmbeddingModel, chip_features, embed_from_features, feature_cache_path
from facegate.components.embedding.precision import set_precision
from facegate.components.faces.chips import ChipSet, cache_key, extract_chips

_MODELS: dict[str, EmbeddingModel] = {}  # per worker process: backbone name -> pretrained EmbeddingModel


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous [start, stop) ranges covering 0..n, sizes differing by at most one (no empty ones)."""
    shards = max(1, min(shards, n)) if n else 1
    edges = np.linspace(0, n, shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a] or [(0, 0)]


@dataclass
class ShardEmbeddings:
    features: np.ndarray  # N x D frozen-backbone features
    flip_features: np.ndarray  # of the mirrored chips
    embeddings: np.ndarray  # N x 128, unit length (flip TTA when asked)


def chip_shard(paths: list[str], *, detector: str, upsample: int, geometry: str, max_pixels: int) -> ChipSet:
    """Centre-face chips of one shard in ``geometry``, in this process (the shard is the unit of parallelism)."""
    return extract_chips(
        [Path(p) for p in paths],
        detector=detector,
        upsample=upsample,
        max_pixels=max_pixels,
        geometry=geometry,
        workers=1,
    )


def pretrained_model(backbone: str, precision: str = "float32"):
    """The pretrained embedding model (frozen backbone + its own head), loaded once per process."""
    if backbone not in _MODELS:
        model = EmbeddingModel(make_backbone(backbone))
        model.eval()
        _MODELS[backbone] = model

    return set_precision(_MODELS[backbone], precision)


def embed_shard(
    chips: np.ndarray, *, backbone: str, flip_tta: bool, threads: int | None = None, precision: str = "float32"
) -> ShardEmbeddings:
    """Features of the chips and of their mirrors, and the pretrained model's embeddings, for one shard.

    ``threads`` caps torch's threads in this process (a Dask worker per core wants 1)."""
    import torch  # heavy: torch loads ~1 s of native code; only the paths that run a model need it

    if threads:
        torch.set_num_threads(threads)
    model = pretrained_model(backbone, precision)
    feats = chip_features(model.backbone, chips)
    flipped = chip_features(model.backbone, chips, flip=True)
    emb = embed_from_features(model, feats, flipped if flip_tta else None)
    return ShardEmbeddings(feats, flipped, emb)


def assemble_chips(parts: list[ChipSet], key: str) -> ChipSet:
    """Shards (in order) back into one ChipSet carrying the cache ``key``."""
    chips = np.concatenate([p.chips for p in parts]) if parts else np.zeros((0, 0, 0, 3), np.uint8)
    table = pd.concat([p.table for p in parts], ignore_index=True) if parts else pd.DataFrame()
    return ChipSet(chips, table, key)


def assemble_embeddings(parts: list[ShardEmbeddings]) -> ShardEmbeddings:
    return ShardEmbeddings(
        *(np.concatenate([getattr(p, f) for p in parts]) for f in ("features", "flip_features", "embeddings"))
    )


def chips_key(hashes: list[str], *, detector: str, upsample: int, geometry: str = "dlib_150") -> str:
    """The key ``cached_chips`` gives these images with these settings (the default geometry is left out
    of the key there, so it is here)."""
    extra = {} if geometry == "dlib_150" else {"geometry": geometry}
    return cache_key(hashes, detector=detector, upsample=upsample, **extra)


def chip_cache_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    return Path(cache_dir) / f"chips-{key}.npy", Path(cache_dir) / f"chips-{key}.parquet"


def store_chips(cache_dir: Path, chipset: ChipSet) -> Path:
    """Write the chips as ``cached_chips`` would (array first, table last: its presence marks completion)."""
    npy, table = chip_cache_paths(cache_dir, chipset.key)
    npy.parent.mkdir(parents=True, exist_ok=True)
    tmp = npy.with_suffix(".tmp.npy")
    np.save(tmp, chipset.chips)
    chipset.table.to_parquet(table.with_suffix(".tmp"), index=False)
    os.replace(tmp, npy)
    os.replace(table.with_suffix(".tmp"), table)
    return npy


def store_features(
    cache_dir: Path, chip_key: str, backbone: str, result: ShardEmbeddings, precision: str = "float32"
) -> list[Path]:
    """Write plain and mirrored features as ``cached_features`` would (computed at ``precision``)."""
    out = []
    for flip, feats in ((False, result.features), (True, result.flip_features)):
        path = feature_cache_path(cache_dir, chip_key, backbone, flip, precision)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, feats)
        tmp.replace(path)
        out.append(path)
    return out
