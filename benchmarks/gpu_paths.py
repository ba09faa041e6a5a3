"""The GPU paths measured: CPU vs CUDA for embedding, one training epoch, and FAISS flat search.

For a machine with a CUDA GPU (none is needed for the tests). It times, each on the CPU (all cores)
and on ``cuda:0``, through the same code the service and training use:
- embedding throughput (images/s, flip TTA as in params) of the backbone in params on the first
  ``--images`` LFW images' chips (detected and aligned as in training; random chips if the datasets
  root has no LFW, said so in the JSON), and the largest CPU/CUDA difference of the embeddings;
- one training epoch of ``--steps`` P x K batches in ``head`` mode (cached features) and in
  ``finetune`` mode (chips, the last ``train.finetune_stages`` stages), steps/s;
- FAISS exact (flat inner-product) search over ``--gallery`` random unit vectors (batch queries/s and
  single-query ms), CPU vs GPU (the ``gpu`` extra: faiss-gpu-cu12), top-1 agreement; and the gallery's
  own GPU path (``gallery.device: gpu``): a GPU mirror searched, a CPU index saved and read back.
Prints JSON with torch/CUDA/faiss versions and the load average before and after. Without CUDA it
exits 2 with one line and runs nothing; ``--cpu-stand-in`` runs every step anyway with the CPU in the
GPU's place (a check of the script itself before GPU time is spent on it; its figures mean nothing).

    .venv/bin/python -m facegate.benchmarks.gpu_paths --images 512 --steps 10 --gallery 100000 --json gpu.json
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from facegate.components.core.devices import cuda_device_count, describe, resolve_torch_device
from facegate.components.core.paths import configure_environment, datasets_root, state_dir
from facegate.components.core.settings import load_settings
from facegate.components.embedding.backbones import chip_geometry, make_backbone
from facegate.components.embedding.model import EmbeddingModel, chip_features, embed_chips
from facegate.components.embedding.train import TrainConfig, train_finetune, train_head
from facegate.components.faces.align import CHIP_GEOMETRIES, CHIP_SIZE, PAIRED_GEOMETRY, chip_channels
from facegate.components.faces.chips import cached_chips
from facegate.components.gallery import Gallery
from facegate.components.gallery.index_kinds import GpuFlatMirror, resolve_faiss_device
from facegate.components.gallery.store import INDEX_FILE


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def lfw_chips(n: int, settings, backbone: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Chips and identity labels of the first ``n`` LFW images (people with >= 2 images, name order),
    detected and aligned as in training (through the chip cache); random chips when the datasets root
    has no LFW (the speed does not depend on the faces)."""
    geometry = chip_geometry(backbone)
    root = datasets_root() / "lfw"
    if not root.is_dir():
        size = CHIP_SIZE if geometry in ("dlib_150", PAIRED_GEOMETRY) else CHIP_GEOMETRIES[geometry]
        chips = np.random.default_rng(0).integers(0, 256, (n, size, size, chip_channels(geometry)), dtype=np.uint8)
        return chips, np.arange(n) // 4, f"random ({root} not found)"
    paths, labels = [], []
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(person.glob("*.jpg"))[: n - len(paths)]
        if len(files) >= 2:
            labels += [labels[-1] + 1 if labels else 0] * len(files)
            paths += files
        if len(paths) >= n:
            break
    hashes = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    chips = cached_chips(
        state_dir() / "cache",
        paths,
        hashes,
        detector=settings.faces.detector,
        upsample=settings.faces.upsample,
        geometry=geometry,
    )
    return np.asarray(chips.chips), np.asarray(labels), f"LFW: first {len(paths)} images of people with >= 2"


def time_embedding(model, chips: np.ndarray, flip_tta: bool, batch_size: int) -> tuple[np.ndarray, float]:
    """Embeddings of ``chips`` and images/s (after one warm-up batch: CUDA kernels, cuDNN autotune)."""
    embed_chips(model, chips[:batch_size], flip_tta, batch_size)
    t0 = time.perf_counter()
    emb = embed_chips(model, chips, flip_tta, batch_size)  # ends in .cpu(): the GPU has finished
    return emb, len(chips) / (time.perf_counter() - t0)


def time_epoch(step, device: str) -> float:
    """Steps/s of one training epoch on ``device`` (``step(device)`` returns the steps it ran)."""
    import torch  # heavy: torch loads ~1 s of native code; only the paths that run a model need it

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    steps = step(device)  # the model is back on the CPU when training returns: the GPU has finished
    return steps / (time.perf_counter() - t0)


def training(settings, chips: np.ndarray, labels: np.ndarray, steps: int, p: int, k: int, accel: str) -> dict:
    """One epoch of ``steps`` P x K batches, head and finetune mode, CPU vs ``accel`` (the same start)."""
    start = EmbeddingModel(make_backbone(settings.embedding.backbone))
    feats = chip_features(copy.deepcopy(start.backbone).to(accel), chips)  # the frozen features head mode caches
    out = {"p": p, "k": k, "steps": steps, "train_images": int(len(chips))}

    def cfg(device: str) -> TrainConfig:
        return TrainConfig.from_settings(settings, device=device, epochs=1, batches_per_epoch=steps, p=p, k=k)

    def head(device: str) -> int:
        train_head(copy.deepcopy(start), feats, None, labels, cfg(device))
        return steps

    def finetune(device: str) -> int:
        train_finetune(copy.deepcopy(start), chips, labels, cfg(device))
        return steps

    for name, step in (("head", head), ("finetune", finetune)):
        step(accel)  # warm-up: CUDA context, kernels
        cpu, gpu = time_epoch(step, "cpu"), time_epoch(step, accel)
        out[name] = {
            "cpu_steps_per_s": round(cpu, 3),
            "cuda_steps_per_s": round(gpu, 3),
            "speedup": round(gpu / cpu, 2),
        }
    return out


def timed_search(index, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, float]:
    index.search(queries[:16], k)  # warm-up
    best, ids = float("inf"), None
    for _ in range(3):
        t0 = time.perf_counter()
        _, ids = index.search(queries, k)
        best = min(best, time.perf_counter() - t0)
    return ids, best


def single_query_ms(index, queries: np.ndarray, n: int = 200) -> float:
    t0 = time.perf_counter()
    for q in queries[:n]:
        index.search(q[None], 1)
    return 1000 * (time.perf_counter() - t0) / min(n, len(queries))


def faiss_flat(n: int, n_queries: int, dim: int) -> dict:
    """Exact search over ``n`` random unit vectors: CPU flat vs the same index cloned to GPU 0."""
    import faiss  # heavy: FAISS's native module; only gallery paths need it

    rng = np.random.default_rng(0)
    xb = rng.standard_normal((n, dim), dtype=np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq = rng.standard_normal((n_queries, dim), dtype=np.float32)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    cpu = faiss.IndexFlatIP(dim)
    cpu.add(xb)
    ids_cpu, t_cpu = timed_search(cpu, xq)
    out = {
        "n": n,
        "dim": dim,
        "queries": n_queries,
        "cpu_queries_per_s": round(n_queries / t_cpu, 1),
        "cpu_single_query_ms": round(single_query_ms(cpu, xq), 3),
    }
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        out["gpu"] = "unavailable: faiss without GPU support (faiss-cpu); install the gpu extra (faiss-gpu-cu12)"
        return out
    res = faiss.StandardGpuResources()
    gpu = faiss.index_cpu_to_gpu(res, 0, cpu)
    ids_gpu, t_gpu = timed_search(gpu, xq)
    out.update(
        {
            "gpu_queries_per_s": round(n_queries / t_gpu, 1),
            "gpu_single_query_ms": round(single_query_ms(gpu, xq), 3),
            "speedup": round(t_cpu / t_gpu, 2),
            "top1_agreement": float(np.mean(ids_cpu[:, 0] == ids_gpu[:, 0])),
        }
    )
    return out


def gallery_gpu_path(stand_in: bool = False, n_employees: int = 500, dim: int = 128) -> dict:
    """``gallery.device: gpu`` as the service uses it: the search answers as on the CPU, from a GPU
    mirror, and what is saved is a CPU index that faiss-cpu reads back (``stand_in``: a CPU gallery
    in the GPU one's place)."""
    import faiss  # heavy: FAISS's native module; only gallery paths need it

    if resolve_faiss_device("auto") != "gpu" and not stand_in:
        return {"gpu": "unavailable: faiss without GPU support (faiss-cpu) or no GPU visible"}
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((n_employees, dim), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    galleries = {
        "cpu": Gallery.new(dim, "m", "1", device="cpu", tau=0.6),
        "gpu": Gallery.new(dim, "m", "1", device="cpu" if stand_in else "gpu", tau=0.6),
    }
    for g in galleries.values():
        for i in range(n_employees):
            g.add(f"e{i}", f"n{i}", vecs[i : i + 1])
    queries = vecs[:200] + 0.05 * rng.standard_normal((200, dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    on_gpu = galleries["gpu"].search(queries, k=3)
    same = [[m[0] for m in row] for row in on_gpu] == [
        [m[0] for m in row] for row in galleries["cpu"].search(queries, k=3)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        version = galleries["gpu"].save(Path(tmp))
        saved = type(faiss.read_index(str(Path(version) / INDEX_FILE))).__name__  # a GPU index cannot be written
        reloaded = Gallery.load(Path(tmp), device="cpu").search(queries, k=3)
    return {
        "device": galleries["gpu"].device,
        "gpu_mirror": isinstance(galleries["gpu"]._gpu_index, GpuFlatMirror),
        "same_answers_as_cpu": bool(same),
        "saved_index_type": saved,
        "reloaded_on_cpu_same_answers": [[m[0] for m in r] for r in reloaded] == [[m[0] for m in r] for r in on_gpu],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512, help="LFW images to embed")
    parser.add_argument("--cpu-images", type=int, default=256, help="of those, embedded on the CPU too")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="P x K batches in the training epoch")
    parser.add_argument("--p", type=int, default=8)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--gallery", type=int, default=100_000, help="vectors in the FAISS flat index")
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--json", type=Path, help="write the result here too")
    parser.add_argument(
        "--cpu-stand-in",
        action="store_true",
        help="no GPU: run every step with the CPU in its place (checks the script; figures meaningless)",
    )
    args = parser.parse_args(argv)

    if cuda_device_count() == 0 and not args.cpu_stand_in:
        print(
            "error [device_unavailable]: facegate.benchmarks.gpu_paths needs a CUDA GPU, but torch sees no CUDA GPU "
            "here; run it where one is lent",
            file=sys.stderr,
        )
        return 2
    import faiss  # heavy: FAISS's native module; only gallery paths need it
    import torch  # heavy: torch loads ~1 s of native code; only the paths that run a model need it

    configure_environment()
    settings = load_settings()
    cuda = resolve_torch_device("cpu" if args.cpu_stand_in else "cuda")
    before = loadavg()
    t_start = time.perf_counter()
    chips, labels, source = lfw_chips(args.images, settings, settings.embedding.backbone)
    model = EmbeddingModel(make_backbone(settings.embedding.backbone)).eval()
    n_cpu = min(args.cpu_images, len(chips))
    emb_cpu, cpu_rate = time_embedding(model, chips[:n_cpu], settings.embedding.flip_tta, args.batch_size)
    emb_gpu, gpu_rate = time_embedding(
        copy.deepcopy(model).to(cuda), chips, settings.embedding.flip_tta, args.batch_size
    )
    result = {
        "device": describe(cuda) + (" (CPU stand-in: figures meaningless)" if args.cpu_stand_in else ""),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "faiss": faiss.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": before,
        "embedding": {
            "backbone": settings.embedding.backbone,
            "flip_tta": settings.embedding.flip_tta,
            "chips": source,
            "batch_size": args.batch_size,
            "cpu_images": n_cpu,
            "cuda_images": len(chips),
            "cpu_images_per_s": round(cpu_rate, 1),
            "cuda_images_per_s": round(gpu_rate, 1),
            "speedup": round(gpu_rate / cpu_rate, 2),
            "max_abs_diff_cpu_vs_cuda": float(np.abs(emb_cpu - emb_gpu[:n_cpu]).max()),
        },
        "training": training(settings, chips, labels, args.steps, args.p, args.k, str(cuda)),
        "faiss_flat": faiss_flat(args.gallery, args.queries, 128),
        "gallery_gpu": gallery_gpu_path(stand_in=args.cpu_stand_in),
    }
    result.update(wall_s=round(time.perf_counter() - t_start, 1), loadavg_after=loadavg())
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
