"""The confidence cascade's calibration: the cheap member's own impostor scores and its uncertainty band.

Why: most faces at the door are far from the threshold, clearly an employee or clearly a stranger; one
member without mirror decides those alone and only faces near its threshold need the full fused,
flip-averaged embedding. The cheap pass's threshold is the member's own: the distance at which its
impostor pairs reach the same false-accept rate as the full model's threshold at that moment (so it
follows the full tau through gallery size and the deployment's blending). The band around it is chosen
on held-out calibration faces so the cascade decides as the full model does:

A face decided by the cheap pass disagrees with the full model when the pass accepts (member distance
below ``tau_c - below``) what the full model rejects, or rejects (above ``tau_c + above``) what it accepts.
A probe against K employees meets one genuine comparison and about K impostor ones, so its chance of a
disagreement is P_genuine + K * P_impostor; ``below`` and ``above`` are the narrowest half-widths keeping
each side's share at most half of ``1 - agreement`` (fitted at a stricter agreement than the goal, so it
holds on faces the fit never saw). Bands are kept for a grid of gallery sizes (a gallery uses the next
size up) and for 1:1 verification at the target FAR. Stored beside the model's calibration file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facegate.components.calibration.thresholds import ScoreSketch, all_pair_distances, far_per_comparison

BAND_SIZES = (1, 10, 100, 1_000, 10_000, 100_000)
FIT_AGREEMENT = 0.9998  # the fit's own target: stricter than the 0.999 goal, held on unseen faces
MIN_TAIL_PAIRS = 10  # a size's band needs this many calibration impostor pairs under its FAR, else full decides
FORMAT = 1


@dataclass(frozen=True)
class Band:
    """Half-widths (distance) below and above the member's threshold inside which the full model decides."""

    below: float
    above: float

    def decides(self, distance: float, tau_member: float) -> bool | None:
        """True: accept, False: reject, None: inside the band (the full model decides)."""
        if distance < tau_member - self.below:
            return True
        if distance > tau_member + self.above:
            return False
        return None


@dataclass(frozen=True)
class CascadeCalibration:
    """The cheap member's impostor sketch, the full model's (to read a tau's FAR) and the bands."""

    member: str
    embedder_version: str
    member_impostor: ScoreSketch
    full_impostor: ScoreSketch
    bands: dict[int, Band]  # gallery size -> band (identify at target_fpir)
    verify_band: Band  # 1:1 at target_far
    target_fpir: float
    target_far: float
    meta: dict = field(default_factory=dict)

    def member_tau(self, far: float) -> float:
        """The member's own threshold at false-accept rate ``far`` (its impostor pairs)."""
        return self.member_impostor.threshold_for_share(far)

    def band(self, gallery_size: int) -> Band:
        """The band fitted for the smallest grid size at least ``gallery_size`` (the largest beyond it)."""
        size = next((s for s in sorted(self.bands) if s >= gallery_size), max(self.bands))
        return self.bands[size]

    def save(self, path: Path) -> Path:
        header = {
            "format": FORMAT,
            "member": self.member,
            "embedder_version": self.embedder_version,
            "bands": {str(k): [b.below, b.above] for k, b in self.bands.items()},
            "verify_band": [self.verify_band.below, self.verify_band.above],
            "target_fpir": self.target_fpir,
            "target_far": self.target_far,
            "meta": self.meta,
        }
        arrays = {**self.member_impostor.to_arrays("member"), **self.full_impostor.to_arrays("full")}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.npz")
        os.close(fd)
        os.chmod(tmp, 0o644)
        try:
            np.savez(tmp, header=np.array(json.dumps(header, sort_keys=True)), **arrays)  # type: ignore[arg-type]
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: Path) -> CascadeCalibration:
        with np.load(path, allow_pickle=False) as z:
            h = json.loads(str(z["header"]))
            member, full = ScoreSketch.from_arrays(z, "member"), ScoreSketch.from_arrays(z, "full")
        return cls(
            h["member"],
            h["embedder_version"],
            member,
            full,
            {int(k): Band(*v) for k, v in h["bands"].items()},
            Band(*h["verify_band"]),
            h["target_fpir"],
            h["target_far"],
            h.get("meta", {}),
        )


def cascade_file(model_calibration_file: Path, member: str) -> Path:
    """Beside the model's calibration: ``<name>.cascade-<member>.npz``."""
    p = Path(model_calibration_file)
    return p.with_name(f"{p.stem}.cascade-{member}.npz")


def narrowest_half_width(needed: np.ndarray, weights: np.ndarray, budget: float) -> float:
    """Smallest w >= 0 with sum(weights[needed > w]) <= budget: ``needed`` is, per disagreeing pair, the
    half-width that would send it to the full model."""
    if needed.size == 0:
        return 0.0
    order = np.argsort(-needed)
    cum = np.cumsum(weights[order])
    k = int(np.searchsorted(cum, budget, side="right"))  # the k widest may stay wrong
    return float(max(needed[order[k]], 0.0)) if k < len(order) else 0.0


def fit_band(
    full: tuple[np.ndarray, np.ndarray],
    cheap: tuple[np.ndarray, np.ndarray],
    tau_full: float,
    tau_member: float,
    gallery_size: int,
    agreement: float = FIT_AGREEMENT,
) -> Band:
    """The band for one threshold pair: ``full`` and ``cheap`` are (genuine, impostor) distances of the
    same pairs under the full model and the member."""
    budget = (1.0 - agreement) / 2
    (fg, fi), (cg, ci) = full, cheap
    w_gen, w_imp = 1.0 / max(len(fg), 1), float(gallery_size) / max(len(fi), 1)
    sides = []
    for wrong_accept in (True, False):  # cheap accepts what full rejects / cheap rejects what full accepts
        needed, weights = [], []
        for f, c, w in ((fg, cg, w_gen), (fi, ci, w_imp)):
            bad = (f > tau_full) & (c < tau_member) if wrong_accept else (f <= tau_full) & (c > tau_member)
            needed.append((tau_member - c[bad]) if wrong_accept else (c[bad] - tau_member))
            weights.append(np.full(int(bad.sum()), w))
        sides.append(narrowest_half_width(np.concatenate(needed), np.concatenate(weights), budget))
    return Band(*sides)


def cascade_agreement(
    full: tuple[np.ndarray, np.ndarray],
    cheap: tuple[np.ndarray, np.ndarray],
    tau_full: float,
    tau_member: float,
    band: Band,
) -> dict:
    """On pairs: share decided by the cheap pass, and agreement with the full model (genuine, impostor)."""
    out = {}
    for name, f, c in (("genuine", full[0], cheap[0]), ("impostor", full[1], cheap[1])):
        accept, reject = c < tau_member - band.below, c > tau_member + band.above
        decided = accept | reject
        cascade = np.where(decided, accept, f <= tau_full)
        out[f"{name}_cheap_share"] = float(decided.mean()) if len(f) else float("nan")
        out[f"{name}_agreement"] = float((cascade == (f <= tau_full)).mean()) if len(f) else float("nan")
    return out


def fit_cascade(
    full_emb: np.ndarray,
    member_emb: np.ndarray,
    identities: np.ndarray,
    member: str,
    embedder_version: str,
    target_fpir: float,
    target_far: float,
    agreement: float = FIT_AGREEMENT,
) -> CascadeCalibration:
    """Bands and the member's impostor sketch from held-out faces embedded by both (rows aligned)."""
    full = all_pair_distances(full_emb, identities)
    cheap = all_pair_distances(member_emb, identities)
    full_sketch, member_sketch = ScoreSketch.from_scores(full[1], "low"), ScoreSketch.from_scores(cheap[1], "low")
    bands, measured = {}, {}
    for size in BAND_SIZES:
        far = far_per_comparison(target_fpir, size)
        taus = full_sketch.threshold_for_share(far), member_sketch.threshold_for_share(far)
        if far * len(full[1]) < MIN_TAIL_PAIRS:  # the calibration faces cannot tell: the full model decides
            bands[size] = Band(math.inf, math.inf)
            continue
        bands[size] = fit_band(full, cheap, *taus, size, agreement)
        measured[str(size)] = cascade_agreement(full, cheap, *taus, bands[size])
    taus = full_sketch.threshold_for_share(target_far), member_sketch.threshold_for_share(target_far)
    verify_band = fit_band(full, cheap, *taus, 1, agreement)
    meta = {
        "fit_agreement": agreement,
        "images": int(len(full_emb)),
        "identities": int(len(np.unique(identities))),
        "measured_on_fit": measured,
        "verify_measured_on_fit": cascade_agreement(full, cheap, *taus, verify_band),
    }
    return CascadeCalibration(
        member, embedder_version, member_sketch, full_sketch, bands, verify_band, target_fpir, target_far, meta
    )
