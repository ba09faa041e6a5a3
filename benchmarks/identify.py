"""LFW open-set identification: one-shot enrolment of every person with >= 2 images (first image in
sorted order), probes with their other images, people with one image as strangers.

Identities are split into two seeded halves. Each half is measured with a model that never trained on
it (for trained models: trained on the other half) and with tau calibrated on the other half's
impostor pairs, so neither the model nor the threshold has seen the people it is measured on.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from components.calibration import calibrate_tau, tau_for_fpir
from components.evaluation.identification import open_set_metrics
from components.gallery import Gallery
from components.ingest import unit_hash


def identity_halves(identities: np.ndarray, seed: int) -> np.ndarray:
    """0/1 per image: the half its identity belongs to."""
    names = np.unique(identities)
    half_of = {n: int(unit_hash(n, seed) >= 0.5) for n in names}
    return np.array([half_of[i] for i in identities])


def enrolment_split(identities: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Within ``rows`` (sorted by path): first image of each multi-image identity enrolled, the rest
    genuine probes, every image of a single-image identity a stranger probe."""
    ids = identities[rows]
    names, first, counts = np.unique(ids, return_index=True, return_counts=True)
    multi = set(names[counts >= 2])
    enrolled = rows[first[counts >= 2]]
    is_multi = np.array([i in multi for i in ids])
    genuine = np.setdiff1d(rows[is_multi], enrolled)
    strangers = rows[~is_multi]
    return enrolled, genuine, strangers


def measure_half(emb: np.ndarray, identities: np.ndarray, rows: np.ndarray, calib_rows: np.ndarray,
                 target_far: float, embedder: tuple[str, str], index_kind: str = "flat",
                 target_fpir: float = 1e-2) -> tuple[dict, Gallery]:
    enrolled, genuine, strangers = enrolment_split(identities, rows)
    calib = calibrate_tau(emb[calib_rows], identities[calib_rows], target_far)
    gallery = Gallery.new(emb.shape[1], embedder[0], embedder[1], index_kind, tau=calib.tau,
                          target_far=target_far, achieved_far=calib.achieved_far, achieved_tar=calib.achieved_tar)
    for r in enrolled:
        gallery.add(str(identities[r]), str(identities[r]), emb[r:r + 1], [""])
    g = gallery.search(emb[genuine], k=1)
    s = gallery.search(emb[strangers], k=1)
    correct = np.array([m[0][0] == identities[r] for m, r in zip(g, genuine)])
    gdist, sdist = np.array([m[0][2] for m in g]), np.array([m[0][2] for m in s])
    metrics = open_set_metrics(correct, gdist, sdist, calib.tau)
    tau_id = tau_for_fpir(calib.impostor_tail, calib.n_impostor_pairs, len(enrolled), target_fpir)
    metrics.update({"tau_identify": tau_id, "target_fpir": target_fpir,
                    "fpir_at_tau_identify": float((sdist <= tau_id).mean()),
                    "fnir_at_tau_identify": float(1.0 - (correct & (gdist <= tau_id)).mean())})
    metrics.update({"gallery_size": int(len(enrolled)), "calibration_far": calib.achieved_far,
                    "calibration_tar": calib.achieved_tar, "calibration_impostor_pairs": calib.n_impostor_pairs})
    return metrics, gallery


def time_identify(recognize: Callable[[Path], np.ndarray | None], gallery: Gallery, files: list[Path]) -> dict:
    """End-to-end per frame: load, detect, align, embed (``recognize``), then search."""
    times = []
    for f in files:
        t = time.perf_counter()
        q = recognize(f)
        if q is not None:
            gallery.identify(q[None])
        times.append((time.perf_counter() - t) * 1000)
    return {"identify_ms_p50": float(np.percentile(times, 50)), "identify_ms_p99": float(np.percentile(times, 99)),
            "identify_frames_timed": len(times)}
