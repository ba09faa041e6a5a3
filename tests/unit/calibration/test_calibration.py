import numpy as np
import pytest

from facegate.components.calibration.thresholds import all_pair_distances, calibrate_tau


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_all_pairs_split_by_identity():
    emb = unit([[1, 0], [1, 0.1], [0, 1]])
    gen, imp = all_pair_distances(emb, np.array([0, 0, 1]), chunk=2)
    assert gen.shape == (1,) and imp.shape == (2,)
    np.testing.assert_allclose(gen[0], np.linalg.norm(emb[0] - emb[1]), atol=1e-6)


def test_tau_meets_target_far_exactly():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(60), 3)
    centres = unit(rng.normal(size=(60, 16)))
    emb = unit(centres[labels] + 0.15 * rng.normal(size=(180, 16)))
    cal = calibrate_tau(emb, labels, target_far=1e-2)
    gen, imp = all_pair_distances(emb, labels)
    assert cal.achieved_far <= 1e-2 and (imp <= cal.tau).mean() == cal.achieved_far
    # one more accepted impostor would break the target: tau sits just below the next impostor
    assert ((imp <= np.sort(imp)[int(1e-2 * imp.size)]).mean()) > 1e-2 - 1e-9
    assert cal.achieved_tar > 0.9 and cal.n_impostor_pairs == imp.size


def test_identification_threshold_keeps_fpir_as_the_gallery_grows():
    from facegate.components.calibration.thresholds import far_per_comparison, tau_for_fpir

    assert far_per_comparison(0.01, 1) == pytest.approx(0.01)
    assert far_per_comparison(0.01, 1000) == pytest.approx(1.005e-5, rel=1e-3)
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(300), 2)
    emb = unit(rng.normal(size=(600, 16)))
    cal = calibrate_tau(emb, labels, target_far=1e-3)
    _, imp = all_pair_distances(emb, labels)
    small, large = (tau_for_fpir(cal.impostor_tail, cal.n_impostor_pairs, k, 0.01) for k in (10, 100))
    assert large < small  # a bigger gallery needs a stricter threshold
    assert (imp <= large).mean() <= far_per_comparison(0.01, 100)
    with pytest.raises(ValueError, match="beyond the stored impostor tail"):
        tau_for_fpir(cal.impostor_tail, cal.n_impostor_pairs, 1, 0.5)
