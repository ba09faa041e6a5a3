"""What the ML engineer measures: `facegate bench ...` runs a benchmark on the full data and prints
its JSON (and writes it with --json). Each loads its flow or benchmark module only when it runs."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from facegate.benchmarks import cli_enrol
from facegate.cli.options import JsonOpt
from facegate.cli.output import emit, friendly

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks on the full data; each prints JSON.")


@bench_app.command("lfw")
@friendly
def bench_lfw(
    json_out: JsonOpt = None,
    backbone: Annotated[
        str | None,
        typer.Option(help="dlib_resnet | sface | mobilenet_v2 | dlib_resnet+sface (default: the model in service)"),
    ] = None,
    mode: Annotated[
        str | None, typer.Option(help="pretrained | head | finetune (default: the model in service's)")
    ] = None,
    tta: Annotated[bool | None, typer.Option("--tta/--no-tta", help="flip TTA (default: params)")] = None,
    miner: Annotated[str | None, typer.Option(help="override train.miner")] = None,
    epochs: Annotated[int | None, typer.Option(help="override train.epochs")] = None,
    groups: Annotated[int | None, typer.Option(help="models per 10 folds (default: head 10, finetune 2)")] = None,
    lr: Annotated[float | None, typer.Option(help="override train.lr")] = None,
    mining: Annotated[str, typer.Option(help="head mode: online (in-batch) | dataset (FAISS rounds)")] = "online",
    speed: Annotated[
        bool, typer.Option("--speed/--no-speed", help="also time embedding and the whole pipeline")
    ] = True,
    masked: Annotated[
        bool, typer.Option("--masked", help="the masked protocol: the second image of every pair masked (seeded)")
    ] = False,
) -> None:
    """LFW View 2 (10 folds of 600 pairs, threshold chosen on 9) on the shared LFW copy."""
    from facegate.flows.bench import lfw_benchmark_flow  # heavy: Prefect, MLflow and torch load in seconds

    result = lfw_benchmark_flow(
        backbone=backbone,
        mode=mode,
        flip_tta=tta,
        miner=miner,
        epochs=epochs,
        groups=groups,
        lr=lr,
        mining=mining,
        speed=speed,
        masked=masked,
    )
    emit(result, json_out)


@bench_app.command("identify")
@friendly
def bench_identify(
    json_out: JsonOpt = None,
    backbone: Annotated[str | None, typer.Option(help="default: params")] = None,
    mode: Annotated[str, typer.Option(help="pretrained | head (trained on the other identity half)")] = "pretrained",
    frames: Annotated[int, typer.Option(help="frames timed end to end")] = 200,
) -> None:
    """LFW open-set identification: one-shot enrolment, strangers, calibrated tau, end-to-end latency."""
    from facegate.flows.bench import identify_benchmark_flow  # heavy: Prefect, MLflow and torch load in seconds

    result = identify_benchmark_flow(backbone=backbone, mode=mode, timed_frames=frames)
    emit(result, json_out)


@bench_app.command("detect")
@friendly
def bench_detect(
    json_out: JsonOpt = None,
    model: Annotated[str | None, typer.Option(help="MLflow model URI (default: the detector's champion)")] = None,
    hog: Annotated[bool, typer.Option("--hog/--no-hog", help="also score dlib HOG on the same images")] = True,
    seeds: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="train the two-stage detector with seeds seed .. seed+N-1 and score each: per-seed mAP@0.5 "
            "(and pycocotools'), mask_weared_incorrect AP, mean and spread, training minutes; the figure "
            "to quote (JSON also to benchmarks/results/detect-<YYYYMMDD>-<commit>.json)",
        ),
    ] = None,
) -> None:
    """Detector on the held-out split: VOC/COCO mAP (and pycocotools), speed, face AP beside dlib HOG.
    With --seeds N: N trainings from scratch, the figure to quote (mean and spread over the seeds)."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no INFO lines (a new store's tables) before an error
    from facegate.flows import detect as flows  # heavy: Prefect, MLflow and torch load in seconds

    if seeds:
        result = flows.detect_seeds_bench_flow(seeds=seeds)
        emit(result, json_out or flows.seeds_result_path())
        return
    flows.resolve_bench_model(model)  # no champion: the one-line error before Prefect starts a flow run
    emit(flows.detect_bench_flow(model_uri=model, hog=hog), json_out)


@bench_app.command("face-detectors")
@friendly
def bench_face_detectors(
    json_out: JsonOpt = None,
    detector: Annotated[
        list[str] | None, typer.Option(help="NAME or NAME@UPSAMPLE, repeatable (default: yunet, dlib_hog@1)")
    ] = None,
) -> None:
    """Face AP@0.5 of the recognition path's face detectors on the face-mask held-out split."""
    from facegate.flows.detect import face_detectors_bench_flow  # heavy: Prefect, MLflow and torch load in seconds

    emit(face_detectors_bench_flow(detectors=detector), json_out)


@bench_app.command("gallery")
@friendly
def bench_gallery(
    json_out: JsonOpt = None,
    sizes: Annotated[str, typer.Option(help="gallery sizes, comma separated")] = "1000,10000,100000,1000000",
    queries: Annotated[int, typer.Option(help="queries per size (half strangers)")] = 2000,
) -> None:
    """Search cost as the gallery grows (exact vs HNSW/IVF) on synthetic LFW-like galleries."""
    import faiss  # heavy: FAISS's native library and numpy; only this benchmark sets its threads

    from facegate.benchmarks import gallery_scaling as gs  # heavy: FAISS and numpy, ~0.4 s

    faiss.omp_set_num_threads(2)
    t0 = time.perf_counter()
    result = gs.run_benchmark(
        [int(x) for x in sizes.split(",")],
        queries,
        log=lambda m: print(f"[{time.perf_counter() - t0:7.1f} s] {m}", file=sys.stderr),
    )
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    emit(result, json_out)


@bench_app.command("cli-enrol")
@friendly
def bench_cli_enrol(
    json_out: JsonOpt = None,
    runs: Annotated[int, typer.Option(min=1, max=10, help="enrolments, one LFW person each")] = 5,
    state: Annotated[Path | None, typer.Option(help="a fresh state folder (default: a new temporary one)")] = None,
    repo: Annotated[Path | None, typer.Option(help="time another checkout's CLI (default: this one)")] = None,
) -> None:
    """One-shot `facegate enroll --force` end to end, each a fresh process into one fresh state folder:
    wall and user CPU seconds per run, medians, load averages (goal: median wall <= 5 s on 2 cores)."""
    emit(cli_enrol.run_benchmark(runs, state, repo, log=lambda m: typer.echo(m, err=True)), json_out)


@bench_app.command("calibration")
@friendly
def bench_calibration(
    json_out: JsonOpt = None,
    backbone: Annotated[str | None, typer.Option(help="a pretrained backbone (default: the model in service)")] = None,
    splits: Annotated[int, typer.Option(min=1, help="random 20-person ORL galleries (FPIR pooled over them)")] = 100,
) -> None:
    """Calibration transfer: thresholds fitted on one LFW identity half; FAR 1e-3 and FPIR 1e-2 achieved
    on the other half, ORL and the face-mask set's faces (strangers), per score normalisation."""
    from facegate.benchmarks.calibration import run_from_settings  # heavy: numpy and the calibration modules, ~0.45 s
    from facegate.components.core.settings import load_settings  # heavy: pydantic and the params schema, ~0.15 s

    emit(run_from_settings(load_settings(), backbone, log=lambda m: typer.echo(m, err=True), splits=splits), json_out)


@bench_app.command("duplicates")
@friendly
def bench_duplicates(
    json_out: JsonOpt = None,
    sizes: Annotated[str, typer.Option(help="gallery sizes, comma separated")] = "100,1000,3000",
) -> None:
    """Enrolment's duplicate-face check on LFW's held-out people: strangers falsely refused and returning
    people caught at each gallery size, the gallery-size threshold beside the 1:1 one."""
    from facegate.benchmarks.duplicates import run_duplicates_benchmark  # heavy: torch and the models, ~2 s
    from facegate.components.core.settings import load_settings  # heavy: pydantic and the params schema, ~0.15 s

    emit(
        run_duplicates_benchmark(
            load_settings(), tuple(int(x) for x in sizes.split(",")), log=lambda m: typer.echo(m, err=True)
        ),
        json_out,
    )


@bench_app.command("style")
@friendly
def bench_style(
    json_out: JsonOpt = None,
    figure: Annotated[Path | None, typer.Option(help="write content, style and output side by side here")] = None,
    iterations: Annotated[int | None, typer.Option(help="override style.iterations")] = None,
) -> None:
    """Style transfer on a 256x256 content from the shared data and a packaged style image, on 2 threads."""
    from facegate.flows.style import style_bench_flow  # heavy: Prefect, MLflow and torch load in seconds

    emit(style_bench_flow(figure=str(figure) if figure else None, iterations=iterations), json_out)


def _attack_folders(specs: list[str] | None) -> dict[str, str]:
    """``KIND=DIR`` options as {kind: dir}; a malformed one is a bad parameter, named."""
    out = {}
    for spec in specs or []:
        kind, sep, folder = spec.partition("=")
        if not sep or not kind or not folder:
            raise typer.BadParameter(
                f"{spec!r}: expected KIND=DIR (e.g. print=/data/site/print)", param_hint="--attack"
            )
        out[kind] = folder
    return out


@bench_app.command("pad")
@friendly
def bench_pad(
    json_out: JsonOpt = None,
    live: Annotated[
        Path | None,
        typer.Option(
            help="a site's own live frames (a folder; sub-folders name subjects): score the model in service "
            "on them, no training, no folds"
        ),
    ] = None,
    attack: Annotated[
        list[str] | None,
        typer.Option(help="KIND=DIR: a site's attack frames of one kind (print, screen, ...), with --live; repeatable"),
    ] = None,
    folds: Annotated[int | None, typer.Option(min=2, help="folds of subjects (default: params pad.folds)")] = None,
    row: Annotated[
        list[str] | None,
        typer.Option(
            help="models to measure, repeatable (default: the zero-shot pair, each member, the fine-tuned pair)"
        ),
    ] = None,
    iapmr: Annotated[
        bool, typer.Option("--iapmr/--no-iapmr", help="enrol each subject and count attacks that get in (IAPMR)")
    ] = True,
    cost: Annotated[
        bool, typer.Option("--identify-cost/--no-identify-cost", help="identify's p50 with PAD off and on, same frames")
    ] = True,
) -> None:
    """Presentation-attack detection, ISO/IEC 30107-3: APCER, BPCER, BPCER20/100, IAPMR, DET curve (beside
    --json as .det.png), ms per face; on params' pad.dataset with folds by subject, or a site's folders."""
    from facegate.flows.pad import pad_bench_flow  # heavy: Prefect, MLflow and torch load in seconds

    attacks = _attack_folders(attack)
    if bool(live) != bool(attacks):
        raise typer.BadParameter("--live and --attack go together (a site's own folders)", param_hint="--live")
    emit(
        pad_bench_flow(
            json_out=str(json_out) if json_out else None,
            live=str(live) if live else None,
            attacks=attacks or None,
            folds=folds,
            rows=row,
            iapmr=iapmr,
            cost=cost,
        ),
        None,
    )


@bench_app.command("flywheel")
@friendly
def bench_flywheel(
    json_out: JsonOpt = None,
    days: Annotated[int, typer.Option(min=1, help="simulated days")] = 10,
    employees: Annotated[int, typer.Option(min=1, help="held-out LFW people enrolled from one clean photo")] = 60,
    passes: Annotated[int, typer.Option(min=1, help="passes per employee per day")] = 3,
    strangers: Annotated[int, typer.Option(min=0, help="stranger passes per day")] = 100,
    review: Annotated[int, typer.Option(min=0, help="captures the operator labels per day")] = 40,
    mask_onset: Annotated[int | None, typer.Option(help="first masked day (default: day 6, or 3 with --quick)")] = None,
    mask_share: Annotated[float, typer.Option(min=0.0, max=1.0, help="share of people masked from the onset")] = 0.5,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="a tiny entrance for tests: 6 employees, 2 passes, 10 strangers, 8 reviews, 3 days"
        ),
    ] = False,
    retrain: Annotated[
        str,
        typer.Option(
            help="record: a triggered retraining is recorded; run: the first trigger runs the real chain once, "
            "small and seeded, in a sandbox (challenger vs champion val_deploy_*, the gate's decision)"
        ),
    ] = "record",
    retrain_identities: Annotated[
        int, typer.Option(min=2, help="--retrain run: LFW training-split identities in the chain's slice")
    ] = 60,
) -> None:
    """The deployment flywheel, simulated: captures, operator review, template update and drift, day by day,
    through the real service on held-out LFW people seen by a degraded camera (masks from --mask-onset)."""
    from facegate.benchmarks.flywheel import FlywheelConfig, run_flywheel  # heavy: torch and the models, ~2 s
    from facegate.components.core.settings import load_settings  # heavy: pydantic and the params schema, ~0.15 s

    settings = load_settings()
    if quick:
        cfg = FlywheelConfig(
            days=min(days, 3),
            employees=6,
            passes=2,
            strangers=10,
            review=8,
            mask_onset=mask_onset or 3,
            mask_share=mask_share,
            seed=settings.seed,
            retrain_identities=retrain_identities,
        )
    else:
        cfg = FlywheelConfig(
            days=days,
            employees=employees,
            passes=passes,
            strangers=strangers,
            review=review,
            mask_onset=mask_onset or 6,
            mask_share=mask_share,
            seed=settings.seed,
            retrain_identities=retrain_identities,
        )
    if retrain not in ("record", "run"):
        raise typer.BadParameter("record or run", param_hint="--retrain")
    chain = None
    if retrain == "run":
        from facegate.flows.retrain import retrain_flow  # heavy: Prefect and MLflow; only a run with its chain

        def chain() -> dict:
            return retrain_flow(force=True)

    log = lambda m: typer.echo(m, err=True)  # noqa: E731
    emit(run_flywheel(settings, cfg, log=log, retrain=retrain, chain=chain), json_out)
