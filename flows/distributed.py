"""Chips, frozen features and embeddings of a dataset fanned out over shards on a task runner.

Wiring only, over ``facegate.components.lifecycle.sharding``: the manifest's images are cut into ``distributed.shards``
contiguous shards; each shard's chips and then its features and embeddings are Prefect tasks, run by
the runner in ``distributed.runner``:
- ``local``: Prefect's thread-pool runner with one thread, shards in order in this process (the
  reference the Dask run is compared with);
- ``dask``: ``prefect-dask``'s DaskTaskRunner, on the scheduler at ``FACEGATE_DASK_ADDRESS`` or
  ``distributed.address`` when set (an existing cluster: every worker needs this repository's
  environment and read access to data/), else a local cluster of ``distributed.workers`` processes
  (default: one per core) with ``distributed.threads_per_worker`` threads each.
The shards come back in order and are written as the chain's own cache entries (chips, and plain and
mirrored features under the chip key), so a retraining chain afterwards recomputes nothing.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from facegate.components.core.datasets import read_manifest
from facegate.components.core.paths import data_dir, state_dir
from facegate.components.core.settings import DistributedSettings, load_settings
from facegate.components.embedding.backbones import chip_geometry
from facegate.components.faces.chips import ChipSet
from facegate.components.lifecycle import sharding

DASK_ADDRESS_ENV = "FACEGATE_DASK_ADDRESS"


@task(name="chips-shard", retries=1, cache_policy=NO_CACHE)
def chips_task(paths: list[str], detector: str, upsample: int, geometry: str, max_pixels: int) -> ChipSet:
    return sharding.chip_shard(paths, detector=detector, upsample=upsample, geometry=geometry, max_pixels=max_pixels)


@task(name="embed-shard", retries=1, cache_policy=NO_CACHE)
def embed_task(
    chipset: ChipSet, backbone: str, flip_tta: bool, threads: int | None, precision: str
) -> sharding.ShardEmbeddings:
    return sharding.embed_shard(
        chipset.chips, backbone=backbone, flip_tta=flip_tta, threads=threads, precision=precision
    )


def dask_address(cfg: DistributedSettings) -> str | None:
    return os.environ.get(DASK_ADDRESS_ENV) or cfg.address


def make_task_runner(cfg: DistributedSettings, runner: str | None = None, api_url: str | None = None):
    """The task runner ``runner`` (default: params') names; ``dask`` connects or starts a local cluster,
    whose worker processes get ``api_url`` as their PREFECT_API_URL."""
    runner = runner or cfg.runner
    if runner == "local":
        from prefect.task_runners import (
            ThreadPoolTaskRunner,  # heavy: Prefect takes seconds to import; only flow runs need it
        )

        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_dask import DaskTaskRunner  # heavy: Dask is only for the distributed runner

    address = dask_address(cfg)
    if address:
        return DaskTaskRunner(address=address)
    workers = cfg.workers or os.cpu_count() or 1
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": workers,
            "threads_per_worker": cfg.threads_per_worker,
            "processes": True,
            "dashboard_address": None,
            **({"env": {"PREFECT_API_URL": api_url}} if api_url else {}),
        }
    )


@contextlib.contextmanager
def prefect_api_for_workers() -> Iterator[str]:
    """The Prefect API the Dask workers report their task runs to. With PREFECT_API_URL set (server
    mode) that one; else, instead of Prefect's ephemeral in-process default, of which every worker
    process would start one more of its own (seconds of CPU each, and task runs nobody sees), one
    temporary server for the flow and its workers, stopped afterwards."""
    from prefect.settings import (  # heavy: Prefect takes seconds to import; only flow runs need it
        PREFECT_API_URL,
        temporary_settings,
    )

    if PREFECT_API_URL.value():
        yield PREFECT_API_URL.value()
        return
    from prefect.server.api.server import (
        SubprocessASGIServer,  # heavy: Prefect takes seconds to import; only flow runs need it
    )

    server = SubprocessASGIServer()
    server.start(timeout=int(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")))
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        server.stop()


def _shard_everything(dataset: str, shards: int | None, runner: str, write_cache: bool) -> dict:
    settings = load_settings()
    cfg, log = settings.distributed, get_run_logger()
    backbone, faces = settings.embedding.backbone, settings.faces
    geometry = chip_geometry(backbone)
    manifest = read_manifest(data_dir(), dataset)
    paths = [str(data_dir() / p) for p in manifest["path"]]
    bounds = sharding.shard_bounds(len(paths), shards or cfg.shards)
    threads = cfg.threads_per_worker if runner == "dask" else None
    started = time.perf_counter()
    chip_futures = [
        chips_task.submit(paths[a:b], faces.detector, faces.upsample, geometry, settings.images.max_pixels)
        for a, b in bounds
    ]
    precision = settings.embedding.precision
    emb_futures = [
        embed_task.submit(f, backbone, settings.embedding.flip_tta, threads, precision) for f in chip_futures
    ]
    key = sharding.chips_key(
        manifest["sha256"].tolist(), detector=faces.detector, upsample=faces.upsample, geometry=geometry
    )
    chips = sharding.assemble_chips([f.result() for f in chip_futures], key)
    result = sharding.assemble_embeddings([f.result() for f in emb_futures])
    wall = time.perf_counter() - started
    log.info(
        "%d images in %d shards on the %s runner: %.1f s (%.1f images/s)",
        len(paths),
        len(bounds),
        runner,
        wall,
        len(paths) / wall if wall else 0.0,
    )
    cache = state_dir() / "cache"
    if write_cache:
        sharding.store_chips(cache, chips)
        sharding.store_features(cache, key, backbone, result, precision)
    return {
        "dataset": dataset,
        "runner": runner,
        "images": len(paths),
        "shards": len(bounds),
        "chip_key": key,
        "backbone": backbone,
        "wall_s": round(wall, 2),
        "chips": chips.chips,
        "chip_table": chips.table,
        "features": result.features,
        "flip_features": result.flip_features,
        "embeddings": result.embeddings,
        "cache_dir": str(cache) if write_cache else None,
    }


@flow(name="distributed-embedding", log_prints=True)
def _embedding_flow(dataset: str, shards: int | None, runner: str, write_cache: bool) -> dict:
    return _shard_everything(dataset, shards, runner, write_cache)


def distributed_embedding(
    dataset: str | None = None, runner: str | None = None, shards: int | None = None, write_cache: bool = True
) -> dict:
    """Chips, features and pretrained embeddings of ``dataset`` (default: params' ``retrain.dataset``) over
    shards on ``runner`` (default: params' ``distributed.runner``); the arrays and timing, and the cache
    entries written when asked."""
    settings = load_settings()
    cfg, dataset = settings.distributed, dataset or settings.retrain.dataset
    runner = runner or cfg.runner
    if runner == "local" or dask_address(cfg):
        return _embedding_flow.with_options(task_runner=make_task_runner(cfg, runner))(
            dataset=dataset, shards=shards, runner=runner, write_cache=write_cache
        )
    with prefect_api_for_workers() as api_url:
        return _embedding_flow.with_options(task_runner=make_task_runner(cfg, runner, api_url))(
            dataset=dataset, shards=shards, runner=runner, write_cache=write_cache
        )
