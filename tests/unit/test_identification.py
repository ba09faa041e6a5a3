import numpy as np
import pytest

from components.evaluation.identification import open_set_metrics


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
