"""The confidence cascade's band: chosen on generated scores so cheap decisions agree with the full model."""

from __future__ import annotations

import numpy as np
import pytest

from facegate.components.calibration.cascade import (
    BAND_SIZES,
    Band,
    CascadeCalibration,
    cascade_agreement,
    cascade_file,
    fit_band,
    fit_cascade,
    narrowest_half_width,
)
from facegate.components.calibration.thresholds import ScoreSketch


def test_band_decides_outside_and_defers_inside() -> None:
    band = Band(below=0.1, above=0.2)
    assert band.decides(0.49, 0.6) is True
    assert band.decides(0.81, 0.6) is False
    assert band.decides(0.5, 0.6) is None and band.decides(0.8, 0.6) is None and band.decides(0.6, 0.6) is None


def test_narrowest_half_width_leaves_at_most_the_budget_wrong() -> None:
    needed = np.array([0.5, 0.3, 0.2, 0.1])
    weights = np.full(4, 0.25)
    assert narrowest_half_width(needed, weights, 0.0) == 0.5  # everything sent to the full model
    assert narrowest_half_width(needed, weights, 0.3) == 0.3  # the widest one may stay wrong
    assert narrowest_half_width(needed, weights, 1.0) == 0.0
    assert narrowest_half_width(np.zeros(0), np.zeros(0), 0.1) == 0.0


def correlated_pairs(rng: np.random.Generator, n: int, centre: float, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """(full, cheap) distances of n pairs: the cheap one is the full one plus noise."""
    full = rng.normal(centre, 0.12, n)
    return full, full + rng.normal(0, noise, n)


def test_fitted_band_agrees_on_fresh_pairs_and_decides_most() -> None:
    rng = np.random.default_rng(0)

    def draw(n_gen: int, n_imp: int):
        fg, cg = correlated_pairs(rng, n_gen, 0.75, 0.05)
        fi, ci = correlated_pairs(rng, n_imp, 1.30, 0.05)
        return (fg, fi), (cg, ci)

    full, cheap = draw(20_000, 200_000)
    tau_full = tau_member = 1.0
    band = fit_band(full, cheap, tau_full, tau_member, gallery_size=1, agreement=0.9995)
    assert 0 < band.below < 0.3 and 0 < band.above < 0.3
    fresh_full, fresh_cheap = draw(20_000, 200_000)
    measured = cascade_agreement(fresh_full, fresh_cheap, tau_full, tau_member, band)
    assert measured["genuine_agreement"] >= 0.999 and measured["impostor_agreement"] >= 0.999
    assert measured["genuine_cheap_share"] > 0.8 and measured["impostor_cheap_share"] > 0.9


def test_noisier_member_gets_a_wider_band() -> None:
    rng = np.random.default_rng(1)
    fg, cg = correlated_pairs(rng, 5000, 0.75, 0.02)
    fi, ci = correlated_pairs(rng, 50_000, 1.30, 0.02)
    narrow = fit_band((fg, fi), (cg, ci), 1.0, 1.0, 1)
    wide = fit_band((fg, fi), (fg + rng.normal(0, 0.1, len(fg)), fi + rng.normal(0, 0.1, len(fi))), 1.0, 1.0, 1)
    assert wide.below > narrow.below and wide.above > narrow.above


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_fit_cascade_on_embeddings_round_trips(tmp_path) -> None:
    rng = np.random.default_rng(2)
    ids = np.repeat(np.arange(60), 5)
    centres = rng.normal(size=(60, 32))
    full = unit(centres[ids] + 0.5 * rng.normal(size=(len(ids), 32)))
    member = unit(full + 0.15 * rng.normal(size=full.shape))
    cal = fit_cascade(full, member, ids, "sface", "sha256:x", target_fpir=0.01, target_far=0.001)
    assert set(cal.bands) == set(BAND_SIZES)
    assert cal.band(3) == cal.bands[10] and cal.band(10**9) == cal.bands[max(BAND_SIZES)]
    assert cal.member_tau(0.001) == pytest.approx(cal.member_impostor.threshold_for_share(0.001))
    path = cal.save(cascade_file(tmp_path / "m-fp.npz", "sface"))
    assert path.name == "m-fp.cascade-sface.npz"
    back = CascadeCalibration.load(path)
    assert back.bands == cal.bands and back.verify_band == cal.verify_band and back.member == "sface"
    assert isinstance(back.member_impostor, ScoreSketch) and back.member_impostor.n == cal.member_impostor.n
    for size, m in cal.meta["measured_on_fit"].items():
        assert m["genuine_agreement"] >= 0.999 and m["impostor_agreement"] >= 0.999, size
