import numpy as np
import pytest

from facegate.components.evaluation.identification import open_set_metrics


def test_open_set_metrics_by_hand():
    correct = np.array([True, True, True, False])
    gdist = np.array([0.2, 0.3, 0.6, 0.25])
    imp = np.array([0.5, 0.7, 0.8, 0.9] * 25)  # 100 strangers: 25 at 0.5
    m = open_set_metrics(correct, gdist, imp, tau=0.55)
    assert m["rank1"] == 0.75
    # FPIR 1e-2 allows 1 of 100 strangers: the threshold sits below 0.5, so 0.2 and 0.3 count
    assert m["dir_at_fpir_1e-2"] == 0.5 and m["threshold_at_fpir_1e-2"] < 0.5
    assert m["fpir_at_tau"] == 0.25 and m["fnir_at_tau"] == 0.5
    assert m["genuine_probes"] == 4 and m["impostor_probes"] == 100


def test_keys_for_default_fpirs():
    m = open_set_metrics([True], [0.1], [0.9, 0.8])
    assert {"dir_at_fpir_1e-2", "dir_at_fpir_1e-3"} <= set(m) and "tau" not in m
    assert m["dir_at_fpir_1e-2"] == pytest.approx(1.0)


def test_enrolment_split_one_shot_and_strangers():
    from facegate.benchmarks.identify import enrolment_split, identity_halves

    identities = np.array(["a", "a", "a", "b", "c", "c"])
    enrolled, genuine, strangers = enrolment_split(identities, np.arange(6))
    assert enrolled.tolist() == [0, 4] and genuine.tolist() == [1, 2, 5] and strangers.tolist() == [3]
    halves = identity_halves(np.array([f"p{i}" for i in range(200)]), seed=1)
    assert 60 < halves.sum() < 140  # a roughly even, seeded split
    np.testing.assert_array_equal(halves, identity_halves(np.array([f"p{i}" for i in range(200)]), seed=1))


def test_measure_half_end_to_end_on_synthetic_embeddings():
    from facegate.benchmarks.identify import measure_half

    rng = np.random.default_rng(0)
    names = np.array([f"id{i:03d}" for i in range(80) for _ in range(3)] + [f"solo{i}" for i in range(40)])
    centres = {n: rng.normal(size=32) for n in sorted(set(names))}  # sorted: set order varies per process
    emb = np.stack([centres[n] + 0.15 * rng.normal(size=32) for n in names]).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    measured = np.array([n.startswith("solo") or int(n[2:]) < 40 for n in names])  # id000-id039 + strangers
    rows = np.flatnonzero(measured)
    calib = np.flatnonzero(~np.isin(np.arange(len(names)), rows))
    m, gallery = measure_half(emb, names, np.sort(rows), calib, 1e-2, ("synthetic", "v1"))
    assert m["gallery_size"] == gallery.n_employees > 0 and m["rank1"] > 0.95
    assert m["impostor_probes"] == 40 and m["fnir_at_tau"] < 0.1
    # FPIR at tau is the share of strangers whose nearest enrolled face is within tau ...
    strangers = emb[np.char.startswith(names, "solo")]
    nearest = [hits[0][2] for hits in gallery.search(strangers, k=1)]
    assert m["fpir_at_tau"] == np.mean(np.array(nearest) <= m["tau"])
    # ... and far above the 1:1 FAR of 1e-2 that tau was calibrated for: 40 chances per stranger
    assert m["fpir_at_tau"] > 0.05
