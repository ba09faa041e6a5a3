"""Gallery scaling benchmark on a tiny gallery: calibration, exact self-recall, the documented result keys."""

from __future__ import annotations

import json

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from facegate.benchmarks import gallery_scaling as gs  # noqa: E402


@pytest.fixture(scope="module")
def result() -> dict:
    faiss.omp_set_num_threads(2)
    return gs.run_benchmark(
        [2000], 200, n_single=20, hnsw_ef_search=(16, 64), ivf_nprobe=(4, 16), calibration_pairs=1500
    )


def test_calibration_hits_lfw_means(result):
    achieved = result["calibration"]["achieved"]
    assert abs(achieved["genuine_mean"] - 0.37) < 0.05
    assert abs(achieved["impostor_mean"] - 0.92) < 0.05
    assert result["calibration"]["sigma"] > 0 and result["calibration"]["tau"] > 0


def test_exact_search_has_full_recall_against_itself(result):
    exact = result["sizes"][0]["exact"]
    assert exact["recall_at_1"] == 1.0 and exact["decision_agreement"] == 1.0 and exact["speedup_batch"] == 1.0


def test_result_has_documented_keys(result):
    assert set(gs.RESULT_KEYS) <= set(result)
    size = result["sizes"][0]
    assert set(gs.SIZE_KEYS) <= set(size)
    assert size["n_identities"] == 2000 and size["n_queries"] == 200
    assert len(size["approximate"]) == 4
    for row in [size["exact"], *size["approximate"]]:
        assert set(gs.ROW_KEYS) <= set(row)
        assert 0.0 <= row["recall_at_1"] <= 1.0 and row["batch_qps"] > 0 and row["memory_bytes"] > 0
    assert result["goal_met_at_1m"] is None  # 1M not run
    assert len(result["summary"]) == 1
    json.dumps(result)  # serialisable as the script writes it


def test_dataset_shapes_and_probe_identities():
    cal = gs.Calibration(
        sigma=0.27, tau=0.79, target_genuine=0.37, target_impostor=0.92, achieved={}, lfw_reference={}, n_pairs=0
    )
    gallery, queries, identity = gs.make_dataset(500, 101, cal, seed=3, chunk=128)
    assert gallery.shape == (500, 128) and queries.shape == (101, 128) and gallery.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(gallery, axis=1), 1.0, atol=1e-5)
    assert (identity >= 0).sum() == 51 and len(set(identity[identity >= 0])) == 51
    genuine = identity >= 0
    # a genuine probe is closest to its own enrolled vector
    top1 = np.argmax(queries @ gallery.T, axis=1)
    assert np.mean(top1[genuine] == identity[genuine]) > 0.95


def test_calibration_rejects_impossible_targets():
    with pytest.raises(ValueError):
        gs.calibrate(target_genuine=0.9, target_impostor=0.5)
