"""The index-kind policy shared by the gallery and the scaling benchmark, and the search device."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from facegate.components.core.errors import SettingsError
from facegate.components.gallery import GalleryManifest
from facegate.components.gallery import index_kinds as kinds
from tests.unit.gallery.synthetic import DIM, unit


@pytest.mark.parametrize(
    "setting, gpus, device",
    [
        ("cpu", 0, "cpu"),
        ("cpu", 2, "cpu"),
        ("auto", 0, "cpu"),
        ("auto", 1, "gpu"),
        ("gpu", 1, "gpu"),
    ],
)
def test_resolve_faiss_device(monkeypatch: pytest.MonkeyPatch, setting: str, gpus: int, device: str) -> None:
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: gpus)
    assert kinds.resolve_faiss_device(setting) == device


def test_gpu_requested_without_gpu_support_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(faiss, "StandardGpuResources", raising=False)  # faiss-cpu
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    assert not kinds.gpu_available()
    with pytest.raises(SettingsError, match="^gallery.device: gpu") as exc:
        kinds.resolve_faiss_device("gpu")
    assert exc.value.code == "device_unavailable"  # a SettingsError, as a missing GPU for embedding.device
    with pytest.raises(SettingsError, match="'tpu' is not one of cpu | gpu | auto"):
        kinds.resolve_faiss_device("tpu")


def test_this_machine_resolves_auto() -> None:
    assert kinds.resolve_faiss_device("auto") == ("gpu" if kinds.gpu_available() else "cpu")


def test_ivf_falls_back_to_flat_until_trainable() -> None:
    m = GalleryManifest(embedder_name="m", embedder_version="1", dim=DIM, index_kind="ivf", ivf_nlist=2, ivf_nprobe=8)
    vectors = unit(np.random.default_rng(0).standard_normal((2 * kinds.IVF_MIN_POINTS_PER_CENTROID, DIM)))
    ids = np.arange(len(vectors), dtype=np.int64)
    index, kind = kinds.build_gallery_index(m, vectors[:-1], ids[:-1])
    assert kind == "flat" and kinds.index_kind(index) == "flat" and not kinds.ivf_trainable(len(vectors) - 1, 2)
    index, kind = kinds.build_gallery_index(m, vectors, ids)
    assert kind == "ivf" and kinds.index_kind(index) == "ivf" and index.ntotal == len(vectors)
    assert faiss.downcast_index(index.index).nprobe == 2  # nprobe is capped at nlist


def test_search_params_on_bare_and_wrapped_indexes() -> None:
    hnsw = kinds.hnsw_index(DIM, m=8, ef_construction=40)
    assert hnsw.hnsw.efConstruction == 40
    kinds.set_search_params(hnsw, ef_search=77)
    assert hnsw.hnsw.efSearch == 77
    wrapped = faiss.IndexIDMap2(kinds.hnsw_index(DIM))
    kinds.set_search_params(wrapped, nprobe=3, ef_search=33)
    assert faiss.downcast_index(wrapped.index).hnsw.efSearch == 33
    kinds.set_search_params(kinds.flat_index(DIM), nprobe=3, ef_search=33)  # no knobs: a no-op


def test_sampled_ivf_training_is_seeded() -> None:
    vectors = unit(np.random.default_rng(1).standard_normal((2000, DIM)))
    centroids = []
    for _ in range(2):
        index = kinds.ivf_index(DIM, kinds.ivf_nlist(len(vectors) // 20))
        kinds.train_ivf(index, vectors, sample_per_list=40, seed=5)
        assert index.is_trained and index.cp.max_points_per_centroid == 40
        centroids.append(faiss.vector_to_array(faiss.downcast_index(index.quantizer).codes))
    np.testing.assert_array_equal(*centroids)


def test_ip_to_distance() -> None:
    np.testing.assert_allclose(
        kinds.ip_to_distance(np.array([1.0, 0.0, -1.0, 1.0 + 1e-7])), [0.0, np.sqrt(2.0), 2.0, 0.0]
    )
