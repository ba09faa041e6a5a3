"""Ingest: a dataset source becomes a manifest table under data/, with the image bytes brought along.

A source is read-only input (the shared datasets root). Ingest decodes every image once through the
one loader, records (path, source, identity or boxes, split, sha256, width, height, format), and
links the bytes into ``data/<name>/`` (mirroring the source layout) so that a DVC version of ``data/``
covers the pixels, not only paths. Files that cannot be used are copied to ``data/<name>/_quarantine/``
and listed in ``quarantine.parquet`` with the reason: nothing is silently dropped. Reading a source's
layout and the split rule live in core (core/datasets.py): calibration and training read them too.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from facegate.components.core.datasets import (
    EXTRA_COLUMNS,
    MANIFEST_COLUMNS,
    MAY_BE_EMPTY,
    QUARANTINE_COLUMNS,
    QUARANTINE_DIR,
    SOURCES,
    SourceItem,
    assign_identity_splits,
    assign_image_splits,
)
from facegate.components.core.errors import DatasetError, ImageError, ImageTooSmall
from facegate.components.core.images import read_image


@dataclass
class IngestResult:
    name: str
    kind: str
    manifest: pd.DataFrame
    quarantine: pd.DataFrame
    out_dir: Path
    extra_files: list[str] = field(default_factory=list)
    clipped_boxes: list[str] = field(default_factory=list)  # "path#box" clipped within tolerance

    def summary(self) -> dict:
        m = self.manifest
        return {
            "dataset": self.name,
            "kind": self.kind,
            "images": int(len(m)),
            "identities": int(m["identity"].nunique()) if self.kind != "voc" else 0,
            "boxes": int(sum(len(json.loads(b)) for b in m["boxes"].dropna())) if self.kind == "voc" else 0,
            "splits": {k: int(v) for k, v in m["split"].value_counts().sort_index().items()},
            "quarantined": int(len(self.quarantine)),
            "boxes_clipped": len(self.clipped_boxes),
        }


def clip_boxes(boxes: list[dict], width: int, height: int, tolerance: float) -> tuple[list[dict], list[int]]:
    """Clip coordinates that overshoot the image by at most ``tolerance`` pixels.

    Annotation tools often write the 1-based ``width + 1`` for a box touching the right edge; those
    are clipped (and counted). Anything further out is left alone for validation to reject by name.
    """
    out, clipped = [], []
    for i, b in enumerate(boxes):
        nb = dict(b)
        for key, limit in (("xmin", width), ("xmax", width), ("ymin", height), ("ymax", height)):
            v = nb[key]
            if -tolerance <= v < 0:
                nb[key] = 0.0
            elif limit < v <= limit + tolerance:
                nb[key] = float(limit)
        if nb != b:
            clipped.append(i)
        out.append(nb)
    return out, clipped


def bring_file(src: Path, dst: Path, link_mode: str) -> None:
    """Hardlink when the filesystem allows (no second copy of the bytes), else copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    if link_mode == "hardlink":
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copyfile(src, dst)


def inspect_item(
    item: SourceItem, name: str, source_root: Path, max_pixels: int, min_side: int, box_clip_tolerance: float
) -> dict:
    """One file decoded through the one image loader: a manifest row, or a quarantine row with the reason."""
    src = source_root / item.relpath
    row: dict[str, Any] = {
        "path": f"{name}/{item.relpath}",
        "source": name,
        "identity": item.identity,
        "boxes": None if item.boxes is None else json.dumps(list(item.boxes)),
        **(item.meta or {}),
    }
    if item.problem:
        return {**row, "code": "bad_annotation", "reason": item.problem}
    try:
        decoded = read_image(src, max_pixels)
        if min(decoded.width, decoded.height) < min_side:
            raise ImageTooSmall(src, f"{decoded.width}x{decoded.height} below min side {min_side}")
    except ImageError as exc:
        return {**row, "code": exc.code, "reason": exc.reason}
    if item.boxes is not None:
        boxes, clipped = clip_boxes(list(item.boxes), decoded.width, decoded.height, box_clip_tolerance)
        row["boxes"] = json.dumps(boxes)
        row["clipped"] = [f"{row['path']}#{i}" for i in clipped]
    return {**row, "sha256": decoded.sha256, "width": decoded.width, "height": decoded.height, "format": decoded.format}


def bring_files(
    good: list[dict], bad: list[dict], extra: list[str], source_root: Path, work_dir: Path, link_mode: str
) -> None:
    """Usable images (and a source's extra files) into the dataset folder; unusable ones into quarantine."""
    for r in good:
        rel = r["path"].split("/", 1)[1]
        bring_file(source_root / rel, work_dir / rel, link_mode)
    for r in bad:
        rel = r["path"].split("/", 1)[1]
        bring_file(source_root / rel, work_dir / QUARANTINE_DIR / rel, "copy")
    for rel in extra:
        bring_file(source_root / rel, work_dir / rel, link_mode)


def replace_folder(work_dir: Path, final_dir: Path) -> None:
    """Swap the freshly written folder in: a killed ingest leaves the previous version whole."""
    if final_dir.exists():
        trash = final_dir.parent / f".{final_dir.name}.old"
        if trash.exists():
            shutil.rmtree(trash)
        final_dir.rename(trash)
        work_dir.rename(final_dir)
        shutil.rmtree(trash)
    else:
        work_dir.rename(final_dir)


def ingest_source(
    name: str,
    kind: str,
    source_root: Path,
    data_root: Path,
    *,
    val_fraction: float,
    seed: int,
    max_pixels: int,
    min_side: int,
    min_train_images: int = 2,
    link_mode: str = "hardlink",
    box_clip_tolerance: float = 1.0,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> IngestResult:
    """Ingest one source into ``data_root/name`` (rebuilt atomically: a killed ingest leaves the old one)."""
    if kind not in SOURCES:
        raise DatasetError(f"{name}: unknown source kind {kind!r} (known: {sorted(SOURCES)})")
    source_root = Path(source_root)
    if not source_root.exists() and kind not in MAY_BE_EMPTY:
        raise DatasetError(f"{source_root}: dataset folder not found (set FACEGATE_DATASETS?)")
    items, extra = SOURCES[kind](source_root)
    if limit is not None:
        items = items[:limit]
    final_dir = data_root / name
    work_dir = data_root / f".{name}.partial"
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)

    rows = []
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        inspected = pool.map(
            lambda item: inspect_item(item, name, source_root, max_pixels, min_side, box_clip_tolerance), items
        )
        for i, row in enumerate(inspected, 1):
            rows.append(row)
            if progress and (i % 500 == 0 or i == len(items)):
                progress(i, len(items))
    good = [r for r in rows if "code" not in r]
    bad = [r for r in rows if "code" in r]
    bring_files(good, bad, extra, source_root, work_dir, link_mode)

    manifest = pd.DataFrame(good, columns=MANIFEST_COLUMNS + EXTRA_COLUMNS.get(kind, []))
    manifest["width"] = manifest["width"].astype("int64")
    manifest["height"] = manifest["height"].astype("int64")
    if kind == "voc":
        manifest["split"] = assign_image_splits(manifest, val_fraction, seed)
    else:
        manifest["split"] = assign_identity_splits(manifest, val_fraction, seed, min_train_images)
    quarantine = pd.DataFrame(
        [
            {
                "path": f"{name}/{QUARANTINE_DIR}/{r['path'].split('/', 1)[1]}",
                "source": name,
                "code": r["code"],
                "reason": r["reason"],
            }
            for r in bad
        ],
        columns=QUARANTINE_COLUMNS,
    )
    manifest.to_parquet(work_dir / "manifest.parquet", index=False)
    quarantine.to_parquet(work_dir / "quarantine.parquet", index=False)
    replace_folder(work_dir, final_dir)
    return IngestResult(
        name=name,
        kind=kind,
        manifest=manifest,
        quarantine=quarantine,
        out_dir=final_dir,
        extra_files=extra,
        clipped_boxes=[c for r in good for c in r.get("clipped", [])],
    )
