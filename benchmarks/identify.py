"""LFW open-set identification: one-shot enrolment of every person with >= 2 images (first image in
sorted order), probes with their other images, people with one image as strangers.

Identities are split into two seeded halves. Each half is measured with a model that never trained on
it (for trained models: trained on the other half) and with tau calibrated on the other half's
impostor pairs, so neither the model nor the threshold has seen the people it is measured on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facegate.benchmarks import cascade_bench
from facegate.benchmarks.lfw import LfwSet, load_lfw
from facegate.components.calibration.cascade import CascadeCalibration
from facegate.components.calibration.thresholds import calibrate_tau, tau_for_fpir
from facegate.components.core.datasets import unit_hash
from facegate.components.core.images import load_image
from facegate.components.core.settings import Settings
from facegate.components.embedding.backbones import chip_geometry, make_backbone
from facegate.components.embedding.fusion import FusedHead, fit_fusion_weights
from facegate.components.embedding.members import member_of_full, member_slice
from facegate.components.embedding.model import EmbeddingModel, cached_features, embed_from_features
from facegate.components.embedding.precision import set_precision
from facegate.components.embedding.train import TrainConfig, train_head
from facegate.components.evaluation.identification import open_set_metrics
from facegate.components.gallery import Gallery
from facegate.components.recognition.recognizer import FaceRecognizer

Log = Callable[[str], None]


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


def measure_half(
    emb: np.ndarray,
    identities: np.ndarray,
    rows: np.ndarray,
    calib_rows: np.ndarray,
    target_far: float,
    embedder: tuple[str, str],
    index_kind: str = "flat",
    target_fpir: float = 1e-2,
) -> tuple[dict, Gallery]:
    enrolled, genuine, strangers = enrolment_split(identities, rows)
    calib = calibrate_tau(emb[calib_rows], identities[calib_rows], target_far)
    gallery = Gallery.new(
        emb.shape[1],
        embedder[0],
        embedder[1],
        index_kind,
        tau=calib.tau,
        target_far=target_far,
        achieved_far=calib.achieved_far,
        achieved_tar=calib.achieved_tar,
    )
    for r in enrolled:
        gallery.add(str(identities[r]), str(identities[r]), emb[r : r + 1], [""])
    g = gallery.search(emb[genuine], k=1)
    s = gallery.search(emb[strangers], k=1)
    correct = np.array([m[0][0] == identities[r] for m, r in zip(g, genuine)])
    gdist, sdist = np.array([m[0][2] for m in g]), np.array([m[0][2] for m in s])
    metrics = open_set_metrics(correct, gdist, sdist, calib.tau)
    tau_id = tau_for_fpir(calib.impostor_tail, calib.n_impostor_pairs, len(enrolled), target_fpir)
    metrics.update(
        {
            "tau_identify": tau_id,
            "target_fpir": target_fpir,
            "fpir_at_tau_identify": float((sdist <= tau_id).mean()),
            "fnir_at_tau_identify": float(1.0 - (correct & (gdist <= tau_id)).mean()),
        }
    )
    metrics.update(
        {
            "gallery_size": int(len(enrolled)),
            "calibration_far": calib.achieved_far,
            "calibration_tar": calib.achieved_tar,
            "calibration_impostor_pairs": calib.n_impostor_pairs,
        }
    )
    return metrics, gallery


def time_identify(
    recognize: Callable[[Path], np.ndarray | None], gallery: Gallery, files: list[Path], warmup: int = 2
) -> dict:
    """End-to-end per frame: load, detect, align, embed (``recognize``), then search; the first ``warmup``
    frames are run untimed (a serving process pays its one-off set-up once: inference copies of the
    model, the detector for a frame size, oneDNN's kernels), then every frame is timed."""
    for f in files[:warmup]:
        recognize(f)
    times, cpu = [], []
    load = os.getloadavg()[0]
    for f in files:
        t, c = time.perf_counter(), time.process_time()
        q = recognize(f)
        if q is not None:
            gallery.identify(q[None])
        times.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)  # all threads: what a frame costs, whatever the load
    return {
        "identify_ms_p50": float(np.percentile(times, 50)),
        "identify_ms_p99": float(np.percentile(times, 99)),
        "identify_frames_timed": len(times),
        "identify_cpu_ms_p50": float(np.percentile(cpu, 50)),
        "identify_torch_threads": torch.get_num_threads(),
        "identify_loadavg_1min": [round(load, 2), round(os.getloadavg()[0], 2)],
    }


# ------------------------------------------------------------------------------------- the driver


@dataclass
class LfwFeatures:
    """LFW's chips and the frozen backbone's features of them (and of their mirror images), cached."""

    lfw: LfwSet
    feats: np.ndarray
    flips: np.ndarray


def load_lfw_features(lfw_root: Path, cache_dir: Path, backbone: str, settings: Settings) -> LfwFeatures:
    lfw = load_lfw(
        lfw_root,
        cache_dir,
        detector=settings.faces.detector,
        upsample=settings.faces.upsample,
        geometry=chip_geometry(backbone),
    )
    feats, flips = cached_features(
        lfw.chips.chips, lfw.chip_key, backbone, cache_dir, precision=settings.embedding.precision
    )
    return LfwFeatures(lfw, feats, flips)


def run_params(settings: Settings, backbone: str, mode: str) -> dict:
    return {
        "backbone": backbone,
        "mode": mode,
        "target_far": settings.gallery.target_far,
        "detector": settings.faces.detector,
        "flip_tta": settings.embedding.flip_tta,
        "precision": settings.embedding.precision,
        "backend": settings.embedding.backend,
    }


def multi_image_rows(identities: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The ``rows`` whose identity has at least two images among them (what triplets and tau need)."""
    names, counts = np.unique(identities[rows], return_counts=True)
    return rows[np.isin(identities[rows], names[counts >= 2])]


def measure_halves(
    data: LfwFeatures,
    settings: Settings,
    backbone: str,
    mode: str,
    log: Log = lambda message: None,
    models: list | None = None,
) -> tuple[list[dict], Gallery, EmbeddingModel]:
    """Each identity half measured with a model (``head``: trained on the other half only; a fused
    model's weights fitted there too) and a tau calibrated on the other half; the metrics of both
    halves, the first half's gallery and the model that made it."""
    lfw, feats, flips = data.lfw, data.feats, data.flips
    half = identity_halves(lfw.identities, settings.seed)
    cfg = TrainConfig.from_settings(settings)
    flip = flips if settings.embedding.flip_tta else None
    halves, gallery = [], None
    for h in (0, 1):
        rows, other = np.flatnonzero(half == h), np.flatnonzero(half != h)
        model = set_precision(EmbeddingModel(make_backbone(backbone)), settings.embedding.precision)
        if mode == "head":  # trained on the other half only
            multi = multi_image_rows(lfw.identities, other)
            _, labels = np.unique(lfw.identities[multi], return_inverse=True)
            train_head(model, feats[multi], flips[multi], labels, cfg)
        if isinstance(model.head, FusedHead) and settings.embedding.fusion_weights == "fit":  # else equal, as served
            multi = multi_image_rows(lfw.identities, other)
            _, labels = np.unique(lfw.identities[multi], return_inverse=True)
            fit = fit_fusion_weights(
                model.head, feats[multi], labels, seed=settings.seed, flip_feats=None if flip is None else flips[multi]
            )
            log(f"half {h}: fusion {fit}")
        emb = embed_from_features(model, feats, flip)
        metrics, g = measure_half(
            emb,
            lfw.identities,
            rows,
            multi_image_rows(lfw.identities, other),
            settings.gallery.target_far,
            (backbone, f"{mode}-half{1 - h}"),
            settings.gallery.index_kind,
            target_fpir=settings.gallery.target_fpir,
        )
        log(f"half {h}: { ({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}) }")
        halves.append(metrics)
        if models is not None:  # each half's model, for the cascade's measurement
            models.append(model)
        if gallery is None:
            gallery, first_model = g, model
    return halves, gallery, first_model


def centre_face_embedding(recognizer, path: Path) -> np.ndarray | None:
    """One face per frame: the one nearest the centre (LFW frames hold other people too)."""
    image = load_image(path)
    faces = recognizer.embed_all(image)
    if not faces:
        return None
    cy, cx = image.shape[0] / 2, image.shape[1] / 2
    best = min(faces, key=lambda f: (f.box.centre[0] - cx) ** 2 + (f.box.centre[1] - cy) ** 2)
    return best.embedding


def run_identify_benchmark(
    data: LfwFeatures,
    settings: Settings,
    backbone: str,
    mode: str = "pretrained",
    timed_frames: int = 200,
    log: Log = lambda message: None,
) -> dict:
    """Open-set identification on LFW's two identity halves (averaged), then end-to-end latency on
    frames of the first half: load, detect, align, embed with the pretrained model, search. With
    ``recognition.cascade`` on, the cascade as served is scored too (cascade_*) and timed beside the full
    path and OpenCV's own YuNet + SFace (``anchor_opencv_ms_p50``), frame by frame in turn."""
    models: list[EmbeddingModel] = []
    halves, gallery, model = measure_halves(data, settings, backbone, mode, log, models)
    keys = [k for k, v in halves[0].items() if isinstance(v, (int, float))]
    result = {
        "backbone": backbone,
        "mode": mode,
        "target_far": settings.gallery.target_far,
        **{k: float(np.mean([m[k] for m in halves])) for k in keys},
        "halves": halves,
    }
    recognizer = FaceRecognizer(model, settings)  # the model that embedded the gallery
    result["inference"] = recognizer.inference  # the timed frames' backend (embedding.backend) and precision
    half = identity_halves(data.lfw.identities, settings.seed)
    first_half = [data.lfw.root / p for p, hh in zip(data.lfw.paths, half) if hh == 0][::7][:timed_frames]
    if settings.recognition.cascade != "on":
        result.update(time_identify(lambda path: centre_face_embedding(recognizer, path), gallery, first_half))
        return result
    cascades = [cascade_half(data, settings, models[h], halves[h], h) for h in (0, 1)]
    result["cascade"] = {
        "member": settings.recognition.cascade_member,
        "halves": [c[0] for c in cascades],
        **{k: float(np.mean([c[0][k] for c in cascades])) for k in CASCADE_KEYS},
    }
    result.update({f"cascade_{k}": result["cascade"][k] for k in CASCADE_KEYS})
    result.update(time_side_by_side(recognizer, gallery, cascades[0][1], halves[0]["tau_identify"], first_half))
    return result


CASCADE_KEYS = (
    "rank1",
    "dir_at_fpir_1e-2",
    "fpir_at_fpir_1e-2",
    "agreement",
    "cheap_share",
    "dir_at_tau_identify",
    "fpir_at_tau_identify",
    "agreement_at_tau_identify",
    "cheap_share_at_tau_identify",
)


def cascade_half(
    data: LfwFeatures, settings: Settings, model: EmbeddingModel, metrics: dict, h: int
) -> tuple[dict, CascadeCalibration]:
    """The cascade on half ``h``: its band fitted on the other half (as its tau), scored at the full
    model's threshold for FPIR 1e-2 on these strangers (comparable with dir_at_fpir_1e-2) and at the
    served identify tau."""
    lfw, member = data.lfw, settings.recognition.cascade_member
    full = embed_from_features(model, data.feats, data.flips if settings.embedding.flip_tta else None)
    cheap = cascade_bench.member_embeddings(model, data.feats, member)
    half = identity_halves(lfw.identities, settings.seed)
    rows, other = np.flatnonzero(half == h), np.flatnonzero(half != h)
    calib = multi_image_rows(lfw.identities, other)
    cal = cascade_bench.fit_on(
        full[calib],
        cheap[calib],
        lfw.identities[calib],
        member,
        settings.gallery.target_fpir,
        settings.gallery.target_far,
    )
    taus = {"oracle": metrics["threshold_at_fpir_1e-2"], "served": metrics["tau_identify"]}
    got = cascade_bench.identify_with_cascade(
        full, cheap, lfw.identities, enrolment_split(lfw.identities, rows), cal, taus, member_slice(model, member)
    )
    o, s = got["oracle"], got["served"]
    return (
        {
            "rank1": o["rank1"],
            "dir_at_fpir_1e-2": o["dir"],
            "fpir_at_fpir_1e-2": o["fpir"],
            "agreement": o["agreement"],
            "cheap_share": o["cheap_share"],
            "dir_at_tau_identify": s["dir"],
            "fpir_at_tau_identify": s["fpir"],
            "agreement_at_tau_identify": s["agreement"],
            "cheap_share_at_tau_identify": s["cheap_share"],
            "detail": got,
        },
        cal,
    )


def time_side_by_side(
    recognizer: FaceRecognizer, gallery: Gallery, cal: CascadeCalibration, tau: float, files: list[Path]
) -> dict:
    """facegate as served (cascade), facegate's full path and OpenCV's YuNet + SFace, each frame by all
    three in turn (the same load for each), with load averages before and after."""
    where = member_slice(recognizer.model, cal.member)
    runs = {
        "cascade": cascade_bench.cascade_recognizer(
            recognizer, cal, member_of_full(gallery.vectors, where), gallery, tau
        ),
        "full": lambda path: centre_face_embedding(recognizer, path),
        "anchor_opencv": cascade_bench.opencv_anchor(gallery.n_employees),
    }
    load = cascade_bench.load_now()
    for f in files[:2]:
        for run in runs.values():
            run(f)
    times: dict[str, list[float]] = {k: [] for k in runs}
    paths = []
    for i, f in enumerate(files):
        names = list(runs)[i % 3 :] + list(runs)[: i % 3]  # rotate who goes first
        for name in names:
            t = time.perf_counter()
            out = runs[name](f)
            if name == "full" and out is not None:
                gallery.identify(out[None], tau)
            times[name].append((time.perf_counter() - t) * 1000)
            if name == "cascade":
                paths.append(out)
    p = {k: (float(np.percentile(v, 50)), float(np.percentile(v, 99))) for k, v in times.items()}
    return {
        "identify_ms_p50": p["cascade"][0],
        "identify_ms_p99": p["cascade"][1],
        "full_identify_ms_p50": p["full"][0],
        "full_identify_ms_p99": p["full"][1],
        "anchor_opencv_ms_p50": p["anchor_opencv"][0],
        "anchor_opencv_ms_p99": p["anchor_opencv"][1],
        "identify_frames_timed": len(files),
        "identify_cheap_share_timed": paths.count("cheap") / max(len(paths), 1),
        "identify_torch_threads": torch.get_num_threads(),
        "identify_loadavg": [load, cascade_bench.load_now()],
    }
