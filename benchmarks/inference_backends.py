"""Per-face embedding time of the inference backends, side by side on real LFW chips. Prints JSON.

The cascade's cheap pass (one member, SFace, no mirror) and the full fused model with flip TTA (what
enrolment and the cascade's second pass run), at batch 1 (a turnstile frame) and batch 32 (a batch
job), for torch float32 (the reference), torch bfloat16, OpenVINO bfloat16 and OpenVINO float32. The
backends take turns within every repeat, so all see the same background load; the load average is
written beside each case. Also the smallest cosine of each backend's embeddings to torch float32 ones.

    python benchmarks/inference_backends.py --repeats 7 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facegate.components.core.inference import passive_waits  # noqa: E402

passive_waits()  # as the CLI: idle OpenMP threads sleep (before torch loads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from facegate.components.core.images import load_image  # noqa: E402
from facegate.components.core.paths import datasets_root  # noqa: E402
from facegate.components.embedding.backbones import chip_geometry, make_backbone  # noqa: E402
from facegate.components.embedding.members import member_embed_chips, member_slice  # noqa: E402
from facegate.components.embedding.model import EmbeddingModel, embed_chips  # noqa: E402
from facegate.components.embedding.openvino_runtime import inference_summary, set_backend  # noqa: E402
from facegate.components.embedding.precision import set_precision  # noqa: E402
from facegate.components.faces.align import FaceAligner  # noqa: E402
from facegate.components.faces.detectors import YuNetDetector  # noqa: E402
from facegate.components.faces.pipeline import FaceFinder  # noqa: E402

CONFIGS = (("torch", "float32"), ("torch", "bfloat16"), ("openvino", "bfloat16"), ("openvino", "float32"))


def lfw_chips(n: int, backbone: str) -> np.ndarray:
    """The centre face of the first ``n`` LFW images (one per identity, sorted), aligned for ``backbone``."""
    finder = FaceFinder(
        YuNetDetector(0, score_threshold=0.6, max_side=1280), FaceAligner(geometry=chip_geometry(backbone))
    )
    people = sorted(p for p in (datasets_root() / "lfw").iterdir() if p.is_dir())
    files = [sorted(p.glob("*.jpg"))[0] for p in people[:n]]
    return np.stack([finder.centre_face(load_image(f)).chip for f in files])


def use(model: EmbeddingModel, backend: str, precision: str) -> None:
    set_precision(model, precision)
    set_backend(model, backend)


def time_case(
    model: EmbeddingModel, run: Callable[[np.ndarray], np.ndarray], chips: np.ndarray, batch: int, repeats: int
) -> dict:
    """Per-face ms of ``run`` on batches of ``batch`` chips for every backend, taking turns each repeat."""
    calls = max(1, 32 // batch)
    times: dict[str, list[float]] = {f"{b}/{p}": [] for b, p in CONFIGS}
    cpu: dict[str, float] = dict.fromkeys(times, 0.0)
    for backend, precision in CONFIGS:  # warm-up: compiled copies, oneDNN kernels
        use(model, backend, precision)
        run(chips[:batch])
        run(chips[:batch])
    load = os.getloadavg()[0]
    for r in range(repeats):
        order = CONFIGS[r % len(CONFIGS) :] + CONFIGS[: r % len(CONFIGS)]
        for backend, precision in order:
            use(model, backend, precision)
            t, c0 = time.perf_counter(), time.process_time()
            for c in range(calls):
                start = (c * batch) % max(1, len(chips) - batch + 1)
                run(chips[start : start + batch])
            times[f"{backend}/{precision}"].append(1000 * (time.perf_counter() - t) / (calls * batch))
            cpu[f"{backend}/{precision}"] += 1000 * (time.process_time() - c0) / (calls * batch * repeats)
    return {
        **{
            k: {
                "ms_per_face_median": round(statistics.median(v), 2),
                "ms_per_face_best": round(min(v), 2),
                "cpu_ms_per_face": round(cpu[k], 2),  # all threads: less sensitive to others' load than wall time
            }
            for k, v in times.items()
        },
        "loadavg_1min": [round(load, 2), round(os.getloadavg()[0], 2)],
    }


def agreement(model: EmbeddingModel, run: Callable[[np.ndarray], np.ndarray], chips: np.ndarray) -> dict:
    """The smallest cosine of each backend's embeddings to torch float32's, over ``chips``."""
    use(model, "torch", "float32")
    ref = run(chips)
    out = {}
    for backend, precision in CONFIGS[1:]:
        use(model, backend, precision)
        out[f"{backend}/{precision}"] = round(float(np.sum(ref * run(chips), axis=1).min()), 6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="dlib_resnet+sface")
    parser.add_argument("--member", default="sface", help="the cascade's cheap-pass member")
    parser.add_argument("--chips", type=int, default=64, help="LFW images to align (the timed batches cycle over them)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    chips = lfw_chips(args.chips, args.backbone)
    model = EmbeddingModel(make_backbone(args.backbone)).eval()
    where = member_slice(model, args.member)
    cases: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        f"{args.member}_no_mirror": lambda c: member_embed_chips(model, c, where),
        "fused_flip_tta": lambda c: embed_chips(model, c, flip_tta=True),
    }
    result: dict = {
        "backbone": args.backbone,
        "torch_threads": torch.get_num_threads(),
        "cpu": {"cores": len(os.sched_getaffinity(0))},
        "chips": len(chips),
        "repeats": args.repeats,
    }
    for name, run in cases.items():
        result[name] = {f"batch_{b}": time_case(model, run, chips, b, args.repeats) for b in (1, 32)}
        result[name]["min_cosine_to_torch_float32"] = agreement(model, run, chips)
    use(model, "openvino", "auto")
    result["openvino_auto"] = inference_summary(model)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
