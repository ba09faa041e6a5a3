"""Enrolment's duplicate-face check at gallery scale (issue 28): new people falsely refused, returning
people caught, with the identification-style threshold (``gallery.duplicate_target`` of new people at the
gallery's size) beside today's 1:1 threshold (FAR ``gallery.target_far`` per comparison).

People: LFW's held-out identities (the ingest's identity split, ``assign_identity_splits``: the people
a model trained by the chain never saw), one photo each enrolled, in a seeded order with the people who
have a second photo first, so that every gallery size holds returning people. Galleries of 100, 1,000
and 3,000 are the first N of that order. At each size:

- strangers: every other held-out person (first photo), asked "are you already someone here?" as a new
  employee: a refusal is a false refusal, listed by name. LFW names a few people twice (Noer_Muis and
  Noer_Moeis; one photograph filed under two names): such a "stranger" is in fact a returning person.
  The pairs found so far, each checked by eye, are in ``benchmarks/data/lfw_same_person.csv``; a
  "stranger" one of them names as the same person as someone enrolled leaves the strangers and is
  reported apart (``lfw_named_twice``); any pair not in the file still counts as a false refusal.
- the same people again: an enrolled person's second photo enrolled under a new id: caught when
  refused as that very person.

Thresholds are computed exactly as the service computes them (``gallery_impostor_scores``: the model's
stored impostor sketch, blended with the gallery's own pairs and shifted by their bulk;
``find_duplicates`` and ``verify_threshold``), but the stored sketch is fitted here on people disjoint
from the ones measured, as a model's calibration is for a deployment's employees: LFW's training split
(up to ``CALIBRATION_PHOTOS`` photos each) when the model in service is the pretrained one (it never
trained on LFW at all), else one seeded half of the held-out people (the other half is measured).

Faces are embedded as the service embeds them (params' detector and the model's chip geometry, flip
TTA), through the chip and feature caches under the state folder's ``cache/``: a rerun skips the embedding
(minutes on 2 cores) and spends its time enrolling the 3,000 people one by one into the real gallery.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegate.components.calibration.face_sets import FaceSet, attach_chips, embed_face_set
from facegate.components.calibration.store import ModelCalibration, default_face_sets, set_scores
from facegate.components.core.datasets import unit_hash
from facegate.components.core.errors import DatasetError
from facegate.components.core.paths import state_dir
from facegate.components.core.settings import Settings
from facegate.components.gallery import Gallery
from facegate.components.gallery.duplicates import DuplicateRule, find_duplicates
from facegate.components.lifecycle.calibration_artifacts import registered_version
from facegate.components.lifecycle.model_loading import service_recognizer
from facegate.components.recognition.recognizer import FaceRecognizer
from facegate.components.service.calibrations import gallery_impostor_scores, verify_threshold

Log = Callable[[str], None]
SIZES = (100, 1000, 3000)
CALIBRATION_PHOTOS = 5  # photos per calibration person at most (one person's 530 photos would dominate)
NEW_ID = "new-employee"  # the id every probe asks to be enrolled under (nobody in the gallery has it)
LISTED = 20  # refused strangers listed by name per size
SAME_PERSON = Path(__file__).resolve().parent / "data" / "lfw_same_person.csv"


def same_person_names(path: Path = SAME_PERSON) -> dict[str, str]:
    """LFW name -> one name for the person (the file's pairs joined transitively); names not in it are absent."""
    canonical: dict[str, str] = {}
    for line in path.read_text().splitlines()[1:]:
        if not line.strip():
            continue
        a, b = (canonical.get(n, n) for n in line.split(",")[:2])
        for name, root in list(canonical.items()):
            if root == b:
                canonical[name] = a
        canonical[a], canonical[b] = a, a
    return canonical


@dataclass
class People:
    """The measured people in enrolment order: rows (into the embedded set) of each one's enrolment photo
    and of their second photo (-1: none)."""

    names: np.ndarray
    enrol: np.ndarray
    again: np.ndarray


def enrolment_order(names: np.ndarray, has_second: np.ndarray, seed: int) -> np.ndarray:
    """People with a second photo first, each group in a seeded order (stable across runs and machines)."""
    key = np.array([unit_hash(str(n), seed) for n in names])
    return np.lexsort((key, ~has_second))


def choose_images(fs: FaceSet, seed: int, pretrained: bool, calibration_photos: int) -> tuple[FaceSet, dict]:
    """The images to embed: each measured person's first two photos (sorted by path), each calibration
    person's first ``calibration_photos``; ``roles`` says which person group each image belongs to."""
    if fs.split is None:
        raise DatasetError(f"{fs.name}: the duplicate benchmark needs LFW's identity split (an lfw set)")
    heldout = fs.split != "train"
    if pretrained:  # never trained on LFW: its training split is as unseen as the held-out one
        measured, calibration = heldout, ~heldout
        why = (
            "the model in service is pretrained and never trained on LFW; its training split (disjoint "
            "people) calibrates, the held-out split is measured"
        )
    else:  # a chain-trained model saw the training split: calibrate on one half of the held-out people
        half = np.array([unit_hash(str(n), seed + 1) < 0.5 for n in fs.identities])
        measured, calibration = heldout & ~half, heldout & half
        why = (
            "a registered model trained on LFW's training split: half the held-out people calibrate, "
            "the other half is measured"
        )
    order = np.argsort(np.array([str(p) for p in fs.paths]), kind="stable")
    rank = np.empty(len(fs), int)
    seen: dict[str, int] = {}
    for i in order:
        rank[i] = seen.get(fs.identities[i], 0)
        seen[fs.identities[i]] = rank[i] + 1
    keep = (measured & (rank < 2)) | (calibration & (rank < calibration_photos))
    rows = np.flatnonzero(keep)
    chosen = fs.subset(rows)
    chosen.meta = {"role": np.where(measured[rows], "measured", "calibration"), "rank": rank[rows], "why": why}
    return chosen, {
        "measured_people": int(len(np.unique(fs.identities[measured]))),
        "calibration_people": int(len(np.unique(fs.identities[calibration]))),
    }


def embed(recognizer: FaceRecognizer, settings: Settings, fs: FaceSet, cache_dir: Path, log: Log) -> np.ndarray:
    """Unit embeddings of ``fs`` as the service computes them (chips and features cached; the embeddings
    too, under the model's version, for a model whose features cannot come from the feature cache)."""
    model = recognizer.model
    attach_chips(
        fs,
        cache_dir,
        detector=settings.faces.detector,
        upsample=settings.faces.upsample,
        geometry=model.backbone.chip_geometry,
        progress=lambda i, n: log(f"chips {i}/{n}"),
    )
    every = max(len(fs) // 8, 1)  # the feature pass reports every batch: a few lines are enough

    def features_progress(stage: str, i: int, n: int) -> None:
        if i % every < 64 or i == n:
            log(f"{stage} {i}/{n}")

    tag = "".join(c if c.isalnum() else "_" for c in recognizer.embedder_version)
    path = cache_dir / f"duplicates-emb-{fs.chip_key}-{tag}-tta{int(settings.embedding.flip_tta)}.npy"
    if path.is_file():
        return np.load(path)
    emb = embed_face_set(model, fs, settings.embedding.flip_tta, cache_dir, progress=features_progress)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, emb)
    tmp.replace(path)
    return emb


def measured_people(fs: FaceSet, seed: int) -> People:
    """Measured people whose first photo shows a detected face, in enrolment order."""
    role, rank = fs.meta["role"], fs.meta["rank"]
    detected = ~fs.fallback
    first = np.flatnonzero((role == "measured") & (rank == 0) & detected)
    second = {fs.identities[i]: i for i in np.flatnonzero((role == "measured") & (rank == 1) & detected)}
    names = fs.identities[first]
    again = np.array([second.get(n, -1) for n in names])
    order = enrolment_order(names, again >= 0, seed)
    return People(names[order], first[order], again[order])


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """95% interval of a rate k / n (Wilson score)."""
    if n == 0:
        return [0.0, 1.0]
    p, d = k / n, 1 + z * z / n
    c, h = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [round(max(0.0, c - h), 6), round(min(1.0, c + h), 6)]


def decide(
    g: Gallery,
    rule: DuplicateRule,
    target: float,
    strangers: np.ndarray,
    stranger_names: np.ndarray,
    again: np.ndarray,
    again_names: np.ndarray,
) -> dict:
    """False refusals of strangers and catches of returning people under one rule; the refused strangers
    by name (the first ``LISTED``), so a reader can see whether a "stranger" is someone LFW names twice."""
    refused = find_duplicates(g, strangers, NEW_ID, rule)
    flagged = {s.photo: s.other_id for s in find_duplicates(g, again, NEW_ID, rule)}
    caught = sum(flagged.get(i) == n for i, n in enumerate(again_names))
    rate = len(refused) / max(len(strangers), 1)
    return {
        "tau": round(float(rule.tau(g.n_employees)), 6),
        "false_refusals": len(refused),
        "false_refusal_rate": round(rate, 6),
        "false_refusal_over_target": round(rate / target, 3),
        "false_refusal_95ci": wilson(len(refused), len(strangers)),
        "true_duplicates_caught": round(caught / max(len(again), 1), 6),
        "true_duplicates_refused_as_someone_else": int(len(flagged) - caught),
        "refused_strangers": [{"stranger": str(stranger_names[s.photo]), **s.to_dict()} for s in refused[:LISTED]],
    }


def measure_size(
    g: Gallery, cal: ModelCalibration, settings: Settings, target: float, emb: np.ndarray, people: People, n: int
) -> dict:
    """One gallery size: the first ``n`` people enrolled in ``g``, everyone after them the strangers."""
    scores = gallery_impostor_scores(g, cal, settings)
    same = same_person_names()
    enrolled = {same.get(str(name), str(name)) for name in people.names[:n]}
    named_twice = np.array([same.get(str(name), str(name)) in enrolled for name in people.names[n:]], dtype=bool)
    strangers = n + np.flatnonzero(~named_twice)
    probes = (emb[people.enrol[strangers]], people.names[strangers])
    returning = np.flatnonzero(people.again[:n] >= 0)
    probes += (emb[people.again[returning]], people.names[returning])
    new = decide(g, DuplicateRule(scores, target, g.manifest.tau), target, *probes)
    one_tau = verify_threshold(g, scores, settings.gallery.target_far)
    old = decide(g, DuplicateRule(None, target, one_tau), target, *probes)
    return {
        "size": n,
        "strangers": int(len(probes[0])),
        "true_duplicates": int(len(returning)),
        "lfw_named_twice": [str(name) for name in people.names[n:][named_twice]],
        **new,
        "local_blend_weight": round(scores.local_weight, 4),
        "one_to_one": {k: v for k, v in old.items() if k != "refused_strangers"},
    }


def run_duplicates_benchmark(
    settings: Settings,
    sizes: tuple[int, ...] = SIZES,
    target: float | None = None,
    calibration_photos: int = CALIBRATION_PHOTOS,
    log: Log = lambda message: None,
    face_set: FaceSet | None = None,
    cache_dir: Path | None = None,
) -> dict:
    """The benchmark for the model in service on the calibration dataset of params (LFW; ``face_set``: a
    slice of it, for a quick check)."""
    t0, load0 = time.perf_counter(), os.getloadavg()
    target = settings.gallery.duplicate_target if target is None else target
    recognizer = service_recognizer(settings)
    pretrained = registered_version(recognizer.embedder_version) is None
    fs = face_set if face_set is not None else default_face_sets(settings)[0]
    chosen, counts = choose_images(fs, settings.seed, pretrained, calibration_photos)
    log(f"{len(chosen)} images to embed ({counts})")
    emb = embed(recognizer, settings, chosen, cache_dir or state_dir() / "cache", log)
    calib = np.flatnonzero((chosen.meta["role"] == "calibration") & ~chosen.fallback)
    cal = ModelCalibration(
        recognizer.embedder_name,
        recognizer.embedder_version,
        (set_scores("lfw", emb[calib], chosen.identities[calib]),),
        settings.faces.detector,
        recognizer.model.backbone.chip_geometry,
        settings.embedding.flip_tta,
        "raw",
        {"created_by": "bench duplicates"},
    )
    people = measured_people(chosen, settings.seed)
    fitted = cal.calibration(settings.gallery.target_far)
    g = Gallery.new(
        emb.shape[1],
        recognizer.embedder_name,
        recognizer.embedder_version,
        "flat",
        tau=fitted.tau,
        target_far=fitted.target_far,
        achieved_far=fitted.achieved_far,
        achieved_tar=fitted.achieved_tar,
    )
    results, skipped = [], [n for n in sizes if n >= len(people.names)]
    for i in range(max((n for n in sizes if n < len(people.names)), default=0)):
        g.add(str(people.names[i]), str(people.names[i]), emb[people.enrol[i]][None], [""])
        if i + 1 in sizes:
            results.append(measure_size(g, cal, settings, target, emb, people, i + 1))
            log(f"size {i + 1}: {results[-1]}")
    return {
        "benchmark": "duplicates",
        "model": f"{recognizer.embedder_name}@{recognizer.embedder_version}",
        "model_source": "pretrained (never trained on LFW)" if pretrained else "registered champion",
        "target": target,
        "one_to_one_target_far": settings.gallery.target_far,
        "goal": "false_refusal_over_target <= 2 at every size",
        "goal_met": all(r["false_refusal_over_target"] <= 2 for r in results),
        "people": {
            "measured": int(len(people.names)),
            "with_second_photo": int((people.again >= 0).sum()),
            **counts,
            "why_identity_disjoint": chosen.meta["why"],
            "images_embedded": len(chosen),
            "images_without_a_face": int(chosen.fallback.sum()),
        },
        "calibration": {
            "images": int(len(calib)),
            "people": cal.sets[0].identities,
            "impostor_pairs": cal.sets[0].impostor.n,
            "tau_one_to_one": round(fitted.tau, 6),
            "tar_at_tau_one_to_one": round(fitted.achieved_tar, 4),
        },
        "sizes": results,
        "sizes_skipped": skipped,
        "loadavg_start": [round(x, 2) for x in load0],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.perf_counter() - t0, 1),
    }
