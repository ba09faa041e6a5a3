"""Shards on Prefect's Dask task runner (flows/distributed.py) against the local runner, on a small real
LFW slice: the same chips bit for bit, features and embeddings within 1e-6, and the cache entries the
retraining chain reads, written so that it recomputes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from tests.conftest import requires_dataset
from tests.integration.test_train_flow import lfw_slice

pytestmark = [pytest.mark.integration, requires_dataset("lfw")]


@pytest.fixture(scope="module")
def runs(module_sandbox, prefect_server):
    from facegate.flows.data import ingest_flow
    from facegate.flows.distributed import distributed_embedding

    lfw_slice(module_sandbox, people=6)
    params = yaml.safe_load((module_sandbox.root / "params.yaml").read_text())
    params["distributed"].update({"workers": 2, "threads_per_worker": 1})
    (module_sandbox.root / "params.yaml").write_text(yaml.safe_dump(params))
    ingest_flow(datasets=["lfw"])
    local = distributed_embedding("lfw", runner="local", shards=1, write_cache=False)
    dask = distributed_embedding("lfw", runner="dask", shards=3, write_cache=True)
    return local, dask


def test_dask_shards_equal_the_local_run(runs):
    local, dask = runs
    assert dask["shards"] == 3 and local["shards"] == 1 and dask["images"] == local["images"] >= 24
    assert dask["chip_key"] == local["chip_key"]
    assert np.array_equal(dask["chips"], local["chips"])  # uint8 chips: bit for bit
    assert dask["chip_table"]["path"].tolist() == local["chip_table"]["path"].tolist()
    for name in ("features", "flip_features", "embeddings"):
        assert dask[name].shape == local[name].shape
        # float32 sums in another batch order: within 1e-6 of the values' scale (unit embeddings: 1e-6 outright;
        # raw features reach ~5, so their last bits move by a few 1e-7 x 5)
        scale = max(1.0, float(np.abs(local[name]).max()))
        assert np.abs(dask[name] - local[name]).max() < 1e-6 * scale, name
    assert np.allclose(np.linalg.norm(dask["embeddings"], axis=1), 1.0, atol=1e-5)


def test_the_chain_reads_the_cache_the_dask_run_wrote(runs, monkeypatch):
    """read_training_data and cached_features find every entry: no detection, no backbone."""
    from facegate.components.core.paths import state_dir
    from facegate.components.core.settings import load_settings
    from facegate.components.embedding import model as model_module
    from facegate.components.faces import chips as chips_module
    from facegate.components.lifecycle.training_data import read_training_data

    _, dask = runs

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed although the Dask run cached it")

    monkeypatch.setattr(chips_module, "extract_chips", refuse)
    monkeypatch.setattr(model_module, "make_backbone", refuse)
    data = read_training_data("lfw", load_settings())
    assert data.chips.key == dask["chip_key"] and np.array_equal(np.asarray(data.chips.chips), dask["chips"])
    feats, flipped = model_module.cached_features(
        data.chips.chips,
        data.chips.key,
        dask["backbone"],
        state_dir() / "cache",
        precision=load_settings().embedding.precision,
    )
    assert np.array_equal(feats, dask["features"]) and np.array_equal(flipped, dask["flip_features"])


def test_runner_choice_from_params_and_environment(monkeypatch):
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from facegate.components.core.settings import load_settings
    from facegate.flows.distributed import make_task_runner

    def distributed(**overrides):
        return load_settings(overrides={"distributed": {"runner": "local", "address": None, **overrides}}).distributed

    assert isinstance(make_task_runner(distributed()), ThreadPoolTaskRunner)
    local_cluster = make_task_runner(distributed(runner="dask", workers=2))
    assert isinstance(local_cluster, DaskTaskRunner) and local_cluster.address is None
    assert local_cluster.cluster_kwargs["n_workers"] == 2
    by_params = make_task_runner(distributed(runner="dask", address="tcp://127.0.0.1:18786"))
    assert by_params.address == "tcp://127.0.0.1:18786"
    monkeypatch.setenv("FACEGATE_DASK_ADDRESS", "tcp://127.0.0.1:28786")
    assert (
        make_task_runner(distributed(runner="dask", address="tcp://127.0.0.1:18786")).address == "tcp://127.0.0.1:28786"
    )
