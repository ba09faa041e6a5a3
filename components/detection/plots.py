"""Pictures of a detector's quality: PR curves per class, val images with true and predicted boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from facegate.components.detection.decode import Detections
from facegate.components.detection.metrics import Truth, voc_ap, voc_pr

__all__ = ["plot_pr_curves", "draw_detections", "draw_truth_and_detections"]

CLASS_COLOURS = [(40, 200, 60), (220, 40, 40), (240, 170, 20), (60, 120, 230), (200, 60, 200)]


def plot_pr_curves(
    dets: list[Detections], truths: list[Truth], class_names: tuple[str, ...], out: Path, iou_threshold: float = 0.5
) -> Path:
    import matplotlib  # heavy: plotting only where a figure is written

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: plotting only where a figure is written

    fig, ax = plt.subplots(figsize=(6, 5))
    for c, name in enumerate(class_names):
        recall, precision, _, n_gt = voc_pr(dets, truths, c, iou_threshold)
        if not n_gt:
            continue
        ap = voc_ap(recall, precision) if len(recall) else 0.0
        ax.plot(recall, precision, label=f"{name} (AP {ap:.3f}, {n_gt} boxes)")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"held-out PR curves at IoU {iou_threshold}")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def draw_detections(
    image: np.ndarray, det: Detections, class_names: tuple[str, ...], truth: Truth | None = None
) -> Image.Image:
    """Predicted boxes coloured by class with label and score; true boxes (if given) thin white."""
    img = Image.fromarray(image)
    draw = ImageDraw.Draw(img)
    width = max(2, round(min(img.size) / 250))
    if truth is not None:
        for box in truth.boxes:
            draw.rectangle([float(v) for v in box], outline=(255, 255, 255), width=1)
    for box, score, label in zip(det.boxes, det.scores, det.labels):
        colour = CLASS_COLOURS[int(label) % len(CLASS_COLOURS)]
        left, top, right, bottom = (float(v) for v in box)
        draw.rectangle([left, top, right, bottom], outline=colour, width=width)
        text = f"{class_names[int(label)]} {score:.2f}"
        tw = draw.textlength(text)
        draw.rectangle([left, max(0, top - 12), left + tw + 4, top], fill=colour)
        draw.text((left + 2, max(0, top - 12)), text, fill=(255, 255, 255))
    return img


def draw_truth_and_detections(
    images: list[np.ndarray],
    dets: list[Detections],
    truths: list[Truth],
    class_names: tuple[str, ...],
    out_dir: Path,
    score_threshold: float,
) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (im, d, t) in enumerate(zip(images, dets, truths)):
        keep = d.scores >= score_threshold
        img = draw_detections(im, Detections(d.boxes[keep], d.scores[keep], d.labels[keep]), class_names, t)
        paths.append(out_dir / f"val_{i:02d}.jpg")
        img.save(paths[-1], quality=90)
    return paths
