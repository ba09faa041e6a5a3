"""The LFW View 2 benchmark for the face pipeline: pretrained, ``head`` and ``finetune`` models.

Every image is detected and aligned once (chip cache) and every frozen backbone's features are
computed once (feature cache), so comparing modes, miners and flip TTA costs seconds, not hours.
Trained models follow the protocol's rule that no model is trained on identities of the fold it is
tested on: the 10 folds are split into groups, one model per group, trained on every LFW identity
that does not appear in that group's pairs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from facegate.benchmarks import cascade_bench
from facegate.components.core.images import load_image
from facegate.components.core.settings import AugmentSettings, MaskSettings, Settings, load_settings
from facegate.components.embedding.backbones import FUSION_SEPARATOR, chip_geometry, make_backbone
from facegate.components.embedding.fusion import fit_fusion_weights
from facegate.components.embedding.model import (
    EmbeddingModel,
    cached_augmented_features,
    cached_features,
    chip_features,
    embed_chips,
    embed_from_features,
)
from facegate.components.embedding.openvino_runtime import inference_summary, set_backend
from facegate.components.embedding.precision import inference_dtype, set_precision
from facegate.components.embedding.train import TrainConfig, train_finetune, train_head, train_head_dataset_mining
from facegate.components.evaluation.pair_classifier import FEATURES, fit_pair_classifier, pair_accuracy
from facegate.components.evaluation.verification import (
    identity_disjoint_training_identities,
    pairs_arrays,
    read_lfw_pairs,
    roc_metrics,
    verification_accuracy_10fold,
)
from facegate.components.faces.align import CHIP_GEOMETRIES, FaceAligner
from facegate.components.faces.augment import as_function, describe, face_augmentation
from facegate.components.faces.chips import ChipSet, cached_chips
from facegate.components.faces.detectors import detector_from_settings
from facegate.components.faces.masks import mask_chips
from facegate.components.faces.pipeline import FaceFinder

Progress = Callable[[str, int, int], None] | None
# measure_speed's ``backends`` rows: the pipeline with full (flip TTA) embeddings, as enrolment embeds, on each
BACKEND_ROWS = (("torch", "float32"), ("torch", "bfloat16"), ("openvino", "bfloat16"))
PROGRESS_EVERY = {"chips": 2000, "features": 2048, "features-flip": 2048}  # log lines, not a flood


@dataclass
class LfwSet:
    root: Path
    paths: list[str]  # relative, sorted
    identities: np.ndarray  # per image
    chips: ChipSet
    chip_key: str
    pair_a: np.ndarray  # row index of each pair's images
    pair_b: np.ndarray
    same: np.ndarray
    folds: np.ndarray
    pairs: list


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_lfw(
    root: Path,
    cache_dir: Path,
    *,
    detector: str = "dlib_hog",
    upsample: int = 0,
    progress: Progress = None,
    geometry: str = "dlib_150",
) -> LfwSet:
    """Every LFW image's aligned chip in ``geometry`` (cached) and the View 2 pairs as row indices."""
    files = sorted(root.glob("*/*.jpg"))
    paths = [f"{f.parent.name}/{f.name}" for f in files]
    hashes = [_sha256(f) for f in files]
    settings = {"detector": detector, "upsample": upsample, "geometry": geometry}
    chips = cached_chips(
        cache_dir, files, hashes, **settings, progress=(lambda i, n: progress("chips", i, n)) if progress else None
    )
    pairs = read_lfw_pairs(root / "pairs.txt")
    row = {p: i for i, p in enumerate(paths)}
    same, folds = pairs_arrays(pairs)
    return LfwSet(
        root=root,
        paths=paths,
        identities=np.array([p.split("/")[0] for p in paths]),
        chips=chips,
        chip_key=chips.key,
        pair_a=np.array([row[p.path_a] for p in pairs]),
        pair_b=np.array([row[p.path_b] for p in pairs]),
        same=same,
        folds=folds,
        pairs=pairs,
    )


def pair_distances(emb: np.ndarray, lfw: LfwSet, masked: MaskedProbes | None = None) -> np.ndarray:
    """Each pair's distance; with ``masked``, the second image of every pair is its masked copy."""
    if masked is None:
        return np.linalg.norm(emb[lfw.pair_a] - emb[lfw.pair_b], axis=1)
    return np.linalg.norm(emb[lfw.pair_a] - masked.emb[masked.position[lfw.pair_b]], axis=1)


@dataclass
class MaskedProbes:
    """The masked LFW protocol: the second image of every View 2 pair gets a synthetic mask (seeded by
    its row: the same masks every run, for every model); chips cached like the plain ones."""

    rows: np.ndarray  # LFW rows that are some pair's second image
    chips: np.ndarray  # their masked chips
    key: str  # cache key of the masked chips (features are cached under it)
    position: np.ndarray  # LFW row -> index into rows (-1 where not masked)
    emb: np.ndarray | None = None  # the current model's embeddings of the masked chips


def masked_probes(lfw: LfwSet, cache_dir: Path, masks, seed: int) -> MaskedProbes:
    rows = np.unique(lfw.pair_b)
    key = hashlib.sha256(
        f"{lfw.chip_key}|{json.dumps(masks.model_dump(), sort_keys=True)}|{seed}".encode()
    ).hexdigest()[:20]
    path = cache_dir / f"chips-masked-{key}.npy"
    if not path.is_file():
        chips = mask_chips(np.asarray(lfw.chips.chips[rows]), seed, masks, rows=rows)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, chips)
        tmp.replace(path)
    position = np.full(len(lfw.paths), -1)
    position[rows] = np.arange(len(rows))
    return MaskedProbes(rows, np.load(path, mmap_mode="r"), f"masked-{key}", position)


def fold_groups(n_groups: int) -> list[list[int]]:
    return [list(map(int, g)) for g in np.array_split(np.arange(10), n_groups)]


def training_rows(lfw: LfwSet, test_folds: list[int]) -> np.ndarray:
    """Rows of images whose identity appears in none of ``test_folds``' pairs (and has >= 2 images)."""
    allowed = set(lfw.identities)
    for f in test_folds:
        allowed &= identity_disjoint_training_identities(lfw.pairs, f, lfw.identities)
    ids, counts = np.unique(lfw.identities, return_counts=True)
    multi = set(ids[counts >= 2])
    return np.flatnonzero([i in allowed and i in multi for i in lfw.identities])


def run_lfw_benchmark(
    lfw: LfwSet,
    cache_dir: Path,
    *,
    backbone: str,
    mode: str,
    flip_tta: bool,
    cfg: TrainConfig,
    n_groups: int | None = None,
    progress: Progress = None,
    pair_classifiers: bool = True,
    augment: Callable[[np.ndarray], np.ndarray] | None = None,
    mining: str = "online",
    mining_rounds: int = 3,
    artifact_dir: Path | None = None,
    on_epoch: Callable[[int, int, dict], None] | None = None,
    masked: MaskedProbes | None = None,
    aug_feats: list[np.ndarray] | tuple = (),
    aug_prob: float = 0.0,
    precision: str = "float32",
    fit_fusion: bool = True,
    cascade_member: str | None = None,
) -> dict:
    """Accuracy (10-fold), ROC figures and training history for one backbone/mode/TTA setting; with
    ``masked``, on the masked protocol (same keys). ``aug_feats``: frozen features of augmented copies
    of every LFW chip (one array per copy), which ``head`` training reads as the chain does (masked
    copies among them); a fused head's weights are then fitted before it trains, as in the chain
    (``fit_fusion``: params' ``embedding.fusion_weights`` is ``fit``; else they stay equal, as served)."""
    if mode not in ("pretrained", "head", "finetune"):
        raise ValueError(f"mode must be pretrained, head or finetune, not {mode!r}")
    torch.manual_seed(cfg.seed)
    feats, flip_feats = cached_features(
        lfw.chips.chips, lfw.chip_key, backbone, cache_dir, progress, precision=precision
    )
    if masked is not None:
        m_feats, m_flip = cached_features(masked.chips, masked.key, backbone, cache_dir, progress, precision=precision)
    # fusion weights are fitted per fold group, on its training folds; two groups for a pretrained fused
    # model: the pooled ROC then mixes only two weightings (each group's distances have their own scale)
    fused = FUSION_SEPARATOR in backbone
    n_groups = n_groups or (10 if mode == "head" else 2 if mode == "finetune" or fused else 1)
    groups = fold_groups(n_groups) if mode != "pretrained" or fused else [list(range(10))]
    fusion_fits = []
    member_rows: dict[str, dict[bool, dict[int, np.ndarray]]] = {}  # fused: each member alone, same chips
    dist_rows: dict[bool, dict[int, np.ndarray]] = {False: {}, True: {}}  # by flip TTA, then fold
    tta_only_rows: dict[str, dict[int, np.ndarray]] = {}  # fused: flip TTA on that member alone
    cheap_rows: dict[int, np.ndarray] = {}  # the cascade's cheap pass (cascade_member), by fold
    logreg: dict[str, list[float]] = {kind: [] for kind in FEATURES}
    histories, train_sizes = [], []
    train_seconds = 0.0
    for gi, group in enumerate(groups):
        model = set_precision(EmbeddingModel(make_backbone(backbone)), precision)
        t0 = time.perf_counter()
        if mode != "pretrained":
            rows = training_rows(lfw, group)
            _, labels = np.unique(lfw.identities[rows], return_inverse=True)
            train_sizes.append({"test_folds": group, "images": int(len(rows)), "identities": int(labels.max() + 1)})
            cb = (lambda e, r, gi=gi: on_epoch(gi, e, r)) if on_epoch else None
            if mode == "head" and mining == "dataset":
                out = artifact_dir / f"group{gi}" if artifact_dir else None
                if out:
                    out.mkdir(parents=True, exist_ok=True)
                hist = train_head_dataset_mining(
                    model,
                    feats[rows],
                    flip_feats[rows],
                    labels,
                    cfg,
                    rounds=mining_rounds,
                    artifact_dir=out,
                    on_epoch=cb,
                )
            elif mode == "head":
                if (
                    fused and fit_fusion
                ):  # before training, on the pretrained heads (facegate.components.lifecycle.stages)
                    fusion_fits.append(
                        {
                            "test_folds": group,
                            **fit_fusion_weights(
                                model.head,
                                feats[rows],
                                labels,
                                seed=cfg.seed + gi,
                                flip_feats=flip_feats[rows] if flip_tta else None,
                            ),
                        }
                    )
                hist = train_head(
                    model,
                    feats[rows],
                    flip_feats[rows],
                    labels,
                    cfg,
                    on_epoch=cb,
                    aug_feats=[a[rows] for a in aug_feats],
                    aug_prob=aug_prob,
                )
            else:
                hist = train_finetune(
                    model, np.asarray(lfw.chips.chips[rows]), labels, cfg, augment=augment, on_epoch=cb
                )
            histories.append(hist)
        train_seconds += time.perf_counter() - t0
        f_all, ff_all = feats, flip_feats
        if mode == "finetune":  # the backbone changed: its features must be computed again
            f_all = chip_features(model.backbone, lfw.chips.chips)
            ff_all = chip_features(model.backbone, lfw.chips.chips, flip=True)
        if fused and fit_fusion and not (mode == "head" and mining == "online"):  # training folds only: a test
            rows = training_rows(lfw, group)  # fold never chooses its own weights
            _, labels = np.unique(lfw.identities[rows], return_inverse=True)
            fusion_fits.append(
                {
                    "test_folds": group,
                    **fit_fusion_weights(
                        model.head,
                        f_all[rows],
                        labels,
                        seed=cfg.seed + gi,
                        flip_feats=ff_all[rows] if flip_tta else None,
                    ),
                }
            )
        embs = {tta: embed_from_features(model, f_all, ff_all if tta else None) for tta in (False, True)}
        emb = embs[flip_tta]
        if cascade_member and masked is None:  # the cascade's cheap pass: the member alone, no mirror
            cheap = cascade_bench.member_embeddings(model, f_all, cascade_member)
            for f in group:
                cheap_rows[f] = pair_distances(cheap, lfw)
        m_embs = {}
        if masked is not None:
            mf, mff = (
                (m_feats, m_flip)
                if mode != "finetune"
                else (
                    chip_features(model.backbone, masked.chips),
                    chip_features(model.backbone, masked.chips, flip=True),
                )
            )
            m_embs = {tta: embed_from_features(model, mf, mff if tta else None) for tta in (False, True)}
        for f in group:
            for tta in (False, True):
                if masked is not None:
                    masked.emb = m_embs[tta]
                dist_rows[tta][f] = pair_distances(embs[tta], lfw, masked)
        if fused:  # flip TTA on one member only: its mirror features, the others' plain ones
            for i, member in enumerate(model.backbone.members):
                hybrid = member_mirror_only(model.head, f_all, ff_all, i)
                e = embed_from_features(model, f_all, hybrid)
                if masked is not None:
                    masked.emb = embed_from_features(model, mf, member_mirror_only(model.head, mf, mff, i))
                for f in group:
                    tta_only_rows.setdefault(member.name, {})[f] = pair_distances(e, lfw, masked)
                del hybrid
            fitted = model.head.weights.tolist()
            for i, member in enumerate(model.backbone.members):
                model.head.set_weights([float(j == i) for j in range(len(fitted))])
                for tta in (False, True):
                    e = embed_from_features(model, f_all, ff_all if tta else None)
                    if masked is not None:
                        masked.emb = embed_from_features(model, mf, mff if tta else None)
                    for f in group:
                        member_rows.setdefault(member.name, {False: {}, True: {}})[tta][f] = pair_distances(
                            e, lfw, masked
                        )
            model.head.set_weights(fitted)
            if pair_classifiers:
                rows_f = training_rows(lfw, [f] if mode == "pretrained" else group)
                _, labels_f = np.unique(lfw.identities[rows_f], return_inverse=True)
                test = lfw.folds == f
                for kind in FEATURES:
                    clf = fit_pair_classifier(emb[rows_f], labels_f, kind, seed=cfg.seed + f)
                    logreg[kind].append(
                        pair_accuracy(clf, emb, lfw.pair_a[test], lfw.pair_b[test], lfw.same[test], kind)
                    )
    summary = {tta: _summarise(np.stack([dist_rows[tta][f] for f in range(10)]), lfw) for tta in (False, True)}
    acc, roc, combined = summary[flip_tta]
    other_acc, other_roc, _ = summary[not flip_tta]
    used = np.unique(np.concatenate([lfw.pair_a, lfw.pair_b]))
    fallback = lfw.chips.table["fallback"].to_numpy()
    return {
        "backbone": backbone,
        "mode": mode,
        "flip_tta": flip_tta,
        "fold_groups": groups,
        "protocol": "masked" if masked is not None else "plain",
        "mining": mining if mode == "head" else ("online" if mode == "finetune" else None),
        "accuracy_mean": acc["accuracy_mean"],
        "accuracy_std": acc["accuracy_std"],
        "fold_accuracies": acc["fold_accuracies"],
        "threshold_mean": acc["threshold_mean"],
        "auc": roc["auc"],
        "eer": roc["eer"],
        "tar_at_far_1e-3": roc["tar_at_far_1e-3"],
        "tar_at_far_1e-4": roc["tar_at_far_1e-4"],
        **{f"logreg_{kind}_accuracy_mean": float(np.mean(v)) for kind, v in logreg.items() if v},
        **{f"logreg_{kind}_accuracy_std": float(np.std(v)) for kind, v in logreg.items() if v},
        "no_face_fallbacks": int(fallback[used].sum()),
        "no_face_fallbacks_all_images": int(fallback.sum()),
        "pair_images": int(len(used)),
        "train": asdict(cfg) if mode != "pretrained" else None,
        "other_tta": {
            "flip_tta": not flip_tta,
            "accuracy_mean": other_acc["accuracy_mean"],
            "accuracy_std": other_acc["accuracy_std"],
            "auc": other_roc["auc"],
            "tar_at_far_1e-3": other_roc["tar_at_far_1e-3"],
        },
        "train_sets": train_sizes,
        "train_minutes": train_seconds / 60.0,
        "fusion_fits": fusion_fits,
        "members": {
            name: {
                ("flip_tta" if tta else "no_tta"): {k: v for k, v in _member_summary(rows[tta], lfw).items()}
                for tta in (True, False)
            }
            for name, rows in member_rows.items()
        },
        "flip_tta_on_one_member": {name: _member_summary(rows, lfw) for name, rows in tta_only_rows.items()},
        "history": histories,
        "_distances": combined,
        **(
            {
                "cascade": {
                    "member": cascade_member,
                    **cascade_bench.lfw_pairs_cascade(
                        np.stack([dist_rows[flip_tta][f] for f in range(10)]),
                        np.stack([cheap_rows[f] for f in range(10)]),
                        lfw.same,
                        lfw.folds,
                    ),
                }
            }
            if cheap_rows
            else {}
        ),
    }


def member_mirror_only(head, feats: np.ndarray, flip_feats: np.ndarray, member: int) -> np.ndarray:
    """Mirror features for flip TTA on member ``member`` alone: its columns from ``flip_feats``, every
    other member's from ``feats`` (their TTA mean is then their plain embedding)."""
    out = np.array(feats, copy=True)
    start = sum(head.in_dims[:member])
    stop = start + head.in_dims[member]
    out[:, start:stop] = flip_feats[:, start:stop]
    return out


def _member_summary(rows_by_fold: dict[int, np.ndarray], lfw: LfwSet) -> dict:
    """One member of a fused model alone (its weight 1), on the same chips and pairs."""
    acc, roc, _ = _summarise(np.stack([rows_by_fold[f] for f in range(10)]), lfw)
    return {
        "accuracy_mean": acc["accuracy_mean"],
        "accuracy_std": acc["accuracy_std"],
        "auc": roc["auc"],
        "tar_at_far_1e-3": roc["tar_at_far_1e-3"],
    }


def _summarise(rows: np.ndarray, lfw: LfwSet) -> tuple[dict, dict, np.ndarray]:
    """10-fold accuracy from per-fold distance rows; ROC over each pair's distance from the model
    that did not train on its fold."""
    acc = verification_accuracy_10fold(rows, lfw.same, lfw.folds)
    combined = rows[lfw.folds, np.arange(len(lfw.same))]
    return acc, roc_metrics(combined, lfw.same), combined


def measure_speed(
    lfw: LfwSet,
    backbone: str,
    n_chips: int = 256,
    n_images: int = 400,
    detector: str = "dlib_hog",
    upsample: int = 0,
    flip_tta: bool = False,
    workers: int | None = None,
    batch: int = 4,
    precision: str = "float32",
    backend: str = "torch",
) -> dict:
    """Aligned faces embedded per second (batch 64), and ``pipeline_images_per_s``: LFW images through
    load, detect, align and embed (with flip TTA when asked: each face and its mirror image) per second,
    run as a batch job runs them (:func:`pipeline_throughput`), after a warm-up; on ``backend``
    (embedding.backend) at ``precision``."""
    model = set_backend(set_precision(EmbeddingModel(make_backbone(backbone)).eval(), precision), backend)
    chips = np.asarray(lfw.chips.chips[:n_chips])
    chip_features(model.backbone, chips[:64])  # warm-up
    t = time.perf_counter()
    embed_from_features(
        model,
        chip_features(model.backbone, chips, batch_size=64),
        chip_features(model.backbone, chips, batch_size=64, flip=True) if flip_tta else None,
    )
    faces_per_s = len(chips) / (time.perf_counter() - t)
    finder = FaceFinder(
        detector_from_settings(load_settings().faces, detector, upsample=upsample),
        FaceAligner(geometry=model.backbone.chip_geometry),
    )
    files = [lfw.root / p for p in lfw.paths[:: max(1, len(lfw.paths) // n_images)][:n_images]]
    return {
        "faces_per_s": faces_per_s,
        "speed_flip_tta": flip_tta,
        "speed_inference": inference_summary(model),
        **pipeline_throughput(model, finder, files, flip_tta, workers=workers, batch=batch),
        "backends": [
            {
                "backend": b,
                "precision": p,
                **pipeline_throughput(set_backend(set_precision(model, p), b), finder, files, True, batch=batch),
                "inference": inference_summary(model),  # what ran: torch where OpenVINO could not be built
            }
            for b, p in BACKEND_ROWS
        ],
    }


def pipeline_throughput(
    model: EmbeddingModel, finder, files: list[Path], flip_tta: bool, *, workers: int | None = None, batch: int = 4
) -> dict:
    """Images per second through load, detect (the centre face), align and embed, end to end.

    Why this shape: on a few cores the fastest batch job runs one worker thread per core, each taking
    every ``workers``-th image and embedding its chips ``batch`` at a time, with torch and OpenCV on one
    thread each: the heavy part of every stage releases the GIL, and no library's own threads compete
    with another worker. 4 images (8 chips with flip TTA) per forward pass: 56-64 CPU ms per image
    against 76 with 16, whose SFace activations (64 x 112 x 112 per chip) no longer fit in cache.
    The first batch of each worker is a warm-up, not timed."""
    import cv2  # heavy: OpenCV's native module; only the paths that use it load it

    workers = workers or len(os.sched_getaffinity(0))
    shares = [files[i::workers] for i in range(workers)]
    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    def run(share: list[Path]) -> None:
        for start in range(0, len(share), batch):
            crops = [finder.centre_face(load_image(f)) for f in share[start : start + batch]]
            embed_chips(model, np.stack([c.chip for c in crops]), flip_tta, batch_size=2 * batch)

    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, [s[:batch] for s in shares]))  # warm-up: allocations, oneDNN kernels
            timed = [s[batch:] for s in shares]
            t, cpu = time.perf_counter(), time.process_time()
            list(pool.map(run, timed))
            seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])
    n = sum(len(s) for s in timed)
    # on a shared machine the wall figure depends on everyone else's load; the CPU time per image does not
    # (much): 1000 * workers / pipeline_cpu_ms_per_image is the rate on that many free cores
    return {
        "pipeline_images_per_s": n / seconds,
        "pipeline_images_timed": n,
        "pipeline_cpu_ms_per_image": 1000 * cpu / n,
        "speed_workers": workers,
        "speed_batch": batch,
        "speed_threads_per_worker": 1,
        "speed_loadavg_1min": os.getloadavg()[0],
    }


# ------------------------------------------------------------------------------------- the driver


def thinned_progress(log: Callable[[str], None]) -> Callable[[str, int, int], None]:
    """A progress callback that logs ``stage: i/n`` now and then, and at the end of each stage."""

    def progress(stage: str, i: int, n: int) -> None:
        if i == n or i % PROGRESS_EVERY.get(stage, 1000) < 64:
            log(f"{stage}: {i}/{n}")

    return progress


@dataclass(frozen=True)
class LfwBenchmark:
    """One LFW benchmark setting: params, with the command's overrides where given."""

    backbone: str
    mode: str
    flip_tta: bool
    mining: str
    groups: int | None
    speed: bool
    detector: str
    upsample: int
    cfg: TrainConfig
    augment: AugmentSettings
    masks: MaskSettings
    masked: bool = False  # the masked protocol: the second image of every pair masked (seeded)
    precision: str = "float32"  # embedding.precision: the number format the backbones infer in
    backend: str = "torch"  # embedding.backend: the runtime the speed figures run on (accuracy: torch's features)
    fusion_weights: str = "fit"  # embedding.fusion_weights: fitted per fold group, or equal (as served)
    cascade_member: str | None = None  # recognition.cascade on: the cheap pass's member, scored as served

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        backbone: str | None = None,
        mode: str | None = None,
        flip_tta: bool | None = None,
        miner: str | None = None,
        epochs: int | None = None,
        groups: int | None = None,
        lr: float | None = None,
        mining: str = "online",
        speed: bool = True,
        masked: bool = False,
    ) -> LfwBenchmark:
        return cls(
            backbone=backbone or settings.embedding.backbone,
            mode=mode or settings.embedding.mode,
            flip_tta=settings.embedding.flip_tta if flip_tta is None else flip_tta,
            mining=mining,
            groups=groups,
            speed=speed,
            detector=settings.faces.detector,
            upsample=settings.faces.upsample,
            cfg=TrainConfig.from_settings(settings, miner=miner, epochs=epochs, lr=lr),
            augment=settings.augment,
            masks=settings.masks,
            masked=masked,
            precision=settings.embedding.precision,
            backend=settings.embedding.backend,
            fusion_weights=settings.embedding.fusion_weights,
            cascade_member=settings.recognition.cascade_member if settings.recognition.cascade == "on" else None,
        )

    @property
    def run_name(self) -> str:
        return (
            f"{self.backbone}-{self.mode}-{self.mining}-{'tta' if self.flip_tta else 'plain'}"
            f"{'-masked' if self.masked else ''}"
        )

    @property
    def params(self) -> dict:
        return {
            "backbone": self.backbone,
            "mode": self.mode,
            "flip_tta": self.flip_tta,
            "detector": self.detector,
            "precision": self.precision,
            "backend": self.backend,
            "fusion_weights": self.fusion_weights,
            "inference_dtype": str(inference_dtype(self.precision)).split(".")[-1],
            "upsample": self.upsample,
            **{f"train.{k}": v for k, v in asdict(self.cfg).items()},
            "mining": self.mining,
            "protocol": "masked" if self.masked else "plain",
            **({f"masks.{k}": v for k, v in self.masks.model_dump().items()} if self.masked else {}),
        }

    def augmentation(self):
        """The fine-tuning augmentation (mirroring, random cropping, colour shifting) on 150 px chips."""
        return face_augmentation(
            self.augment, CHIP_GEOMETRIES[chip_geometry(self.backbone)], seed=self.cfg.seed, masks=self.masks
        )

    def augmented_copies(self, lfw: LfwSet, cache_dir: Path, progress: Progress = None) -> list[np.ndarray]:
        """Frozen features of ``augment.copies`` augmented copies (synthetic masks among them) of every
        LFW chip, cached: ``head`` training reads them as the retraining chain reads its own copies."""
        size = CHIP_GEOMETRIES[chip_geometry(self.backbone)]

        def pipeline(seed: int):
            return face_augmentation(self.augment, size, seed=seed, masks=self.masks)

        return cached_augmented_features(
            lfw.chips.chips,
            lfw.chip_key,
            self.backbone,
            cache_dir,
            pipeline,
            describe(pipeline(self.cfg.seed)),
            self.augment.copies,
            self.cfg.seed,
            progress=progress,
            precision=self.precision,
        )

    def load(self, lfw_root: Path, cache_dir: Path, progress: Progress = None) -> LfwSet:
        return load_lfw(
            lfw_root,
            cache_dir,
            detector=self.detector,
            upsample=self.upsample,
            progress=progress,
            geometry=chip_geometry(self.backbone),
        )

    def run(
        self,
        lfw: LfwSet,
        cache_dir: Path,
        *,
        progress: Progress = None,
        on_epoch: Callable[[int, int, dict], None] | None = None,
        artifact_dir: Path | None = None,
    ) -> tuple[dict, np.ndarray]:
        """The result (accuracy, ROC figures, history; speed when asked) and each pair's distance."""
        masked = masked_probes(lfw, cache_dir, self.masks, self.cfg.seed) if self.masked else None
        aug_feats = self.augmented_copies(lfw, cache_dir, progress) if self.mode == "head" else []
        result = run_lfw_benchmark(
            lfw,
            cache_dir,
            backbone=self.backbone,
            mode=self.mode,
            flip_tta=self.flip_tta,
            cfg=self.cfg,
            n_groups=self.groups,
            progress=progress,
            on_epoch=on_epoch,
            augment=as_function(self.augmentation()),
            mining=self.mining,
            artifact_dir=artifact_dir,
            masked=masked,
            pair_classifiers=not self.masked,
            aug_feats=aug_feats,
            aug_prob=self.augment.copy_p,
            precision=self.precision,
            fit_fusion=self.fusion_weights == "fit",
            cascade_member=self.cascade_member,
        )
        dist = result.pop("_distances")
        if self.speed:
            result.update(
                measure_speed(
                    lfw,
                    self.backbone,
                    detector=self.detector,
                    upsample=self.upsample,
                    flip_tta=self.flip_tta,
                    precision=self.precision,
                    backend=self.backend,
                )
            )
        return result, dist
