"""The confidence cascade measured as served (identify and LFW pairs), and OpenCV's own YuNet + SFace as
the speed anchor on the same frames in the same run.

Why here: the benchmarks score the cascade with the same decision rule the service applies
(components/service/cascade.py: the member's nearest employee, its tau at the full tau's FAR, the band
for the gallery size), from cached features, so agreement with the full model is measured on every
probe rather than estimated.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from facegate.components.calibration.cascade import Band, CascadeCalibration, fit_band, fit_cascade
from facegate.components.core.images import load_image
from facegate.components.core.weights import weight_path
from facegate.components.embedding.members import (
    MemberSlice,
    member_backbone,
    member_embed_chips,
    member_from_features,
    member_of_full,
)
from facegate.components.embedding.members import member_slice as find_member
from facegate.components.embedding.model import EmbeddingModel
from facegate.components.evaluation.verification import best_threshold


def nearest(probes: np.ndarray, gallery: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row of the nearest gallery vector, its Euclidean distance) per probe (unit vectors)."""
    sims = probes @ gallery.T
    row = sims.argmax(1)
    return row, np.sqrt(np.maximum(2.0 - 2.0 * sims[np.arange(len(probes)), row], 0.0))


def cascade_decisions(
    full_d: np.ndarray,
    full_row: np.ndarray,
    cheap_d: np.ndarray,
    cheap_row: np.ndarray,
    tau_full: float,
    tau_member: float,
    band: Band,
) -> dict[str, np.ndarray]:
    """Per probe: the cascade's (accepted, row, decided cheap) and the full model's (accepted, row)."""
    accept, reject = cheap_d < tau_member - band.below, cheap_d > tau_member + band.above
    cheap = accept | reject
    full_accept = full_d <= tau_full
    return {
        "cheap": cheap,
        "accepted": np.where(cheap, accept, full_accept),
        "row": np.where(cheap, cheap_row, full_row),
        "full_accepted": full_accept,
        "full_row": full_row,
    }


def agreement(dec: dict[str, np.ndarray]) -> np.ndarray:
    """Same answer as the full model: both reject, or both accept the same employee."""
    return (dec["accepted"] == dec["full_accepted"]) & (~dec["accepted"] | (dec["row"] == dec["full_row"]))


def member_embeddings(model: EmbeddingModel, feats: np.ndarray, member: str) -> np.ndarray:
    return member_from_features(model, feats, find_member(model, member))


def identify_with_cascade(
    full: np.ndarray,
    cheap: np.ndarray,
    identities: np.ndarray,
    split: tuple,
    cal: CascadeCalibration,
    taus: dict[str, float],
    where: MemberSlice,
) -> dict:
    """Open-set identification with the cascade (one-shot gallery ``enrolled``, probes ``genuine`` and
    ``strangers``) at each full-model threshold in ``taus``: rank-1, DIR and FPIR, agreement, cheap share."""
    enrolled, genuine, strangers = split
    g_full = full[enrolled]
    g_cheap = member_of_full(g_full, where)
    probes = np.r_[genuine, strangers]
    f_row, f_d = nearest(full[probes], g_full)
    c_row, c_d = nearest(cheap[probes], g_cheap)
    is_gen = np.r_[np.ones(len(genuine), bool), np.zeros(len(strangers), bool)]
    right = identities[enrolled] == identities[probes][:, None]
    out: dict = {}
    for name, tau in taus.items():
        tau_m = cal.member_tau(cal.full_impostor.share_at_most(tau))
        dec = cascade_decisions(f_d, f_row, c_d, c_row, tau, tau_m, cal.band(len(enrolled)))
        correct = right[np.arange(len(probes)), dec["row"]]
        agree = agreement(dec)
        out[name] = {
            "tau_full": tau,
            "tau_member": tau_m,
            "rank1": float(correct[is_gen].mean()),
            "dir": float((correct & dec["accepted"])[is_gen].mean()),
            "fpir": float(dec["accepted"][~is_gen].mean()),
            "full_dir": float((right[np.arange(len(probes)), f_row] & dec["full_accepted"])[is_gen].mean()),
            "full_fpir": float(dec["full_accepted"][~is_gen].mean()),
            "agreement": float(agree.mean()),
            "agreement_genuine": float(agree[is_gen].mean()),
            "agreement_strangers": float(agree[~is_gen].mean()),
            "cheap_share": float(dec["cheap"].mean()),
        }
    return out


def fit_on(
    full: np.ndarray, cheap: np.ndarray, identities: np.ndarray, member: str, target_fpir: float, target_far: float
) -> CascadeCalibration:
    return fit_cascade(full, cheap, identities, member, "benchmark", target_fpir, target_far)


def lfw_pairs_with_cascade(
    full_d: np.ndarray, cheap_d: np.ndarray, same: np.ndarray, cal: CascadeCalibration, tau_full: float
) -> dict:
    """LFW's pairs decided at the 1:1 threshold ``tau_full`` by the cascade (the verify band)."""
    tau_m = cal.member_tau(cal.full_impostor.share_at_most(tau_full))
    band = cal.verify_band
    accept, reject = cheap_d < tau_m - band.below, cheap_d > tau_m + band.above
    cheap = accept | reject
    decision = np.where(cheap, accept, full_d <= tau_full)
    return {
        "accuracy": float((decision == same).mean()),
        "agreement": float((decision == (full_d <= tau_full)).mean()),
        "cheap_share": float(cheap.mean()),
        "full_accuracy": float(((full_d <= tau_full) == same).mean()),
    }


# ------------------------------------------------------------------------------------------ timing


def cascade_recognizer(
    recognizer, cal: CascadeCalibration, member_gallery: np.ndarray, full_gallery, tau_full: float
) -> Callable[[Path], str]:
    """The served identify path on one frame's centre face: cheap pass, full only inside the band.
    Returns which path decided ('none' without a face)."""
    model = recognizer.model
    where = find_member(model, cal.member)
    tau_m = cal.member_tau(cal.full_impostor.share_at_most(tau_full))
    band = cal.band(full_gallery.n_employees)
    geometry = member_backbone(model, where).chip_geometry

    def run(path: Path) -> str:
        image = load_image(path)
        crops = recognizer.finder.all_faces(image)
        if not crops:
            return "none"
        cy, cx = image.shape[0] / 2, image.shape[1] / 2
        crop = min(crops, key=lambda c: (c.box.centre[0] - cx) ** 2 + (c.box.centre[1] - cy) ** 2)
        q = member_embed_chips(model, crop.chip_for(geometry)[None], where)[0]  # as served: the member's part only
        _, d = nearest(q[None], member_gallery)
        if band.decides(float(d[0]), tau_m) is not None:
            return "cheap"
        full_gallery.identify(recognizer.embed_crops([crop])[0].embedding[None], tau_full)
        return "full"

    return run


def time_frames(run: Callable[[Path], object], files: list[Path], warmup: int = 2) -> tuple[dict, list]:
    for f in files[:warmup]:
        run(f)
    times, outs = [], []
    for f in files:
        t = time.perf_counter()
        outs.append(run(f))
        times.append((time.perf_counter() - t) * 1000)
    return {"ms_p50": float(np.percentile(times, 50)), "ms_p99": float(np.percentile(times, 99))}, outs


def opencv_anchor(gallery_size: int, seed: int = 0) -> Callable[[Path], object]:
    """OpenCV's own pipeline, default threads: load, YuNet detect, align (alignCrop), SFace embed, and a
    search over ``gallery_size`` unit vectors (random: the search costs the same as over real ones)."""
    import cv2  # heavy: OpenCV is only needed for the anchor

    detector = cv2.FaceDetectorYN.create(str(weight_path("yunet_2023mar")), "", (320, 320), 0.6, 0.3, 5000)
    recognizer = cv2.FaceRecognizerSF.create(str(weight_path("sface_2021dec")), "")
    rng = np.random.default_rng(seed)
    gallery = rng.normal(size=(gallery_size, 128)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)

    def run(path: Path) -> object:
        image = cv2.imread(str(path))
        detector.setInputSize((image.shape[1], image.shape[0]))
        _, faces = detector.detect(image)
        if faces is None or not len(faces):
            return None
        cy, cx = image.shape[0] / 2, image.shape[1] / 2
        face = min(faces, key=lambda f: (f[1] + f[3] / 2 - cy) ** 2 + (f[0] + f[2] / 2 - cx) ** 2)
        feat = recognizer.feature(recognizer.alignCrop(image, face)).ravel()
        feat = feat / np.linalg.norm(feat)
        return int(np.argmax(gallery @ feat))

    return run


def load_now() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def lfw_pairs_cascade(full_rows: np.ndarray, cheap_rows: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict:
    """LFW View 2 with the cascade: per fold, the full model's threshold and the band (with the member's
    threshold at the same FAR) chosen on the other folds' pairs, then the held-out fold decided by the
    cascade. ``full_rows``/``cheap_rows``: one row of pair distances per fold (that fold's model)."""
    acc, full_acc, agree, cheap_share = [], [], [], []
    for f in np.unique(folds):
        d_f, d_c, test = full_rows[f], cheap_rows[f], folds == f
        tau = best_threshold(d_f[~test], same[~test])
        imp_f, imp_c = d_f[~test & ~same], np.sort(d_c[~test & ~same])
        allowed = int(np.floor(float((imp_f <= tau).mean()) * len(imp_c)))
        tau_m = float(np.nextafter(imp_c[min(allowed, len(imp_c) - 1)], -np.inf))
        band = fit_band((d_f[~test & same], imp_f), (d_c[~test & same], d_c[~test & ~same]), tau, tau_m, 1)
        accept, reject = d_c[test] < tau_m - band.below, d_c[test] > tau_m + band.above
        cheap = accept | reject
        full_decision = d_f[test] <= tau
        decision = np.where(cheap, accept, full_decision)
        acc.append(float((decision == same[test]).mean()))
        full_acc.append(float((full_decision == same[test]).mean()))
        agree.append(float((decision == full_decision).mean()))
        cheap_share.append(float(cheap.mean()))
    return {
        "accuracy_mean": float(np.mean(acc)),
        "accuracy_std": float(np.std(acc)),
        "full_accuracy_mean": float(np.mean(full_acc)),
        "agreement": float(np.mean(agree)),
        "agreement_min_fold": float(np.min(agree)),
        "cheap_share": float(np.mean(cheap_share)),
    }
