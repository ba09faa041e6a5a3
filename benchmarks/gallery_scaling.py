"""FAISS search cost as the employee gallery grows: exact IndexFlatIP vs HNSW and IVF. Prints JSON.

Synthetic one-shot galleries calibrated to dlib ResNet distance statistics on LFW (see
components/gallery_scaling.py); progress goes to stderr.

    python benchmarks/gallery_scaling.py --json out/gallery_scaling.json --sizes 1000,10000,100000,1000000
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402

from components import gallery_scaling as gs  # noqa: E402


def _ints(text: str) -> list[int]:
    return [int(float(t)) for t in text.split(",") if t.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="also write the JSON here")
    ap.add_argument("--sizes", type=_ints, default=[1_000, 10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--single", type=int, default=500, help="one-query searches timed per setting")
    ap.add_argument("--single-budget", type=float, default=20.0,
                    help="seconds of one-query searches per setting at most (at least 50 searches)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ef-search", type=_ints, default=list(gs.HNSW_EF_SEARCH))
    ap.add_argument("--nprobe", type=_ints, default=list(gs.IVF_NPROBE))
    ap.add_argument("--hnsw-build-budget", type=float, default=360.0,
                    help="seconds; efConstruction is lowered for a size whose projected build exceeds it")
    args = ap.parse_args()

    faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", file=sys.stderr, flush=True)

    load_start = os.getloadavg()[0]
    result = gs.run_benchmark(args.sizes, args.queries, seed=args.seed, n_single=args.single,
                              single_budget_s=args.single_budget,
                              hnsw_ef_search=args.ef_search, ivf_nprobe=args.nprobe,
                              hnsw_build_budget_s=args.hnsw_build_budget, log=log)
    result["machine"] = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                         "faiss_threads": faiss.omp_get_max_threads(),
                         "loadavg_1min_at_start": round(load_start, 2),
                         "loadavg_1min_at_end": round(os.getloadavg()[0], 2)}
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
