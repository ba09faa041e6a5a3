"""Labelled face sets read straight from their folders (no ingest): calibration and its benchmark.

A model's calibration and the calibration-transfer benchmark need faces of people the model never saw,
from several sources, embedded exactly as the service embeds them (the detector and chip geometry in
params, flip TTA). Three layouts, as the shared datasets come:

- ``lfw``: ``<Name>/<Name>_NNNN.jpg``; the identity split is the ingest's own rule
  (:func:`facegate.components.core.datasets.assign_identity_splits`, same seed and fraction), so "held-out" means the
  same people whether or not LFW was ingested;
- ``image_folder``: ``<identity>/<image>`` (ORL's ``sN/M.pgm``, an operator's own photos);
- ``voc_faces``: every VOC box of at least ``min_side`` pixels, cropped with context and scaled so the
  detector sees a face of ~``FACE_PX`` pixels; each face is its own stranger (the face-mask set has no
  identities). Crops are written once under the cache folder, so the chip cache applies to them too.

Chips come from the chip cache (the face nearest the centre of each image; images where the detector
found nothing are marked ``fallback`` and left out by :meth:`FaceSet.detected`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from facegate.components.core.datasets import assign_identity_splits, list_image_folder, list_lfw, list_voc
from facegate.components.core.devices import module_device
from facegate.components.core.errors import DatasetError
from facegate.components.core.images import load_image
from facegate.components.embedding.backbones import make_backbone
from facegate.components.embedding.model import cached_features, embed_chips, embed_from_features
from facegate.components.faces.chips import cache_key, cached_chips

FACE_PX = 110  # a VOC face crop is scaled so the box's longer side has this many pixels
CROP_CONTEXT = 2.0  # the crop spans this many box sides around the box centre
KINDS = ("lfw", "image_folder", "voc_faces")


@dataclass
class FaceSet:
    """Images of one set with an identity each (a stranger set: one identity per face)."""

    name: str
    paths: list[Path]
    hashes: list[str]
    identities: np.ndarray
    split: np.ndarray | None = None  # lfw: "train" | "val" per image (the ingest's identity split)
    chips: np.ndarray | None = None  # N x S x S x C uint8, once :func:`attach_chips` ran
    chip_key: str = ""
    fallback: np.ndarray | None = None  # True where no face was detected (a centred box was assumed)
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, rows: np.ndarray) -> FaceSet:
        """The images at ``rows`` (before chips are attached)."""
        rows = np.asarray(rows, int)
        return FaceSet(
            self.name,
            [self.paths[i] for i in rows],
            [self.hashes[i] for i in rows],
            self.identities[rows],
            None if self.split is None else self.split[rows],
            meta=dict(self.meta),
        )

    def rows(self, mask: np.ndarray | None = None) -> np.ndarray:
        """Row indices where ``mask`` holds and a face was detected."""
        keep = np.ones(len(self), bool) if mask is None else np.asarray(mask, bool).copy()
        if self.fallback is not None:
            keep &= ~self.fallback
        return np.flatnonzero(keep)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lfw_set(root: Path, seed: int, val_fraction: float, min_train_images: int = 2) -> FaceSet:
    """Every LFW image with the ingest's identity split (``val``: held-out identities)."""
    items, _ = list_lfw(root)
    paths = [root / i.relpath for i in items]
    hashes = [_sha256(p) for p in paths]
    table = pd.DataFrame({"identity": [i.identity for i in items], "sha256": hashes})
    split = assign_identity_splits(table, val_fraction, seed, min_train_images).to_numpy()
    return FaceSet("lfw", paths, hashes, table["identity"].to_numpy(), split=split)


def image_folder_set(root: Path, name: str | None = None) -> FaceSet:
    """``<identity>/<image>`` folders: the folder name is the identity."""
    items, _ = list_image_folder(root)
    paths = [root / i.relpath for i in items]
    return FaceSet(name or root.name, paths, [_sha256(p) for p in paths], np.array([i.identity for i in items]))


def crop_box(pixels: np.ndarray, box: dict, context: float = CROP_CONTEXT, face_px: int = FACE_PX) -> np.ndarray:
    """The box with ``context`` x its size around it (edges replicated), scaled so the box's longer side
    is ``face_px`` pixels."""
    import cv2  # heavy: OpenCV's native module; only the paths that use it load it

    x0, y0, x1, y1 = (float(box[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
    side = max(x1 - x0, y1 - y0)
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, context * side / 2
    h, w = pixels.shape[:2]
    left, top, right, bottom = (int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half))
    pad = max(0, -left, -top, right - w, bottom - h)
    padded = (
        cv2.copyMakeBorder(np.ascontiguousarray(pixels), pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else pixels
    )
    crop = padded[top + pad : bottom + pad, left + pad : right + pad]
    size = max(1, int(round(face_px * context)))
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if side > face_px else cv2.INTER_CUBIC)


def voc_face_set(root: Path, cache_dir: Path, min_side: float = 40.0, name: str | None = None) -> FaceSet:
    """Every VOC box of at least ``min_side`` pixels (shorter side) as a stranger's face crop."""
    from PIL import Image  # heavy: only image paths need Pillow

    items, _ = list_voc(root)
    out = cache_dir / f"voc-crops-{root.name}-{int(min_side)}"
    out.mkdir(parents=True, exist_ok=True)
    paths, hashes, ids, labels = [], [], [], []
    for item in items:
        boxes = [b for b in (item.boxes or ()) if min(b["xmax"] - b["xmin"], b["ymax"] - b["ymin"]) >= min_side]
        if not boxes:
            continue
        pixels = None
        for j, box in enumerate(boxes):
            stem = f"{Path(item.relpath).stem}-{j}"
            target = out / f"{stem}.png"
            if not target.is_file():
                pixels = load_image(root / item.relpath) if pixels is None else pixels
                tmp = target.with_suffix(".tmp.png")
                Image.fromarray(crop_box(pixels, box)).save(tmp)
                tmp.replace(target)
            paths.append(target)
            hashes.append(_sha256(target))
            ids.append(stem)
            labels.append(box["label"])
    if not paths:
        raise DatasetError(f"{root}: no VOC box of at least {min_side} px")
    return FaceSet(name or root.name, paths, hashes, np.array(ids), meta={"labels": labels, "min_side": min_side})


def read_face_set(
    kind: str,
    root: Path,
    *,
    cache_dir: Path,
    seed: int,
    val_fraction: float,
    name: str | None = None,
    min_side: float = 40.0,
) -> FaceSet:
    if kind == "lfw":
        return lfw_set(root, seed, val_fraction)
    if kind == "image_folder":
        return image_folder_set(root, name)
    if kind == "voc_faces":
        return voc_face_set(root, cache_dir, min_side, name)
    raise DatasetError(f"unknown face-set kind {kind!r} (known: {', '.join(KINDS)})")


def chips_cached(face_set: FaceSet, cache_dir: Path, *, detector: str, upsample: int, geometry: str) -> bool:
    """Whether the chip cache already holds this set's chips under these settings."""
    settings = {"detector": detector, "upsample": upsample}
    if geometry != "dlib_150":  # as cached_chips keys it: the default geometry is left out
        settings["geometry"] = geometry
    key = cache_key(face_set.hashes, **settings)
    return (cache_dir / f"chips-{key}.npy").is_file() and (cache_dir / f"chips-{key}.parquet").is_file()


def attach_chips(
    face_set: FaceSet, cache_dir: Path, *, detector: str, upsample: int, geometry: str, progress=None
) -> FaceSet:
    """The centre face of every image, aligned in ``geometry``, through the chip cache."""
    chips = cached_chips(
        cache_dir,
        face_set.paths,
        face_set.hashes,
        detector=detector,
        upsample=upsample,
        geometry=geometry,
        progress=progress,
    )
    face_set.chips, face_set.chip_key = chips.chips, chips.key
    face_set.fallback = chips.table["fallback"].to_numpy(bool)
    return face_set


def backbone_is_pretrained(model) -> bool:
    """True when ``model``'s backbone holds exactly the packaged pretrained weights (the pretrained
    model, or one trained in ``head`` mode): its frozen features can then come from the feature cache."""
    import torch  # heavy: torch loads ~1 s of native code; only the paths that run a model need it

    try:
        fresh = make_backbone(model.backbone.name).state_dict()
    except ValueError:
        return False
    mine = model.backbone.state_dict()
    return mine.keys() == fresh.keys() and all(torch.equal(mine[k], fresh[k]) for k in mine)


def embed_face_set(
    model, face_set: FaceSet, flip_tta: bool, cache_dir: Path, pretrained: bool | None = None, progress=None
) -> np.ndarray:
    """Unit embeddings of every chip of ``face_set`` as the service computes them (flip TTA as in params).

    A model whose backbone is the pretrained one embeds from the frozen-feature cache (shared with the
    LFW benchmark and training), so a second calibration or benchmark costs seconds; any other model
    embeds its chips end to end."""
    if face_set.chips is None:
        raise ValueError(f"{face_set.name}: chips not attached")
    pretrained = backbone_is_pretrained(model) if pretrained is None else pretrained
    if pretrained:
        feats, flips = cached_features(
            face_set.chips,
            face_set.chip_key,
            model.backbone.name,
            cache_dir,
            progress=progress,
            device=module_device(model),
            precision=model.backbone.precision,
        )
        return embed_from_features(model, feats, flips if flip_tta else None)
    return embed_chips(model, np.asarray(face_set.chips), flip_tta)


def set_features(model, face_set: FaceSet, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The pretrained backbone's cached (plain, mirrored) features of the set's chips."""
    if face_set.chips is None:
        raise ValueError(f"{face_set.name}: chips not attached")
    return cached_features(
        face_set.chips, face_set.chip_key, model.backbone.name, cache_dir, precision=model.backbone.precision
    )
