"""The shared datasets' layouts and the split rule: what a source folder holds, and who goes to which split.

Read by ingest (lifecycle/ingest.py, which writes data/), by calibration's labelled face sets and by
the training data: one reading of each layout and one identity-level split rule (seeded), so
"held-out" means the same people everywhere. One kind is facegate's own: ``captures``, the deployment's
operator-confirmed captures as ``facegate data export-captures`` writes them under data/.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from facegate.components.core.errors import DatasetError
from facegate.components.core.paths import data_dir, datasets_root

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
MANIFEST_COLUMNS = ["path", "source", "identity", "boxes", "split", "sha256", "width", "height", "format"]
QUARANTINE_COLUMNS = ["path", "source", "code", "reason"]
QUARANTINE_DIR = "_quarantine"
CAPTURES_KIND = "captures"
CAPTURES_TABLE = "captures.csv"  # the export's own manifest, one row per exported chip
# what a captures manifest holds beside MANIFEST_COLUMNS (its identity is the employee id)
CAPTURE_COLUMNS = ["capture_id", "entrance", "captured_at", "consent", "consent_at", "chip_geometry"]
EXTRA_COLUMNS = {CAPTURES_KIND: CAPTURE_COLUMNS}


@dataclass(frozen=True)
class SourceItem:
    """One file of a source: where it is, who it shows or what boxes it holds."""

    relpath: str  # relative to the source folder, POSIX form
    identity: str | None = None
    boxes: tuple[dict, ...] | None = None
    problem: str | None = None  # an annotation problem found while listing (e.g. malformed XML)
    meta: dict | None = None  # a kind's own manifest columns (EXTRA_COLUMNS), e.g. a capture's id and consent


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
            label = obj.findtext("name")
            bb = obj.find("bndbox")
            if label is None or bb is None:
                raise ValueError("no name or bndbox")
            label = label.strip()
            box = {k: float(bb.findtext(k, "")) for k in ("xmin", "ymin", "xmax", "ymax")}
        except (AttributeError, TypeError, ValueError):
            raise DatasetError(f"{xml_path}: object {i} has no valid name/bndbox") from None
        boxes.append({"label": label, **box})
    return boxes


def list_captures(root: Path) -> tuple[list[SourceItem], list[str]]:
    """The deployment's confirmed captures as exported: ``<employee>/<capture>.png`` (the aligned chip) and
    ``captures.csv`` (path, employee_id, capture_id, entrance, captured_at, consent, consent_at,
    chip_geometry). No export yet means no capture confirmed yet: an empty source, not an error."""
    table = root / CAPTURES_TABLE
    if not table.is_file():
        if root.is_dir() and any(root.iterdir()):
            raise DatasetError(f"{root}: no {CAPTURES_TABLE}; run `facegate data export-captures`")
        return [], []
    rows = pd.read_csv(table, dtype=str, keep_default_na=False)
    missing = {"path", "employee_id", *CAPTURE_COLUMNS} - set(rows.columns)
    if missing:
        raise DatasetError(f"{table}: missing column(s) {sorted(missing)}")
    items = []
    for r in rows.to_dict("records"):
        if not (root / r["path"]).is_file():
            raise DatasetError(f"{table}: {r['path']} is listed but missing; export again")
        meta = {
            "capture_id": int(r["capture_id"]),
            "entrance": r["entrance"] or None,
            "captured_at": r["captured_at"],
            "consent": r["consent"].strip().lower() == "true",
            "consent_at": r["consent_at"] or None,
            "chip_geometry": r["chip_geometry"],
        }
        items.append(SourceItem(relpath=r["path"], identity=r["employee_id"], meta=meta))
    return items, []


SOURCES: dict[str, Callable[[Path], tuple[list[SourceItem], list[str]]]] = {
    "lfw": list_lfw,
    "image_folder": list_image_folder,
    "voc": list_voc,
    CAPTURES_KIND: list_captures,
}
MAY_BE_EMPTY = {CAPTURES_KIND}  # kinds whose source may hold nothing yet (no capture confirmed yet)


def source_folder(kind: str, path: str) -> Path:
    """Where a source's files are: under the read-only datasets root, except the deployment's captures,
    which facegate exports itself into the data folder DVC versions (``data/<path>``)."""
    return (data_dir() if kind == CAPTURES_KIND else datasets_root()) / path


# ---------------------------------------------------------------- splits
def unit_hash(key: str, seed: int) -> float:
    """A stable uniform number in [0, 1) for ``key``: the same split on every machine and run."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_identity_splits(manifest: pd.DataFrame, val_fraction: float, seed: int, min_train_images: int) -> pd.Series:
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


def read_manifest(data_root: Path, name: str) -> pd.DataFrame:
    path = data_root / name / "manifest.parquet"
    if not path.is_file():
        raise DatasetError(f"{path}: no manifest; run `facegate ingest` first")
    return pd.read_parquet(path)


def read_quarantine(data_root: Path, name: str) -> pd.DataFrame:
    path = data_root / name / "quarantine.parquet"
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=QUARANTINE_COLUMNS)
