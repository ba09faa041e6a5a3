"""Speed-up of the Dask task runner over the local one for chips + features + embeddings, and their equality.

An LFW slice of ``--images`` images is ingested into a temporary repository (nothing of the real one is
touched); ``flows/distributed.py`` then runs it once on the local runner (one shard, in order: the reference;
again with torch on one thread) and once on a local Dask cluster (``--workers`` processes, one thread each,
``--shards`` shards). Prints JSON: both wall times (shard work only, and with the runner's start-up), the
speed-up, images per second per core, the largest differences (chips must be identical, features and
embeddings within 1e-6) and the 1/5/15-minute load averages before and after (the machine is shared: with
``--wait-load`` it first waits, up to ``--wait-max`` seconds, for the 1-minute load to drop).

    .venv/bin/python -m facegate.flows.distributed_bench --images 300 --workers 2 --shards 8 --wait-load 1.5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from facegate.components.core.paths import configure_environment, datasets_root, repo_root
from facegate.components.lifecycle.ingest import ingest_source
from facegate.flows.distributed import distributed_embedding


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def wait_for_quiet(limit: float, max_wait: float) -> float:
    """Seconds waited until the 1-minute load average fell below ``limit`` (or ``max_wait`` passed)."""
    start = time.monotonic()
    while os.getloadavg()[0] >= limit and time.monotonic() - start < max_wait:
        time.sleep(10)
    return round(time.monotonic() - start, 1)


def sandbox(base: Path, images: int, shared_lfw: Path, workers: int) -> None:
    """A repository with params and an ingested LFW slice (people with 2..12 images, in name order)."""
    import yaml  # optional: YAML only where a file is read

    repo, datasets = base / "repo", base / "datasets" / "lfw"
    repo.mkdir(parents=True)
    taken = 0
    for person in sorted(p for p in shared_lfw.iterdir() if p.is_dir()):
        files = sorted(person.iterdir())
        if not 2 <= len(files) <= 12:
            continue
        for f in files:
            (datasets / person.name).mkdir(parents=True, exist_ok=True)
            os.link(f, datasets / person.name / f.name)
        taken += len(files)
        if taken >= images:
            break
    os.link(shared_lfw / "pairs.txt", datasets / "pairs.txt")
    params = yaml.safe_load((repo_root() / "params.yaml").read_text())
    params["ingest"]["datasets"] = [{"name": "lfw", "kind": "lfw", "path": "lfw"}]
    params["distributed"].update({"workers": workers, "threads_per_worker": 1})
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    os.environ.update(
        {
            "FACEGATE_REPO": str(repo),
            "FACEGATE_HOME": str(repo / ".facegate"),
            "FACEGATE_DATASETS": str(base / "datasets"),
            "FACEGATE_PARAMS": str(repo / "params.yaml"),
            "PREFECT_HOME": str(base / "prefect"),
        }
    )
    ingest_source("lfw", "lfw", datasets, repo / "data", val_fraction=0.2, seed=1, max_pixels=50_000_000, min_side=32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--wait-load", type=float, default=None, help="wait for the 1-min load to drop below this")
    parser.add_argument("--wait-max", type=float, default=600.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)

    shared_lfw = datasets_root() / "lfw"
    configure_environment()
    with tempfile.TemporaryDirectory(prefix="facegate-bench-dask-") as tmp:
        sandbox(Path(tmp), args.images, shared_lfw, args.workers)

        import torch  # heavy: torch loads ~1 s of native code; only the paths that run a model need it

        waited = wait_for_quiet(args.wait_load, args.wait_max) if args.wait_load else 0.0
        load_before = loadavg()
        default_threads = torch.get_num_threads()
        t = time.perf_counter()
        local = distributed_embedding("lfw", runner="local", shards=1, write_cache=False)
        local_total = time.perf_counter() - t
        torch.set_num_threads(1)  # the same local run with torch on one thread, as each Dask worker has
        local_1 = distributed_embedding("lfw", runner="local", shards=1, write_cache=False)
        torch.set_num_threads(default_threads)
        load_mid = loadavg()
        t = time.perf_counter()
        dask = distributed_embedding("lfw", runner="dask", shards=args.shards, write_cache=False)
        dask_total = time.perf_counter() - t
        load_after = loadavg()
    diffs = {
        name: float(np.abs(dask[name] - local[name]).max()) for name in ("features", "flip_features", "embeddings")
    }
    cores = os.cpu_count() or 1
    result = {
        "images": local["images"],
        "cores": cores,
        "dask_workers": args.workers,
        "shards": dask["shards"],
        "local_wall_s": local["wall_s"],
        "local_torch_threads": default_threads,
        "local_1thread_wall_s": local_1["wall_s"],
        "dask_wall_s": dask["wall_s"],
        "speedup": round(local["wall_s"] / dask["wall_s"], 2) if dask["wall_s"] else None,
        "speedup_vs_1thread": round(local_1["wall_s"] / dask["wall_s"], 2) if dask["wall_s"] else None,
        "local_total_s": round(local_total, 1),
        "dask_total_s_with_cluster_start": round(dask_total, 1),
        "local_images_per_s": round(local["images"] / local["wall_s"], 2),
        "dask_images_per_s": round(dask["images"] / dask["wall_s"], 2),
        "dask_images_per_s_per_core": round(dask["images"] / dask["wall_s"] / min(cores, args.workers), 2),
        "chips_identical": bool(np.array_equal(dask["chips"], local["chips"])),
        "max_abs_diff": diffs,
        "within_1e-6": all(v < 1e-6 for v in diffs.values()),
        "load_before": load_before,
        "load_between": load_mid,
        "load_after": load_after,
        "waited_for_load_s": waited,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if result["chips_identical"] and result["within_1e-6"] else 1


if __name__ == "__main__":
    sys.exit(main())
