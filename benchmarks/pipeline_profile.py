"""Per-stage cost of recognising one LFW image: decode, detect, align, each backbone's forward, TTA, search.

Why: the pipeline-throughput and identify-latency goals (issue 11) are only reachable once we know
where a frame's milliseconds go; this times every stage of the serving path on real LFW images, with
torch on 1 and on 2 threads, and prints JSON (median and mean ms per image, per stage).

    .venv/bin/python -m facegate.benchmarks.pipeline_profile --images 50 --threads 1,2
    .venv/bin/python -m facegate.benchmarks.pipeline_profile --images 400 --throughput dlib_resnet+sface:tta,sface:plain
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from facegate.benchmarks.lfw import pipeline_throughput
from facegate.components.core.images import load_image
from facegate.components.core.paths import datasets_root
from facegate.components.core.settings import load_settings
from facegate.components.embedding.backbones import make_backbone
from facegate.components.embedding.fusion import member_input
from facegate.components.embedding.model import EmbeddingModel, embed_chips
from facegate.components.embedding.precision import set_precision
from facegate.components.faces.align import FaceAligner
from facegate.components.faces.detectors import detector_from_settings
from facegate.components.faces.pipeline import FaceFinder
from facegate.components.gallery import Gallery


def _ms(fn):
    """fn(), its wall ms and the process's CPU ms (all threads): on a shared machine the CPU time is what
    the stage costs, the wall time what it cost under the load of the moment."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, ((time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000)


def profile(files: list[Path], backbone: str, threads: int, settings, gallery_size: int = 1700, seed: int = 0) -> dict:
    torch.set_num_threads(threads)
    model = set_precision(EmbeddingModel(make_backbone(backbone)).eval(), settings.embedding.precision)
    detector = detector_from_settings(settings.faces)
    aligner = FaceAligner(geometry=model.backbone.chip_geometry)
    finder = FaceFinder(detector, aligner)
    rng = np.random.default_rng(seed)
    dim = int(model.head.out_features)
    gallery = Gallery.new(dim, model.name, "profile", "flat", tau=1.0)
    vecs = rng.standard_normal((gallery_size, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    for i in range(gallery_size):
        gallery.add(f"E{i}", f"E{i}", vecs[i : i + 1], [""])
    members = list(getattr(model.backbone, "members", [model.backbone]))
    rows: dict[str, list[float]] = {}

    cpu: dict[str, list[float]] = {}

    def rec(name: str, ms: tuple[float, float]) -> None:
        rows.setdefault(name, []).append(ms[0])
        cpu.setdefault(name, []).append(ms[1])

    # warm-up: first calls allocate (oneDNN primitives, YuNet's input size)
    image = load_image(files[0])
    crop = finder.centre_face(image)
    embed_chips(model, crop.chip[None], flip_tta=True)
    for f in files:
        image, t = _ms(lambda: load_image(f))
        rec("decode", t)
        boxes, t = _ms(lambda: detector.detect(image))
        rec("detect", t)
        if not boxes:
            continue
        box = boxes[0]
        chip, t = _ms(lambda: aligner.chip(image, box))
        rec("align_total", t)
        if getattr(aligner, "geometry", "") == "dlib_150+arcface_112":
            shape, t = _ms(lambda: aligner.landmarks(image, box))
            rec("align.dlib_landmarks", t)
            _, t = _ms(lambda: aligner._dlib.get_face_chip(image, shape, size=aligner.size, padding=aligner.padding))
            rec("align.dlib_get_face_chip", t)
            _, t = _ms(lambda: aligner.arcface_chip(image, box))
            rec("align.arcface_warp", t)
        with torch.inference_mode():
            x1 = model.backbone.preprocess(torch.from_numpy(chip[None].copy()))
            x2 = model.backbone.preprocess(torch.from_numpy(np.stack([chip, chip[:, ::-1]])))
            for m in members:
                xm1 = m.preprocess(member_input(x1, m.chip_geometry)) if len(members) > 1 else x1
                xm2 = m.preprocess(member_input(x2, m.chip_geometry)) if len(members) > 1 else x2
                _, t = _ms(lambda: m.features(xm1))
                rec(f"forward.{m.name}.batch1", t)
                _, t = _ms(lambda: m.features(xm2))
                rec(f"forward.{m.name}.batch2_flip_pair", t)
        e, t = _ms(lambda: embed_chips(model, chip[None], flip_tta=False))
        rec("embed_chips.no_tta", t)
        e, t = _ms(lambda: embed_chips(model, chip[None], flip_tta=True))
        rec("embed_chips.flip_tta", t)
        _, t = _ms(lambda: gallery.identify(e, 1.0))
        rec("search", t)
        _, t = _ms(lambda: finder.all_faces(image))
        rec("detect_align_all_faces", t)
    return {
        "threads": threads,
        "images": len(files),
        "faces": len(rows.get("search", [])),
        "stages_ms": {
            k: {
                "wall_median": round(float(np.median(v)), 2),
                "wall_mean": round(float(np.mean(v)), 2),
                "cpu_median": round(float(np.median(cpu[k])), 2),
                "cpu_mean": round(float(np.mean(cpu[k])), 2),
            }
            for k, v in rows.items()
        },
    }


def throughput(
    files: list[Path], configs: list[tuple[str, bool]], settings, workers: int | None, batch: int
) -> list[dict]:
    """``pipeline_images_per_s`` (facegate.benchmarks.lfw.pipeline_throughput) for each (backbone, flip TTA)."""
    out = []
    for backbone, tta in configs:
        model = set_precision(EmbeddingModel(make_backbone(backbone)).eval(), settings.embedding.precision)
        finder = FaceFinder(detector_from_settings(settings.faces), FaceAligner(geometry=model.backbone.chip_geometry))
        c = time.process_time()
        row = {
            "backbone": backbone,
            "flip_tta": tta,
            "loadavg_before": os.getloadavg()[0],
            **pipeline_throughput(model, finder, files, tta, workers=workers, batch=batch),
        }
        row["cpu_s_total"] = round(time.process_time() - c, 2)
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--backbone", default=None)
    ap.add_argument(
        "--throughput",
        default=None,
        help="instead of the stage profile: pipeline images/s of BACKBONE:tta|plain,... (e.g. "
        "dlib_resnet+sface:tta,sface:plain)",
    )
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument(
        "--precision",
        choices=("auto", "float32", "bfloat16"),
        default=None,
        help="instead of params' embedding.precision",
    )
    args = ap.parse_args()

    settings = load_settings()
    if args.precision:
        settings = settings.replace({"embedding": {"precision": args.precision}})
    backbone = args.backbone or settings.embedding.backbone
    root = datasets_root() / "lfw"
    files = sorted(root.glob("*/*.jpg"))
    files = files[:: max(1, len(files) // args.images)][: args.images]
    if args.throughput:
        configs = [(c.split(":")[0], c.split(":")[1] == "tta") for c in args.throughput.split(",")]
        print(json.dumps({"throughput": throughput(files, configs, settings, args.workers, args.batch)}, indent=1))
        return
    out = {
        "backbone": backbone,
        "torch": torch.__version__,
        "precision": settings.embedding.precision,
        "loadavg_before": os.getloadavg(),
        "runs": [],
    }
    for n in (int(x) for x in args.threads.split(",")):
        out["runs"].append(profile(files, backbone, n, settings))
        print(json.dumps(out["runs"][-1]), flush=True)
    out["loadavg_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
