"""What the units learn, measured: time and peak memory of ``explain units`` over N public training images,
per network, and the grids the README shows (docs/units/).

Each network runs in its own process, so its peak resident memory is its own: dlib's ResNet and SFace
(pretrained, each on LFW training identities' chips in its own geometry), and the detector's MobileNetV2
(the registry's champion, or the ImageNet network when none is trained) on the face-mask set's training
faces. The chips come from the chip cache; their extraction (first run only) is timed apart. On a shared
machine the wall seconds move with the neighbours' load: the process's CPU seconds (one torch thread) are
kept beside them, with the load average.

    .venv/bin/python -m facegate.benchmarks.units --images 2000 --out docs/units \\
        --json benchmarks/results/units-YYYYMMDD-<commit>.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from facegate.components.core.settings import load_settings
from facegate.components.embedding.backbones import make_backbone
from facegate.components.embedding.model import EmbeddingModel
from facegate.components.explain.networks import embedder_networks, resolve_layers
from facegate.components.explain.pipeline import explain_units
from facegate.components.lifecycle.tracking import git_commit
from facegate.components.lifecycle.unit_grids import Subject, load_subject, options, training_images

NETWORKS = ("dlib_resnet", "sface", "mobilenet_v2")


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_one(network: str, n_images: int, out: Path, threads: int) -> dict:
    """One network's run in this process: image sample (chips cached), one pass, grids; times and peak RSS."""
    torch.set_num_threads(threads)
    settings = load_settings()
    t0 = time.perf_counter()
    if network == "mobilenet_v2":
        subject = load_subject(settings, "detector", None)
    else:
        model = EmbeddingModel(make_backbone(network)).eval()
        subject = Subject("embedder", f"pretrained {network}", embedder_networks(model), model)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    images = training_images(settings, subject, n_images)
    images_s = time.perf_counter() - t0
    layers = resolve_layers(subject.networks, None, settings.explain.layers)
    cpu0 = time.process_time()
    doc = explain_units(
        subject.networks,
        layers,
        images,
        out,
        options(settings, progress=False),
        {"model": subject.kind, "version": subject.label, **({"note": subject.note} if subject.note else {})},
    )
    net = doc["networks"][subject.networks[0].name]
    return {
        "network": network,
        "version": subject.label,
        "note": subject.note,
        "images": images.description,
        "n_images": len(images),
        "torch_threads": threads,
        "load_model_s": round(load_s, 2),
        "sample_images_s": round(images_s, 2),
        "pass_s": net["seconds"],
        "ms_per_image": round(1000 * net["seconds"] / max(len(images), 1), 2),
        "explain_s": doc["seconds"],
        "explain_cpu_s": round(time.process_time() - cpu0, 2),
        "peak_rss_mb": _peak_mb(),
        "layers": {
            ly: {
                "receptive_field_px": v["receptive_field_px"],
                "jump_px": v["jump_px"],
                "shape": v["shape"],
                "grid": f"{out.name}/{v['grid']}",
            }
            for ly, v in net["layers"].items()
        },
    }


def run_all(networks: list[str], n_images: int, out: Path, threads: int) -> dict:
    """Every network in a child process of its own (a clean peak memory each), then one result."""
    load_start, t0 = os.getloadavg(), time.perf_counter()
    results = {}
    for network in networks:
        cmd = [
            sys.executable,
            "-m",
            "facegate.benchmarks.units",
            "--one",
            network,
            "--images",
            str(n_images),
            "--out",
            str(out / network),
            "--threads",
            str(threads),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{network}: {done.stderr.strip()[-2000:]}")
        results[network] = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps({network: results[network]}), file=sys.stderr, flush=True)
    commit = git_commit()
    short = commit if commit == "unknown" else commit[:7]
    return {
        "benchmark": "units",
        "date": time.strftime("%Y-%m-%d"),
        "commit": short,
        "git_commit": commit,
        "images_requested": n_images,
        "networks": results,
        **{f"{k}_pass_s": v["pass_s"] for k, v in results.items()},
        **{f"{k}_explain_cpu_s": v["explain_cpu_s"] for k, v in results.items()},
        **{f"{k}_peak_rss_mb": v["peak_rss_mb"] for k, v in results.items()},
        "wall_s": round(time.perf_counter() - t0, 1),
        "cpus": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m facegate.benchmarks.units", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--out", type=Path, default=Path("docs/units"))
    parser.add_argument("--json", type=Path, help="write the result here too")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--one", choices=NETWORKS, help=argparse.SUPPRESS)  # the child's own run
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.images, args.out, args.threads)))
        return
    result = run_all(args.networks.split(","), args.images, args.out, args.threads)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
