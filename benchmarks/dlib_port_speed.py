"""Aligned 150x150 chips per second: the torch port of dlib's face descriptor vs dlib itself. Prints JSON.

Content does not change the cost of either network, so the chips are seeded random RGB; the JSON also
carries the max abs difference between the two on those chips as a sanity check.

    python benchmarks/dlib_port_speed.py --batch 64 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from facegate.components.embedding.dlib_resnet import default_model_path, load_dlib_resnet  # noqa: E402


def time_torch(
    variants: dict[str, tuple[torch.nn.Module, torch.Tensor]], warmup: int, repeats: int
) -> dict[str, dict[str, float]]:
    """Batches of each variant interleaved, so all see the same background load.

    Reports the best and the median batch; ``cores_used`` (process CPU time / wall time during the best
    batch) well below the thread count means another process was competing for the cores.
    """
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    with torch.inference_mode():
        for model, x in variants.values():
            for _ in range(warmup):
                model(x)
        for _ in range(repeats):
            for name, (model, x) in variants.items():
                c0, t0 = time.process_time(), time.perf_counter()
                model(x)
                wall = time.perf_counter() - t0
                runs[name].append((wall, (time.process_time() - c0) / wall))
    out = {}
    for name, (_, x) in variants.items():
        best_wall, best_cores = min(runs[name])
        median_wall = statistics.median(w for w, _ in runs[name])
        out[name] = {
            "best_batch_s": round(best_wall, 4),
            "chips_per_s_best": round(x.shape[0] / best_wall, 1),
            "chips_per_s_median": round(x.shape[0] / median_wall, 1),
            "cores_used_best": round(best_cores, 2),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--dlib-repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    chips = rng.integers(0, 256, size=(args.batch, 150, 150, 3), dtype=np.uint8)  # HWC RGB, like dlib
    x = torch.from_numpy(chips).permute(0, 3, 1, 2).float().contiguous()

    model = load_dlib_resnet()
    result: dict[str, object] = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "loadavg_1min_at_start": round(os.getloadavg()[0], 2),
        },
        "batch": args.batch,
    }
    model_cl = load_dlib_resnet().to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    timings = time_torch({"torch_nchw": (model, x), "torch_channels_last": (model_cl, x_cl)}, args.warmup, args.repeats)
    result.update(timings)

    import dlib  # heavy: dlib's native module; only the dlib detectors and the landmark model need it

    facerec = dlib.face_recognition_model_v1(str(default_model_path()))
    batch = list(chips)
    facerec.compute_face_descriptor(batch[:2])  # warm-up
    runs, ref = [], None
    for _ in range(args.dlib_repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        ref = facerec.compute_face_descriptor(batch)
        wall = time.perf_counter() - t0
        runs.append((wall, (time.process_time() - c0) / wall))
    best_wall, best_cores = min(runs)
    result["dlib"] = {
        "version": dlib.__version__,
        "best_batch_s": round(best_wall, 4),
        "chips_per_s_best": round(args.batch / best_wall, 1),
        "chips_per_s_median": round(args.batch / statistics.median(w for w, _ in runs), 1),
        "cores_used_best": round(best_cores, 2),
    }
    with torch.inference_mode():
        ours = model(x).double().numpy()
    result["max_abs_diff_vs_dlib"] = float(np.abs(ours - np.array([np.array(d) for d in ref])).max())
    best = max(timings[k]["chips_per_s_best"] for k in timings)
    result["speedup_best_torch_vs_dlib"] = round(best / result["dlib"]["chips_per_s_best"], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
