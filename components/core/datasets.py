"""Dataset sources -> manifest tables under data/, with the image bytes brought along.

A source is read-only input (the shared datasets root). Ingest decodes every image once through the
one loader, records (path, source, identity or boxes, split, sha256, width, height, format), and
links the bytes into ``data/<name>/`` (mirroring the source layout) so that a DVC version of ``data/`` covers the pixels, not only
paths. Files that cannot be used are copied to ``data/<name>/_quarantine/`` and listed in
``quarantine.parquet`` with the reason: nothing is silently dropped.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from facegate.components.core.errors import DatasetError, ImageError, ImageTooSmall
from facegate.components.core.images import read_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
MANIFEST_COLUMNS = ["path", "source", "identity", "boxes", "split", "sha256", "width", "height", "format"]
QUARANTINE_COLUMNS = ["path", "source", "code", "reason"]
QUARANTINE_DIR = "_quarantine"


@dataclass(frozen=True)
class SourceItem:
    """One file of a source: where it is, who it shows or what boxes it holds."""

    relpath: str  # relative to the source folder, POSIX form
    identity: str | None = None
    boxes: tuple[dict, ...] | None = None
    problem: str | None = None  # an annotation problem found while listing (e.g. malformed XML)


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


# ---------------------------------------------------------------- sources
def list_lfw(root: Path) -> tuple[list[SourceItem], list[str]]:
    """LFW: ``<Name>/<Name>_NNNN.jpg`` plus the View 2 ``pairs.txt`` (kept beside the images)."""
    if not (root / "pairs.txt").is_file():
        raise DatasetError(f"{root}: not an LFW folder (pairs.txt missing)")
    items, _ = list_image_folder(root)
    return items, ["pairs.txt"]


def list_image_folder(root: Path) -> tuple[list[SourceItem], list[str]]:
    """``<identity>/<image>``: the folder name is the identity; files at the top level are ignored."""
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    items = []
    for ident_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(ident_dir.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                items.append(SourceItem(relpath=f"{ident_dir.name}/{f.name}", identity=ident_dir.name))
    if not items:
        raise DatasetError(f"{root}: no images in <identity>/ sub-folders")
    return items, []


def list_voc(root: Path) -> tuple[list[SourceItem], list[str]]:
    """Pascal VOC: ``images/*`` with ``annotations/<stem>.xml`` (boxes in pixels, class names)."""
    images, annotations = root / "images", root / "annotations"
    if not images.is_dir() or not annotations.is_dir():
        raise DatasetError(f"{root}: not a VOC folder (needs images/ and annotations/)")
    items = []
    for f in sorted(images.iterdir()):
        if not (f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES):
            continue
        xml = annotations / f"{f.stem}.xml"
        try:
            boxes = tuple(parse_voc_boxes(xml))
            items.append(SourceItem(relpath=f"images/{f.name}", boxes=boxes))
        except DatasetError as exc:
            items.append(SourceItem(relpath=f"images/{f.name}", problem=exc.message))
    return items, [f"annotations/{p.name}" for p in sorted(annotations.glob("*.xml"))]


def parse_voc_boxes(xml_path: Path) -> list[dict]:
    """Boxes of one VOC annotation as ``{"label", "xmin", "ymin", "xmax", "ymax"}`` in pixels."""
    try:
        tree = ET.parse(xml_path)
    except FileNotFoundError:
        raise DatasetError(f"{xml_path}: annotation missing") from None
    except ET.ParseError as exc:
        raise DatasetError(f"{xml_path}: malformed XML ({exc})") from None
    boxes = []
    for i, obj in enumerate(tree.getroot().iter("object")):
        try:
            label = obj.findtext("name").strip()
            bb = obj.find("bndbox")
            box = {k: float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")}
        except (AttributeError, TypeError, ValueError):
            raise DatasetError(f"{xml_path}: object {i} has no valid name/bndbox") from None
        boxes.append({"label": label, **box})
    return boxes


SOURCES: dict[str, Callable[[Path], tuple[list[SourceItem], list[str]]]] = {
    "lfw": list_lfw,
    "image_folder": list_image_folder,
    "voc": list_voc,
}


# ---------------------------------------------------------------- splits
def unit_hash(key: str, seed: int) -> float:
    """A stable uniform number in [0, 1) for ``key``: the same split on every machine and run."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_identity_splits(
    manifest: pd.DataFrame, val_fraction: float, seed: int, min_train_images: int
) -> pd.Series:
    """Identity-level split; identities that share an image (duplicates) are kept together.

    Identities with fewer than ``min_train_images`` images cannot form triplets, so they go to the
    held-out split, where they serve as impostors.
    """
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for _, group in manifest.groupby("sha256")["identity"]:
        names = sorted(set(group))
        for other in names[1:]:
            parent[find(other)] = find(names[0])
    counts = manifest.groupby("identity").size()
    group_of = {ident: find(ident) for ident in counts.index}
    group_images: dict[str, int] = {}
    for ident, n in counts.items():
        group_images[group_of[ident]] = group_images.get(group_of[ident], 0) + int(n)
    split_of_group = {}
    for g, n in group_images.items():
        held_out = n < min_train_images or unit_hash(g, seed) < val_fraction
        split_of_group[g] = "val" if held_out else "train"
    return manifest["identity"].map(lambda i: split_of_group[group_of[i]])


def assign_image_splits(manifest: pd.DataFrame, val_fraction: float, seed: int) -> pd.Series:
    """Image-level split for detection data; identical files share a split."""
    return manifest["sha256"].map(lambda h: "val" if unit_hash(h, seed) < val_fraction else "train")


# ---------------------------------------------------------------- ingest
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
    if not source_root.exists():
        raise DatasetError(f"{source_root}: dataset folder not found (set FACEGATE_DATASETS?)")
    items, extra = SOURCES[kind](source_root)
    if limit is not None:
        items = items[:limit]

    final_dir = data_root / name
    work_dir = data_root / f".{name}.partial"
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)

    def inspect(item: SourceItem) -> dict:
        src = source_root / item.relpath
        row = {"path": f"{name}/{item.relpath}", "source": name, "identity": item.identity,
               "boxes": None if item.boxes is None else json.dumps(list(item.boxes))}
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
        return {**row, "sha256": decoded.sha256, "width": decoded.width, "height": decoded.height,
                "format": decoded.format}

    rows = []
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        for i, row in enumerate(pool.map(inspect, items), 1):
            rows.append(row)
            if progress and (i % 500 == 0 or i == len(items)):
                progress(i, len(items))

    good = [r for r in rows if "code" not in r]
    bad = [r for r in rows if "code" in r]
    for r in good:
        rel = r["path"].split("/", 1)[1]
        bring_file(source_root / rel, work_dir / rel, link_mode)
    for r in bad:
        rel = r["path"].split("/", 1)[1]
        bring_file(source_root / rel, work_dir / QUARANTINE_DIR / rel, "copy")
    for rel in extra:
        bring_file(source_root / rel, work_dir / rel, link_mode)

    manifest = pd.DataFrame(good, columns=MANIFEST_COLUMNS)
    manifest["width"] = manifest["width"].astype("int64")
    manifest["height"] = manifest["height"].astype("int64")
    if kind == "voc":
        manifest["split"] = assign_image_splits(manifest, val_fraction, seed)
    else:
        manifest["split"] = assign_identity_splits(manifest, val_fraction, seed, min_train_images)
    quarantine = pd.DataFrame(
        [{"path": f"{name}/{QUARANTINE_DIR}/{r['path'].split('/', 1)[1]}", "source": name,
          "code": r["code"], "reason": r["reason"]} for r in bad],
        columns=QUARANTINE_COLUMNS,
    )
    manifest.to_parquet(work_dir / "manifest.parquet", index=False)
    quarantine.to_parquet(work_dir / "quarantine.parquet", index=False)

    if final_dir.exists():
        trash = data_root / f".{name}.old"
        if trash.exists():
            shutil.rmtree(trash)
        final_dir.rename(trash)
        work_dir.rename(final_dir)
        shutil.rmtree(trash)
    else:
        work_dir.rename(final_dir)
    return IngestResult(name=name, kind=kind, manifest=manifest, quarantine=quarantine,
                        out_dir=final_dir, extra_files=extra,
                        clipped_boxes=[c for r in good for c in r.get("clipped", [])])


def read_manifest(data_root: Path, name: str) -> pd.DataFrame:
    path = data_root / name / "manifest.parquet"
    if not path.is_file():
        raise DatasetError(f"{path}: no manifest; run `facegate ingest` first")
    return pd.read_parquet(path)


def read_quarantine(data_root: Path, name: str) -> pd.DataFrame:
    path = data_root / name / "quarantine.parquet"
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=QUARANTINE_COLUMNS)
