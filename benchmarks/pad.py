"""`facegate bench pad`: presentation-attack detection measured the ISO/IEC 30107-3 way.

On ``pad.dataset`` (nuaa-dev: printed-photo attacks only), with folds BY SUBJECT (a subject's frames
are near-duplicates): every threshold is chosen without the fold's test subjects, then applied to them.

- zero-shot rows (the shipped pair, each member alone): thresholds from the other folds' scores;
- the fine-tuned pair: per test fold, fine-tuned on the subjects of all folds but two, its threshold
  calibrated on the next fold (as ``train-pad`` calibrates on held-out subjects), tested on the fold.

Figures, pooled over folds: APCER and BPCER at ``pad.target_apcer``'s threshold (the served rule,
:func:`~facegate.components.pad.calibration.subject_robust_threshold`, on the threshold subjects' attacks;
the pooled-quantile and worst-subject rules beside it, for comparison only); BPCER20 and BPCER100 at
the thresholds where the threshold subjects' APCER is 5% and 1% (with the test APCER those reach); the
ISO figures on the pooled test scores (threshold on the test scores themselves) and the AUC; IAPMR under
``enforce``: attacks that pass PAD AND are identified as the employee shown, each subject enrolled from
one live frame through the real service; the time per face of the served path (``pad.runtime``), its
crops and its network apart. Faces come
from the product's detector (``faces.detector``). The JSON's top level is the model in service's row.

``--live DIR --attack KIND=DIR``: the model in service on a site's own folders — no training, no folds:
its threshold as served, APCER per attack kind, BPCER, and the ISO figures on the site's scores.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from facegate.components.core.errors import FaceError
from facegate.components.core.images import load_image
from facegate.components.core.paths import datasets_root
from facegate.components.core.settings import Settings
from facegate.components.gallery.enrolment import EnrolmentStore, Photo
from facegate.components.lifecycle.pad_models import FINETUNED, pad_model_in_service
from facegate.components.pad.calibration import (
    error_rates,
    iso_figures,
    subject_robust_threshold,
    threshold_for_apcer,
    worst_subject_threshold,
)
from facegate.components.pad.data import (
    PadFaces,
    folder_samples,
    nuaa_samples,
    product_faces,
    subject_folds,
    subjects_of,
)
from facegate.components.pad.finetune import PadFinetuneConfig, augmented_copies, finetune_pad
from facegate.components.pad.minifasnet import LIVE_CLASS, V1SE_SPEC, V2_SPEC, PadNet, load_pad_net
from facegate.components.pad.models import MiniFasNetPad
from facegate.components.pad.plots import plot_det
from facegate.components.pad.runtime import pad_runner
from facegate.components.service.facade import FaceGate

Log = Callable[[str], None]
SHIPPED = {"minifasnet_pair": (V2_SPEC, V1SE_SPEC), "minifasnet_v2": (V2_SPEC,), "minifasnet_v1se": (V1SE_SPEC,)}
ROWS = (*SHIPPED, FINETUNED)
ATTACKS_NOTE = "printed photographs only, one webcam (NUAA); screens, masks and 3-D attacks are not measured"


@dataclass
class Fold:
    """One test fold of one model: the scores its thresholds come from, and its test scores."""

    test_rows: np.ndarray
    test_scores: np.ndarray
    thr_live: np.ndarray
    thr_attack: np.ndarray
    thr_subjects: np.ndarray  # the subject of each of thr_attack's scores


def fold_plan(subjects: Sequence[str], k: int, seed: int) -> list[tuple[list[str], list[str], list[str]]]:
    """(test, calibration, training) subjects per fold: calibration is the next fold, training the rest."""
    folds = subject_folds(subjects, k, seed)
    plan = []
    for i, test in enumerate(folds):
        calib = folds[(i + 1) % len(folds)]
        train = sorted(s for j, f in enumerate(folds) if j not in (i, (i + 1) % len(folds)) for s in f)
        plan.append((test, calib, train))
    return plan


def net_scores(
    net: PadNet, faces: PadFaces, rows: np.ndarray, batch: int = 64, runtime: str = "openvino"
) -> np.ndarray:
    """Live probabilities of ``rows`` through the served path (``runtime``: ``pad.runtime``), in batches."""
    runner = pad_runner(net, runtime)
    out = [
        runner(faces.member_crops(net.specs, rows[i : i + batch]))[:, LIVE_CLASS] for i in range(0, len(rows), batch)
    ]
    return np.concatenate(out) if out else np.zeros(0)


def zero_shot_folds(scores: np.ndarray, faces: PadFaces, plan) -> list[Fold]:
    live, subjects = faces.live, faces.subjects
    folds = []
    for test, _, _ in plan:
        t_rows = faces.rows(test)
        other = np.setdiff1d(np.arange(len(live)), t_rows)
        attack = other[~live[other]]
        folds.append(Fold(t_rows, scores[t_rows], scores[other][live[other]], scores[attack], subjects[attack]))
    return folds


def finetuned_folds(
    base: PadNet, faces: PadFaces, plan, cfg: PadFinetuneConfig, max_pixels: int, log: Log, runtime: str
) -> tuple[list[Fold], PadNet]:
    """Per fold: fine-tune on its training subjects, calibrate on its calibration fold, score its test fold.
    The frozen trunk's features of every frame's augmented copies are computed once for all folds."""
    live, folds, net = faces.live, [], base
    copies = augmented_copies(base, faces.samples, faces.boxes, cfg, max_pixels, log)
    for i, (test, calib, train) in enumerate(plan):
        c_rows, t_rows = faces.rows(calib), faces.rows(test)
        log(f"fold {i + 1}/{len(plan)}: fine-tune on {train}, calibrate on {calib}, test on {test}")
        net, _ = finetune_pad(base, copies, faces.rows(train), live, cfg, log=log)
        c_scores, c_attack = net_scores(net, faces, c_rows, runtime=runtime), ~live[c_rows]
        t_scores = net_scores(net, faces, t_rows, runtime=runtime)
        folds.append(Fold(t_rows, t_scores, c_scores[~c_attack], c_scores[c_attack], faces.subjects[c_rows][c_attack]))
    return folds, net


#: The operating threshold's rule (served) and the rules it is compared with, each on the threshold subjects.
RULES: dict[str, Callable[[np.ndarray, np.ndarray, float], float]] = {
    "subject_robust": subject_robust_threshold,
    "worst_subject": worst_subject_threshold,
    "pooled_quantile": lambda scores, subjects, target: threshold_for_apcer(scores, target),
}


def pooled_figures(folds: Sequence[Fold], live: np.ndarray, target_apcer: float, matches: np.ndarray | None) -> dict:
    """APCER/BPCER at the operating threshold (the served rule), BPCER20/100 at the threshold subjects'
    5%/1%, IAPMR, ISO; ``rules``: APCER, BPCER and IAPMR at each rule's threshold for ``target_apcer``."""
    sums: dict[str, float] = {}
    per_fold = []

    def add(key: str, value: float) -> None:
        sums[key] = sums.get(key, 0.0) + value

    for f in folds:
        is_live = live[f.test_rows]
        lv, at = f.test_scores[is_live], f.test_scores[~is_live]
        m = matches[f.test_rows][~is_live] if matches is not None else np.zeros(len(at), bool)
        row: dict = {"n_live": int(len(lv)), "n_attack": int(len(at))}
        thresholds = {
            "": RULES["subject_robust"](f.thr_attack, f.thr_subjects, target_apcer),
            "20": threshold_for_apcer(f.thr_attack, 0.05),
            "100": threshold_for_apcer(f.thr_attack, 0.01),
        }
        for key, t in thresholds.items():
            rates = error_rates(lv, at, t)
            row.update({f"threshold{key}": t, f"apcer{key}": rates["apcer"], f"bpcer{key}": rates["bpcer"]})
            add(f"apcer{key}", rates["apcer"] * len(at))
            add(f"bpcer{key}", rates["bpcer"] * len(lv))
        for rule, fn in RULES.items():
            t = fn(f.thr_attack, f.thr_subjects, target_apcer)
            add(f"{rule}.apcer", float(np.sum(at > t)))
            add(f"{rule}.bpcer", float(np.sum(lv <= t)))
            add(f"{rule}.iapmr", float(np.sum(m & (at > t))))
            row[f"threshold_{rule}"] = t
        per_fold.append(row)
    n_live = sum(r["n_live"] for r in per_fold)
    n_attack = sum(r["n_attack"] for r in per_fold)
    all_rows = np.concatenate([f.test_rows for f in folds])
    all_scores = np.concatenate([f.test_scores for f in folds])
    iapmr = lambda rule: sums[f"{rule}.iapmr"] / n_attack if matches is not None else None
    return {
        "apcer": sums["apcer"] / n_attack,
        "bpcer": sums["bpcer"] / n_live,
        "bpcer20": sums["bpcer20"] / n_live,
        "apcer_at_bpcer20_threshold": sums["apcer20"] / n_attack,
        "bpcer100": sums["bpcer100"] / n_live,
        "apcer_at_bpcer100_threshold": sums["apcer100"] / n_attack,
        "iapmr_enforce": iapmr("subject_robust"),
        "rules": {
            rule: {
                "apcer": sums[f"{rule}.apcer"] / n_attack,
                "bpcer": sums[f"{rule}.bpcer"] / n_live,
                "iapmr_enforce": iapmr(rule),
            }
            for rule in RULES
        },
        "iso_pooled": iso_figures(all_scores[live[all_rows]], all_scores[~live[all_rows]]),
        "per_fold": per_fold,
    }


def enrolled_gate(settings: Settings, faces: PadFaces, store: Path, mode: str = "off") -> FaceGate:
    """A service on a temporary store, each subject enrolled (forced) from its first live frame with one face."""
    gate = FaceGate(settings.replace({"pad": {"mode": mode}}), store=EnrolmentStore(store), access_log=False)
    for subject in subjects_of([s for s in faces.samples if s.live]):
        for first in (s for s in faces.samples if s.live and s.subject == subject):
            try:
                gate.enrol(subject, subject, [Photo(first.path.name, first.path.read_bytes())], force=True)
                break
            except FaceError:
                continue
    return gate


def attack_matches(settings: Settings, faces: PadFaces, log: Log) -> np.ndarray:
    """Per sample: an attack identified as the subject it shows, through the real service with PAD off,
    each subject enrolled from its first live frame (False for live samples)."""
    matches = np.zeros(len(faces.samples), bool)
    with tempfile.TemporaryDirectory(prefix="pad-iapmr-") as tmp:
        gate = enrolled_gate(settings, faces, Path(tmp))
        attacks = [i for i, s in enumerate(faces.samples) if not s.live]
        log(f"IAPMR: {len(attacks)} attacks against {gate.snapshot().n_employees} subjects enrolled from a live frame")
        for i in attacks:
            found = gate.identify(load_image(faces.samples[i].path, settings.images.max_pixels)).faces
            matches[i] = any(f.employee_id == faces.samples[i].subject for f in found)
    return matches


def identify_cost(settings: Settings, faces: PadFaces, log: Log, n: int = 100) -> dict:
    """What PAD adds to ``identify``: the service's whole answer (detect, align, embed, search, and PAD for
    ``enforce``) on the same frames, PAD off and on interleaved frame by frame (the order rotates: load
    drifts cancel), one thread as a served request; p50 of each and the p50 of the per-frame difference.
    ``on_<runtime>``: PAD on through each other runtime (OpenCV's DNN beside OpenVINO), same frames."""
    threads = torch.get_num_threads(), cv2.getNumThreads()
    rows = np.linspace(0, len(faces.samples) - 1, min(n, len(faces.samples))).astype(int)
    frames = [load_image(faces.samples[r].path, settings.images.max_pixels) for r in rows]
    others = [r for r in ("openvino", "opencv") if r != settings.pad.runtime]
    with tempfile.TemporaryDirectory(prefix="pad-cost-") as tmp:
        off = enrolled_gate(settings, faces, Path(tmp))
        gates = {"off": off}
        for name, runtime in [("on", settings.pad.runtime)] + [(f"on_{r}", r) for r in others]:
            pad = {"mode": "enforce", "runtime": runtime}
            gates[name] = FaceGate(
                settings.replace({"pad": pad}), store=off.store, recognizer=off.recognizer, access_log=False
            )
        torch.set_num_threads(1)
        cv2.setNumThreads(1)
        try:
            for px in frames[:3]:  # first calls: model copies, the detector for this size, the PAD graph
                for gate in gates.values():
                    gate.identify(px)
            load, n_faces = os.getloadavg()[0], 0
            ms: dict[str, list[float]] = {k: [] for name in gates for k in (name, f"cpu_{name}")}
            order = list(gates)
            for i, px in enumerate(frames):
                for name in order[i % len(order) :] + order[: i % len(order)]:
                    t, c = time.perf_counter(), time.process_time()
                    answer = gates[name].identify(px)
                    ms[name].append((time.perf_counter() - t) * 1e3)
                    ms[f"cpu_{name}"].append((time.process_time() - c) * 1e3)
                n_faces += len(answer.faces)
        finally:
            torch.set_num_threads(threads[0])
            cv2.setNumThreads(threads[1])
    p50 = {k: float(np.median(v)) for k, v in ms.items()}
    added = {}
    for name in gates:
        for k, base in ((name, "off"), (f"cpu_{name}", "cpu_off")):  # p50 of the per-frame differences
            added[k] = float(np.median(np.array(ms[k]) - np.array(ms[base])))
    log(
        f"identify p50: PAD off {p50['off']:.1f} ms, on {p50['on']:.1f} ms (CPU {p50['cpu_off']:.1f} / "
        f"{p50['cpu_on']:.1f} ms); PAD added {added['on']:.1f} ms ({added['cpu_on']:.1f} CPU ms)"
    )
    out = {
        "frames": len(frames),
        "faces_per_frame": n_faces / len(frames),
        "pad_model": settings.pad.model,
        "pad_runtime": settings.pad.runtime,
        "identify_ms_p50_pad_off": p50["off"],
        "identify_ms_p50_pad_on": p50["on"],
        "pad_added_ms_p50": added["on"],
        "identify_cpu_ms_p50_pad_off": p50["cpu_off"],
        "identify_cpu_ms_p50_pad_on": p50["cpu_on"],
        "pad_added_cpu_ms_p50": added["cpu_on"],
        "threads": 1,
        "loadavg_1min": [round(load, 2), round(os.getloadavg()[0], 2)],
    }
    for r in others:
        out[f"pad_{r}"] = {
            "identify_ms_p50_pad_on": p50[f"on_{r}"],
            "pad_added_ms_p50": added[f"on_{r}"],
            "identify_cpu_ms_p50_pad_on": p50[f"cpu_on_{r}"],
            "pad_added_cpu_ms_p50": added[f"cpu_on_{r}"],
        }
    return out


def time_per_face(model: MiniFasNetPad, faces: PadFaces, max_pixels: int, n: int = 100) -> dict:
    """p50 and mean ms of ``model.score`` per face (crop + network), one thread as a served request; the
    CPU ms of its two parts apart (crops: the members' context crops, resized, BGR, float; network: the
    runtime's call)."""
    threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        rows = np.linspace(0, len(faces.samples) - 1, min(n, len(faces.samples))).astype(int)
        frames = [(load_image(faces.samples[r].path, max_pixels), faces.boxes[r]) for r in rows]
        for frame, box in frames[:5]:
            model.score(frame, box)
        load = os.getloadavg()[0]
        ms, cpu, crop_cpu, net_cpu = [], [], [], []
        for frame, box in frames:
            t, c = time.perf_counter(), time.process_time()
            model.score(frame, box)
            ms.append((time.perf_counter() - t) * 1e3)
            cpu.append((time.process_time() - c) * 1e3)  # what a face costs, whatever else runs on the machine
        for frame, box in frames:
            c = time.process_time()
            crops = model.crops(frame, [box])
            c1 = time.process_time()
            model.runner(crops)
            crop_cpu.append((c1 - c) * 1e3)
            net_cpu.append((time.process_time() - c1) * 1e3)
    finally:
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])
    return {
        "ms_per_face": float(np.median(ms)),
        "ms_per_face_mean": float(np.mean(ms)),
        "cpu_ms_per_face": float(np.median(cpu)),
        "crop_cpu_ms_per_face": float(np.median(crop_cpu)),
        "net_cpu_ms_per_face": float(np.median(net_cpu)),
        "runtime": type(model.runner).__name__,
        "faces_timed": len(ms),
        "loadavg_1min": [round(load, 2), round(os.getloadavg()[0], 2)],
    }


def run_pad_benchmark(
    settings: Settings,
    *,
    root: Path | None = None,
    folds: int | None = None,
    rows: Sequence[str] = ROWS,
    iapmr: bool = True,
    cost: bool = True,
    det_png: Path | None = None,
    log: Log = lambda message: None,
) -> dict:
    """Every row of ``rows`` on ``pad.dataset`` by subject folds; the top level is the model in service's."""
    pad = settings.pad
    root = root or datasets_root() / pad.dataset
    faces = product_faces(settings, nuaa_samples(root), log)
    subjects = subjects_of(faces.samples)
    plan = fold_plan(subjects, folds or pad.folds, settings.seed)
    matches = attack_matches(settings, faces, log) if iapmr else None
    live, all_rows = faces.live, np.arange(len(faces.samples))
    base = load_pad_net((V2_SPEC, V1SE_SPEC))
    results, curves = {}, {}
    for name in rows:
        if name == FINETUNED:
            cfg = PadFinetuneConfig.from_settings(settings)
            fold_list, net = finetuned_folds(base, faces, plan, cfg, settings.images.max_pixels, log, pad.runtime)
        else:
            net = base if name == "minifasnet_pair" else load_pad_net(SHIPPED[name])
            fold_list = zero_shot_folds(net_scores(net, faces, all_rows, runtime=pad.runtime), faces, plan)
        fig = pooled_figures(fold_list, live, pad.target_apcer, matches)
        fig.update(time_per_face(MiniFasNetPad(net, runtime=pad.runtime), faces, settings.images.max_pixels))
        results[name] = fig
        test_rows = np.concatenate([f.test_rows for f in fold_list])
        test_scores = np.concatenate([f.test_scores for f in fold_list])
        curves[name] = (test_scores[live[test_rows]], test_scores[~live[test_rows]])
        log(
            f"{name}: APCER {fig['apcer']:.4f} BPCER {fig['bpcer']:.4f} BPCER20 {fig['bpcer20']:.4f} "
            f"BPCER100 {fig['bpcer100']:.4f} IAPMR {fig['iapmr_enforce']} {fig['ms_per_face']:.2f} ms/face"
        )
    served = pad.model if pad.model in results else next(iter(results))
    out = {
        key: results[served][key] for key in ("bpcer20", "bpcer100", "apcer", "bpcer", "iapmr_enforce", "ms_per_face")
    }
    out.update(
        {
            "model_in_service": served,
            "dataset": str(root),
            "attacks": ATTACKS_NOTE,
            "target_apcer": pad.target_apcer,
            "threshold_rule": "subject_robust (components/pad/calibration.py; docs/decisions/pad.md)",
            "runtime": pad.runtime,
            "detector": settings.faces.detector,
            "subjects": subjects,
            "folds": [{"test": t, "calibration": c, "train": tr} for t, c, tr in plan],
            "frames": {"live": int(live.sum()), "attack": int((~live).sum()), "no_face": len(faces.no_face)},
            "detect_ms_mean": float(np.mean(faces.detect_ms)) if faces.detect_ms else None,
            "iapmr_pad_off": float(matches[~live].mean()) if matches is not None else None,
            "rows": results,
        }
    )
    if cost:
        out["identify_cost"] = identify_cost(settings, faces, log)
    if det_png is not None:
        out["det_png"] = str(plot_det(curves, det_png, "DET, nuaa-dev, folds by subject (printed photos)"))
    return out


def run_site_benchmark(
    settings: Settings,
    live_dir: Path,
    attacks: Mapping[str, Path],
    *,
    det_png: Path | None = None,
    log: Log = lambda message: None,
) -> dict:
    """The model in service, as served (its stored threshold), on a site's own live and attack folders."""
    pad = settings.pad
    model = pad_model_in_service(pad)
    if not isinstance(model, MiniFasNetPad) or model.calibration is None:
        raise ValueError(f"PAD model {pad.model} has no stored calibration to take its threshold from")
    faces = product_faces(settings, folder_samples(live_dir, attacks), log)
    scores = net_scores(model.net, faces, np.arange(len(faces.samples)), runtime=pad.runtime)
    threshold = model.calibration.threshold(pad.target_apcer)
    kinds = np.array([s.kind for s in faces.samples])
    live_scores = scores[kinds == "live"]
    per_kind = {
        k: {**error_rates(live_scores, scores[kinds == k], threshold), **iso_figures(live_scores, scores[kinds == k])}
        for k in attacks
    }
    every = error_rates(live_scores, scores[kinds != "live"], threshold)
    iso = iso_figures(live_scores, scores[kinds != "live"])
    out = {
        "bpcer20": iso["bpcer20"],
        "bpcer100": iso["bpcer100"],
        "apcer": every["apcer"],
        "bpcer": every["bpcer"],
        "iapmr_enforce": None,
        "model_in_service": pad.model,
        "threshold": threshold,
        "target_apcer": pad.target_apcer,
        "calibration": model.calibration.source,
        "apcer_per_kind": {k: v["apcer"] for k, v in per_kind.items()},
        "per_kind": per_kind,
        "iso": iso,
        "frames": {k: int(np.sum(kinds == k)) for k in ("live", *attacks)},
        "no_face": len(faces.no_face),
        "detector": settings.faces.detector,
    }
    subjects = {s.subject for s in faces.samples if s.live} & {s.subject for s in faces.samples if not s.live}
    if subjects - {None}:  # subject folders on both sides: enrol each from a live frame, count attacks that get in
        matches = attack_matches(settings, faces, log)
        attack = kinds != "live"
        out["iapmr_enforce"] = float(np.mean(matches[attack] & (scores[attack] > threshold)))
        out["iapmr_pad_off"] = float(np.mean(matches[attack]))
    out.update(time_per_face(model, faces, settings.images.max_pixels))
    if det_png is not None:
        curves = {f"{pad.model}: {k}": (live_scores, scores[kinds == k]) for k in attacks}
        out["det_png"] = str(plot_det(curves, det_png, "DET, site folders"))
    return out
