"""PAD flows: fine-tune the MiniFASNet pair on a camera's own frames (registered, gated), calibrate the
shipped weights, and `bench pad`.

Wiring only: data, training, figures and plots come from facegate.components.pad, storage from
facegate.components.lifecycle.pad_models, the benchmark from facegate.benchmarks.pad.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow
import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from facegate.benchmarks import pad as bench
from facegate.components.core.paths import datasets_root
from facegate.components.core.settings import Settings, load_settings
from facegate.components.lifecycle import data_version, registry
from facegate.components.lifecycle.pad_models import (
    load_pad_version,
    log_pad_model,
    pad_gate,
    register_pad_version,
)
from facegate.components.lifecycle.tracking import artifact_folder, numeric_metrics, tracked_run
from facegate.components.pad.calibration import PadCalibration, error_rates, iso_figures, subject_robust_threshold
from facegate.components.pad.data import PadFaces, heldout_subjects, nuaa_samples, product_faces, subjects_of
from facegate.components.pad.finetune import PadFinetuneConfig, augmented_copies, finetune_pad
from facegate.components.pad.minifasnet import V1SE_SPEC, V2_SPEC, PadNet, load_pad_net
from facegate.components.pad.models import PAD_MODELS, committed_calibration_file, make_pad_model
from facegate.components.pad.plots import plot_det, plot_roc

EXPERIMENT = "pad"


@task(name="pad-faces", cache_policy=NO_CACHE)
def pad_faces(settings: Settings, root: Path) -> PadFaces:
    """The set's frames, each one's largest face found by the product's detector, cropped per member."""
    return product_faces(settings, nuaa_samples(root), get_run_logger().info)


def held_out_figures(
    net: PadNet, faces: PadFaces, rows: np.ndarray, target_apcer: float, runtime: str
) -> tuple[dict, tuple]:
    """ISO figures on the held-out subjects, and APCER/BPCER at the threshold calibrated on them (the
    subject-robust rule); the scores, live and attack."""
    scores = bench.net_scores(net, faces, rows, runtime=runtime)
    live = faces.live[rows]
    attack_subjects = faces.subjects[rows][~live]
    t = subject_robust_threshold(scores[~live], attack_subjects, target_apcer)
    return {
        **iso_figures(scores[live], scores[~live]),
        "threshold": t,
        **error_rates(scores[live], scores[~live], t),
    }, (scores[live], scores[~live])


@flow(name="train-pad", log_prints=True)
def pad_train_flow(epochs: int | None = None, lr: float | None = None) -> dict:
    """Fine-tune the shipped pair on ``pad.dataset``'s training subjects (mirroring, small crops; no colour
    shifts), calibrate its threshold on the held-out subjects, register it as ``pad.registered_model`` and
    promote it only if its held-out BPCER100 is no worse than the zero-shot pair's (and the champion's)."""
    settings = load_settings()
    pad, log = settings.pad, get_run_logger()
    root = datasets_root() / pad.dataset
    faces = pad_faces(settings, root)
    train, held = heldout_subjects(subjects_of(faces.samples), pad.heldout_subjects, settings.seed)
    tr, ho = faces.rows(train), faces.rows(held)
    cfg = PadFinetuneConfig.from_settings(settings, epochs=epochs, lr=lr)
    params = {
        **{k: v for k, v in settings.flat().items() if k.startswith(("pad.", "seed", "faces.detector"))},
        "run.epochs": cfg.epochs,
        "run.lr": cfg.lr,
        "run.train_subjects": ",".join(train),
        "run.heldout_subjects": ",".join(held),
        "run.train_frames": len(tr),
        "run.heldout_frames": len(ho),
    }
    with tracked_run(
        f"{settings.tracking.experiment_prefix}-{EXPERIMENT}",
        "minifasnet-pair-finetune",
        params=params,
        data_version=data_version.read_version(),
    ) as run:
        mlflow.log_dict(
            {
                "mirroring": {"p": cfg.flip_p},
                "small_crops": {"p": cfg.crop_p, "copies": cfg.crop_copies, "jitter": cfg.crop_jitter},
                "colour_shifts": "none: they erase the print artefacts PAD looks for",
            },
            "augmentation.json",
        )
        base = load_pad_net((V2_SPEC, V1SE_SPEC))
        t0 = time.perf_counter()
        net, history = _finetune(base, faces, tr, cfg, settings.images.max_pixels, log.info)
        train_minutes = (time.perf_counter() - t0) / 60
        ft, zs, curves, baselines = _held_out_comparison(net, base, faces, ho, pad)
        mlflow.log_metrics(
            {
                **{f"val_{k}": v for k, v in numeric_metrics(ft).items()},
                **{f"zero_shot_{k}": v for k, v in numeric_metrics(zs).items()},
                "train_minutes": train_minutes,
            }
        )
        with artifact_folder("plots") as folder:
            plot_det(curves, folder / "det.png", f"DET, held-out subjects {','.join(held)}")
            plot_roc(curves, folder / "roc.png", f"ROC, held-out subjects {','.join(held)}")
        attack_subjects = faces.subjects[ho][~faces.live[ho]]  # in the order of the held-out attack scores
        decision, version = _register(
            net, ft, (*curves["fine-tuned pair"], attack_subjects), baselines, held, run.info.run_id, settings
        )
        mlflow.set_tags({"registered_version": version, "gate": decision.reason, "promoted": str(decision.promote)})
        log.info(
            "registered %s version %s: %s (%s)",
            pad.registered_model,
            version,
            "champion" if decision.promote else "rejected",
            decision.reason,
        )
    return {
        "run_id": run.info.run_id,
        "registered_model": pad.registered_model,
        "version": version,
        "promoted": decision.promote,
        "gate": decision.reason,
        "heldout_subjects": held,
        "fine_tuned": ft,
        "zero_shot": zs,
        "history": history,
        "train_minutes": train_minutes,
    }


def _finetune(base, faces, tr, cfg, max_pixels: int, log):  # noqa: ANN001 - pad types
    """Augmented copies of the training frames (mirroring, small crops), then the fine-tuning itself."""
    copies = augmented_copies(base, [faces.samples[r] for r in tr], [faces.boxes[r] for r in tr], cfg, max_pixels, log)
    return finetune_pad(
        base,
        copies,
        np.arange(len(tr)),
        faces.live[tr],
        cfg,
        log=log,
        on_epoch=lambda e, row: mlflow.log_metrics({"train_loss": row["loss"]}, step=e),
    )


def _held_out_comparison(net, base, faces, ho, pad) -> tuple[dict, dict, dict, dict]:  # noqa: ANN001 - pad types
    """The fine-tuned pair, the zero-shot pair and the champion (if any), scored on the same held-out frames."""
    ft, ft_scores = held_out_figures(net, faces, ho, pad.target_apcer, pad.runtime)
    zs, zs_scores = held_out_figures(base, faces, ho, pad.target_apcer, pad.runtime)
    curves = {"fine-tuned pair": ft_scores, "zero-shot pair": zs_scores}
    baselines = {"zero-shot pair": zs["bpcer100"]}
    champ = registry.champion(pad.registered_model)
    if champ is not None:  # re-scored on this run's held-out frames: the same evaluation data
        champ_fig, curves[f"champion v{champ.version}"] = held_out_figures(
            load_pad_version(pad.registered_model, champ.version)[0], faces, ho, pad.target_apcer, pad.runtime
        )
        baselines[f"champion v{champ.version}"] = champ_fig["bpcer100"]
    return ft, zs, curves, baselines


def _register(net, ft: dict, ft_scores, baselines: dict, held: list[str], run_id: str, settings):  # noqa: ANN001
    """The fine-tuned pair with its threshold calibrated on the held-out subjects, registered; the gate
    decides whether it becomes champion."""
    pad = settings.pad
    live_scores, attack_scores, attack_subjects = ft_scores
    cal = PadCalibration.from_scores(
        "minifasnet_pair_finetuned",
        "",
        f"{pad.dataset} held-out subjects {','.join(held)} (printed photos), {settings.faces.detector} boxes",
        live_scores,
        attack_scores,
        attack_subjects=attack_subjects,
        created=time.strftime("%Y-%m-%d"),
    )
    decision = pad_gate(ft["bpcer100"], baselines)
    version = register_pad_version(
        log_pad_model(net, cal),
        pad.registered_model,
        run_id,
        decision,
        {
            "val_bpcer100": f"{ft['bpcer100']:.4f}",
            "val_bpcer20": f"{ft['bpcer20']:.4f}",
            "threshold": f"{ft['threshold']:.6f}",
            "target_apcer": f"{pad.target_apcer:g}",
            "heldout_subjects": ",".join(held),
        },
    )
    return decision, version


@flow(name="calibrate-pad", log_prints=True)
def pad_calibrate_flow(models: list[str] | None = None) -> dict:
    """The shipped entries' thresholds: each scores every subject of ``pad.dataset`` (the weights never saw
    them) and its calibration is written to ``calibration/pad/`` beside the code, as the embedders' are."""
    settings = load_settings()
    root = datasets_root() / settings.pad.dataset
    faces = pad_faces(settings, root)
    out = {}
    for name in models or list(bench.SHIPPED):
        model = make_pad_model(name, runtime="torch")  # its weights and fingerprint; scored as served below
        scores = bench.net_scores(model.net, faces, np.arange(len(faces.samples)), runtime=settings.pad.runtime)
        live = faces.live
        cal = PadCalibration.from_scores(
            name,
            model.fingerprint,
            f"{settings.pad.dataset}: {len(subjects_of(faces.samples))} subjects, "
            f"{int(live.sum())} live and {int((~live).sum())} printed-photo frames, {settings.faces.detector} boxes",
            scores[live],
            scores[~live],
            attack_subjects=faces.subjects[~live],
            created=time.strftime("%Y-%m-%d"),
        )
        path = cal.save(committed_calibration_file(name, model.fingerprint))
        t = cal.threshold(settings.pad.target_apcer)
        out[name] = {"file": str(path), "threshold": t, **cal.expected(t)}
        get_run_logger().info(
            "%s: threshold %.6f at APCER %g (%s) -> %s", name, t, settings.pad.target_apcer, cal.rule, path
        )
    return out


@flow(name="bench-pad", log_prints=True)
def pad_bench_flow(
    json_out: str | None = None,
    live: str | None = None,
    attacks: dict[str, str] | None = None,
    folds: int | None = None,
    rows: list[str] | None = None,
    iapmr: bool = True,
    cost: bool = True,
) -> dict:
    """``bench pad``: the ISO protocol on ``pad.dataset`` (folds by subject), or with ``live`` and
    ``attacks`` the model in service on a site's own folders; logged to MLflow, the DET curve as artifact."""
    settings = load_settings()
    log = get_run_logger()
    unknown = sorted(set(rows or []) - set(PAD_MODELS))
    if unknown:
        raise ValueError(f"unknown PAD model(s) {unknown} (known: {sorted(PAD_MODELS)})")
    out_path = Path(json_out) if json_out else None
    det_png = out_path.with_suffix(".det.png") if out_path else None
    name = "site-folders" if live else "nuaa-folds"
    with tracked_run(
        f"{settings.tracking.experiment_prefix}-bench-pad",
        name,
        params={
            "pad.model": settings.pad.model,
            "pad.target_apcer": settings.pad.target_apcer,
            "live": live,
            "attacks": json.dumps(attacks or {}),
            "folds": folds or settings.pad.folds,
        },
    ):
        with artifact_folder("plots") as folder:
            png = det_png or folder / "det.png"
            if live:
                folders = {k: Path(v) for k, v in (attacks or {}).items()}
                result = bench.run_site_benchmark(settings, Path(live), folders, det_png=png, log=log.info)
            else:
                result = bench.run_pad_benchmark(
                    settings, folds=folds, rows=rows or bench.ROWS, iapmr=iapmr, cost=cost, det_png=png, log=log.info
                )
            if det_png:
                (folder / "det.png").write_bytes(det_png.read_bytes())
        mlflow.log_metrics(numeric_metrics(result))
        mlflow.log_dict(result, "bench_pad.json")
    if out_path:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result
