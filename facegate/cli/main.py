"""`facegate`: the one front door. Commands build objects from params and call flows or components;
typed errors become one clear line (and exit code 2), never a traceback (`facegate --debug ...` shows it).

The single-item commands (enroll, remove, identify, verify) call ``FaceGate`` directly: no Prefect
server, a few seconds each; Prefect flows remain for the chain, batch enrolment and schedules."""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from facegate.components.core.errors import FacegateError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="facegate: face-recognition entrance and the MLOps around it.")
data_app = typer.Typer(no_args_is_help=True, help="DVC data versions: show, push, pull.")
app.add_typer(data_app, name="data")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks on the full data; each prints JSON.")
app.add_typer(bench_app, name="bench")

DatasetOpt = Annotated[Optional[list[str]], typer.Option("--dataset", "-d", help="dataset name from params.yaml (repeatable; default: all)")]
LimitOpt = Annotated[Optional[int], typer.Option(help="ingest only the first N files of each source (smoke runs)")]


DEBUG = {"tracebacks": False}


@app.callback()
def _global_options(
    debug: Annotated[bool, typer.Option("--debug", help="print the traceback of an error as well")] = False,
) -> None:
    DEBUG["tracebacks"] = debug


def friendly(fn):
    """Render FacegateError as one line, ``error [code]: message``, on stderr with exit code 2; any
    other exception as one ``error [internal_error]`` line with exit code 1. ``--debug``: tracebacks too."""
    import click

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.Exit, click.exceptions.Abort, click.exceptions.ClickException):
            raise
        except FacegateError as exc:
            if DEBUG["tracebacks"]:
                import traceback

                traceback.print_exc()
            typer.echo(f"error [{exc.code}]: {exc.message}", err=True)
            raise typer.Exit(2) from None
        except Exception as exc:
            if DEBUG["tracebacks"]:
                import traceback

                traceback.print_exc()
            text = " ".join(str(exc).split())
            typer.echo(f"error [internal_error]: {type(exc).__name__}: {text} (--debug shows the traceback)",
                       err=True)
            raise typer.Exit(1) from None
    return wrapper


def _check_training_device(detector: bool = False) -> None:
    """Resolve the training device from params now: a GPU asked for but missing is one error line
    (``device_unavailable``, naming the setting) before Prefect starts or any data is read."""
    from facegate.components.core.settings import load_settings

    if detector:
        from facegate.components.detection.train import DetectTrainConfig

        DetectTrainConfig.from_settings(load_settings())
    else:
        from facegate.components.embedding.train import TrainConfig

        TrainConfig.from_settings(load_settings())


def _print(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def _emit(result: dict, json_out: Path | None) -> None:
    """A benchmark's JSON on stdout, and in ``json_out`` too when given."""
    text = json.dumps(result, indent=2, default=str)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n")
    typer.echo(text)


@app.command()
@friendly
def weights() -> None:
    """Locate every pretrained-weight file in its package and check its sha256."""
    from facegate.components.core.weights import verify_all

    for name, path in verify_all().items():
        typer.echo(f"ok  {name:<28} {path}")


@app.command()
@friendly
def ingest(dataset: DatasetOpt = None, limit: LimitOpt = None) -> None:
    """Ingest sources into data/ (manifest + linked images), then `dvc add data` and `dvc push`."""
    from facegate.flows.data import ingest_flow

    result = ingest_flow(datasets=dataset, limit=limit)
    _print({"data_version": result["data_version"],
            "datasets": [{k: v for k, v in s.items() if k != "quarantine"} for s in result["datasets"]],
            "quarantined": [q for s in result["datasets"] for q in s["quarantine"]]})


@app.command()
@friendly
def validate(dataset: DatasetOpt = None) -> None:
    """Run the Great Expectations suites on the ingested manifests."""
    from facegate.flows.data import validate_flow

    for r in validate_flow(datasets=dataset):
        typer.echo(f"{r['dataset']}: passed ({r['expectations']} expectations, "
                   f"{len(r['quarantined'])} quarantined; Data Docs in MLflow)")


def _report_chain(result: dict) -> None:
    """Where to look after a chain: the MLflow run, the registered version and alias, the gallery."""
    from facegate.components.core.paths import mlflow_tracking_uri

    typer.echo(f"data version: {result['data_version']} (data.dvc; `dvc pull` restores it)")
    typer.echo(f"challenger: {result['gate_metric']} {result['challenger_metrics'][result['gate_metric']]:.4f}"
               f" vs {result['incumbent']} {result['incumbent_metrics'][result['gate_metric']]:.4f}")
    typer.echo(f"gate: {result['gate_reason']}")
    typer.echo(f"registered: {result['model']} version {result['challenger_version']}"
               f" ({'promoted to champion' if result['promoted'] else 'not promoted'}); "
               f"alias champion -> version {result['champion_version']}")
    if result.get("gallery_version"):
        typer.echo(f"gallery: index {result['gallery_index_version']} with {result['employees']} employee(s), "
                   f"DVC version {result['gallery_version']} (gallery.dvc)")
    else:
        typer.echo("gallery: unchanged (the champion did not change)")
    typer.echo(f"MLflow run: {result['run_id']} in experiment {result['experiment']} "
               f"({mlflow_tracking_uri()}; `facegate ui` opens it)")
    typer.echo(f"wall time: {result['wall_s']:.0f} s")


@app.command()
@friendly
def demo(dataset: DatasetOpt = None, limit: LimitOpt = None) -> None:
    """The main job on the default data: the whole retraining chain, then where to look."""
    _check_training_device()
    from facegate.flows.retrain import retrain_flow

    _report_chain(retrain_flow(datasets=dataset, limit=limit))


@app.command()
@friendly
def retrain(dataset: DatasetOpt = None, limit: LimitOpt = None,
            json_out: Annotated[Optional[Path], typer.Option("--json", help="write the result here too")] = None) -> None:
    """ingest -> validate -> augment -> train -> evaluate -> register -> gate -> gallery -> promote."""
    _check_training_device()
    from facegate.flows.retrain import retrain_flow

    result = retrain_flow(datasets=dataset, limit=limit)
    if json_out:
        _emit(result, json_out)
    _report_chain(result)


@data_app.command("version")
@friendly
def data_version_cmd() -> None:
    """Print the data version recorded in data.dvc."""
    from facegate.components.lifecycle import data_version

    typer.echo(data_version.read_version() or "none (run `facegate ingest`)")


@data_app.command("push")
@friendly
def data_push() -> None:
    from facegate.components.lifecycle import data_version

    data_version.push()
    typer.echo("pushed")


@data_app.command("pull")
@friendly
def data_pull() -> None:
    """Restore data/ from the DVC remote at the version in data.dvc."""
    from facegate.components.lifecycle import data_version

    data_version.pull()
    typer.echo(f"restored data/ at {data_version.read_version()}")


@app.command()
@friendly
def train(
    dataset: Annotated[str, typer.Option(help="ingested identity dataset")] = "lfw",
    backbone: Annotated[Optional[str], typer.Option(help="dlib_resnet | mobilenet_v2 (default: params)")] = None,
    mode: Annotated[Optional[str], typer.Option(help="pretrained | head | finetune (default: params)")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="override train.epochs")] = None,
    lr: Annotated[Optional[float], typer.Option(help="override train.lr")] = None,
    miner: Annotated[Optional[str], typer.Option(help="override train.miner")] = None,
) -> None:
    """Train the embedding on the ingested train split; evaluate on held-out identities; log to MLflow."""
    _check_training_device()
    from facegate.flows.train import train_flow

    _print(train_flow(dataset=dataset, backbone=backbone, mode=mode, epochs=epochs, lr=lr, miner=miner))


models_app = typer.Typer(no_args_is_help=True, help="Registered embedding models: list, promote, roll back.")
app.add_typer(models_app, name="models")


@models_app.command("list")
@friendly
def models_list() -> None:
    """Every registered version with its aliases, gate state and held-out metrics."""
    from facegate.components.lifecycle import registry
    from facegate.components.core.settings import load_settings

    name = load_settings().registry.embedder_model
    _print({"model": name, "champion_history": registry.history(name),
            "versions": [v.to_dict() for v in registry.list_versions(name)]})


@models_app.command("promote")
@friendly
def models_promote(version: Annotated[str, typer.Argument(help="registered version to make champion")],
                   reason: Annotated[str, typer.Option(help="why (kept on the version)")] = "") -> None:
    """Make VERSION the champion; the gallery is re-embedded with it in the same step."""
    from facegate.flows.retrain import switch_champion_flow

    _print(switch_champion_flow(version=version, reason=reason))


@models_app.command("rollback")
@friendly
def models_rollback(reason: Annotated[str, typer.Option(help="why (kept on the demoted version)")] = "") -> None:
    """Champion back to the previous champion; the gallery follows."""
    from facegate.flows.retrain import switch_champion_flow

    _print(switch_champion_flow(rollback=True, reason=reason))


@app.command()
@friendly
def schedule(
    cron: Annotated[Optional[str], typer.Option(help="cron expression (default: params retrain.cron)")] = None,
    port: Annotated[int, typer.Option(help="loopback port of the Prefect server to use or start")] = 4200,
) -> None:
    """Serve the retraining deployment on its cron schedule against a real Prefect server (started
    on 127.0.0.1 if none answers; PREFECT_API_URL names another). Ctrl-C or SIGTERM stops it, with the
    server it started and any flow run in progress."""
    from facegate.components.core.processes import Terminated, stop_children_on_signals
    from facegate.components.core.settings import load_settings
    from facegate.flows.schedule import ensure_server, serve_retraining

    settings = load_settings()
    with stop_children_on_signals() as groups:  # on any exit: every process started here stops
        server = ensure_server(port)
        if server.pid is not None:  # a server this command started stops with it
            groups.append(server.pid)
        cron = cron or settings.retrain.cron
        typer.echo(server.describe())
        typer.echo(f"serving deployment retrain/{settings.retrain.deployment} on cron '{cron}' "
                   f"({settings.retrain.timezone}); runs appear in the Prefect UI at "
                   f"{server.api_url.removesuffix('/api')} and in MLflow (facegate ui)")
        try:
            serve_retraining(server, cron, settings.retrain.timezone, settings.retrain.deployment)
        except (Terminated, KeyboardInterrupt):
            typer.echo("stopping: the deployment's runner and every process it started", err=True)


@app.command()
@friendly
def ui(port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000) -> None:
    """Open the MLflow UI on the local tracking store (loopback only). Ctrl-C or SIGTERM stops it and
    every worker it started."""
    import os

    from facegate.components.core.paths import mlflow_artifact_root, mlflow_tracking_uri
    from facegate.components.core.processes import run_until_signalled

    uri = mlflow_tracking_uri()
    typer.echo(f"MLflow UI on http://127.0.0.1:{port} ({uri}); Ctrl-C stops it")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--default-artifact-root",
           mlflow_artifact_root(), "--host", "127.0.0.1", "--port", str(port)]
    code = run_until_signalled(cmd, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    raise typer.Exit(0 if code in (128 + 2, 128 + 15) else code)


gallery_app = typer.Typer(no_args_is_help=True, help="The FAISS gallery of enrolled employees.")
app.add_typer(gallery_app, name="gallery")


def _quiet_for_one_item() -> None:
    """enroll/remove/identify/verify print their JSON and, on failure, one error line: MLflow's INFO
    lines (creating its database on first use) would add to stderr. Torch's idle threads sleep rather than
    spin (``facegate.components.core.inference.passive_waits``): on a busy machine spinning made one face ~10x slower."""
    import os

    from facegate.components.core.inference import passive_waits

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    passive_waits()


def _snapshots_in_background(settings) -> bool:
    """Whether a CLI write hands its DVC snapshot (and its MLflow record) to a detached process."""
    from facegate.components.lifecycle import gallery_snapshots

    return gallery_snapshots.dvc_target() is not None and settings.gallery.snapshot != "manual"


def _request_gallery_snapshot(settings=None) -> str:
    """After a CLI write: mark gallery/ dirty; unless params say manual, a detached process snapshots it
    (and logs any pending MLflow record: ``gallery_changes.flush_records``). ``settings``: the command's
    own (params are parsed and validated once per command: ~0.1 s each time)."""
    from facegate.components.lifecycle import gallery_snapshots
    from facegate.components.core.settings import load_settings

    if gallery_snapshots.dvc_target() is None:
        return "none: the gallery is outside the repository (FACEGATE_HOME/FACEGATE_GALLERY), DVC cannot version it"
    gallery_snapshots.mark_dirty()
    if (settings or load_settings()).gallery.snapshot == "manual":
        return "pending (`facegate gallery snapshot` makes it)"
    return f"pending, made in the background (pid {gallery_snapshots.spawn_pending_snapshot()})"


@app.command()
@friendly
def enroll(
    photos: Annotated[Optional[list[Path]], typer.Argument(help="one or more photos, exactly one face each")] = None,
    employee_id: Annotated[Optional[str], typer.Option("--id", help="employee id, e.g. E123")] = None,
    name: Annotated[str, typer.Option(help="display name")] = "",
    replace: Annotated[bool, typer.Option(help="re-enrol an existing employee with these photos")] = False,
    force: Annotated[bool, typer.Option("--force", help="enrol even if the face is already enrolled under "
                                                        "another id (duplicate_face otherwise)")] = False,
    source: Annotated[Optional[Path], typer.Option(
        "--from", help="batch: a folder of <id>/*.jpg|png or a CSV with columns id,name,path")] = None,
) -> None:
    """Enrol one employee from one or more photos (no retraining, a new gallery version), or a batch
    with --from (a Prefect flow: progress bar, a report row per employee, one DVC snapshot at the end)."""
    from facegate.components.core.errors import InvalidEmployee

    if source is not None:
        if photos or employee_id:
            raise InvalidEmployee("--from enrols a batch: give no --id and no photos with it")
        from facegate.flows.gallery import batch_enrol_flow

        result = batch_enrol_flow(str(source), replace=replace)
        _print(result)
        if result["failed"]:
            raise typer.Exit(1)
        return
    if not employee_id or not photos:
        raise InvalidEmployee("give --id and at least one photo (or --from FOLDER_OR_CSV for a batch)")
    _quiet_for_one_item()
    from facegate.components.service.gallery_changes import enrol_recorded
    from facegate.components.service.facade import FaceGate

    gate = FaceGate()
    later = _snapshots_in_background(gate.settings)  # the MLflow run is logged by the snapshot's detached process
    result = enrol_recorded(gate, employee_id, name, photos, replace=replace, force=force, later=later)
    mlflow_run = {"mlflow_run": "logged by the background process"} if later else {}
    _print({**result, **mlflow_run, "gallery_snapshot": _request_gallery_snapshot(gate.settings)})


@app.command()
@friendly
def remove(employee_id: Annotated[str, typer.Argument(help="employee id")]) -> None:
    """Remove an employee: embeddings (all local gallery versions) and stored photos are deleted."""
    _quiet_for_one_item()
    from facegate.components.service.gallery_changes import remove_recorded
    from facegate.components.service.facade import FaceGate

    result = remove_recorded(FaceGate(), employee_id)
    _print({**result, "gallery_snapshot": _request_gallery_snapshot()})


@app.command()
@friendly
def identify(
    frame: Annotated[Path, typer.Argument(help="a camera frame or photo")],
    out: Annotated[Optional[Path], typer.Option(help="write the frame with boxes and names here")] = None,
) -> None:
    """Who is this? Every face in the frame: box, employee id or not recognized, distance, tau."""
    _quiet_for_one_item()
    from facegate.components.core.annotate import draw_boxes
    from facegate.components.core.images import load_image
    from facegate.components.service.facade import FaceGate

    gate = FaceGate()
    image = load_image(frame, gate.settings.images.max_pixels)
    result = gate.identify(image)
    if out:
        from facegate.components.service.mask_state import SAY

        draw_boxes(image, [(f.box, (f.name or f.employee_id or "not recognized")
                            + (f", {SAY.get(f.mask, f.mask)}" if f.mask else ""), f.recognized)
                           for f in result.faces], out)
    _print({"frame": str(frame), **result.to_dict(), "annotated": str(out) if out else None})


@app.command()
@friendly
def detect(
    image: Annotated[Path, typer.Argument(help="a photo or frame")],
    out: Annotated[Optional[Path], typer.Option(help="write the image with boxes and labels here")] = None,
    model: Annotated[Optional[str], typer.Option(help="MLflow model URI (default: the detector's champion)")] = None,
) -> None:
    """Face-mask detection (YOLO-style): every box with its class and score; --out draws them."""
    from facegate.components.lifecycle.detector_models import detect_file

    _print(detect_file(image, out, model_uri=model))


@app.command("train-detector")
@friendly
def train_detector(
    frozen_epochs: Annotated[Optional[int], typer.Option(help="override detection.frozen_epochs")] = None,
    finetune_epochs: Annotated[Optional[int], typer.Option(help="override detection.finetune_epochs")] = None,
    log_sample_images: Annotated[Optional[bool], typer.Option(
        "--log-sample-images/--no-sample-images", help="held-out face images with boxes in MLflow "
        "(default: params detection.log_sample_images, off)")] = None,
) -> None:
    """Train the face-mask detector (frozen, then fine-tuned), evaluate, register, gate, promote."""
    _check_training_device(detector=True)
    from facegate.flows.detect import detect_train_flow

    _print(detect_train_flow(frozen_epochs=frozen_epochs, finetune_epochs=finetune_epochs,
                             log_sample_images=log_sample_images))


@app.command()
@friendly
def verify(
    photo: Annotated[Path, typer.Argument(help="a photo with exactly one face")],
    employee_id: Annotated[str, typer.Option("--id", help="the claimed employee id")],
) -> None:
    """Is this person the claimed employee? (1:1 at the calibrated false-accept rate)."""
    _quiet_for_one_item()
    from facegate.components.core.images import load_image
    from facegate.components.service.facade import FaceGate

    gate = FaceGate()
    _print(gate.verify(employee_id, load_image(photo, gate.settings.images.max_pixels), photo).to_dict())


@app.command()
@friendly
def serve(
    host: Annotated[Optional[str], typer.Option(help="bind address (default: params api.host, loopback)")] = None,
    port: Annotated[Optional[int], typer.Option(help="port (default: params api.port)")] = None,
) -> None:
    """Run the REST API (OpenAPI docs at /docs). The key: $FACEGATE_API_KEY or .facegate/api_key."""
    from facegate.components.core.inference import passive_waits

    passive_waits()  # before torch loads: idle threads sleep, the cores go to the requests
    from facegate.components.core.settings import load_settings
    from facegate.components.web.api import api_key, serve as run_server

    settings = load_settings()
    api_key()  # created now, so the operator can read it before the first request
    run_server(host or settings.api.host, port or settings.api.port)


@app.command()
@friendly
def calibrate(
    sets: Annotated[Optional[list[str]], typer.Option(
        "--set", help="another held-out set with identities, NAME=KIND:PATH (KIND: image_folder | lfw; PATH "
                      "under the datasets root, or absolute); repeatable")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="a pretrained backbone, not the model in service")] = None,
    out: Annotated[Optional[Path], typer.Option(help="write the file here, not where the model keeps it")] = None,
) -> None:
    """Calibrate the model once: distance sketches on LFW's held-out identities (read from the datasets
    root, no ingest) and any --set, stored with the model (a registered version: its MLflow run; the
    pretrained model: calibration/<embedder>-<fingerprint>.npz, to commit). Enrolment then never waits."""
    from facegate.components.service.calibrations import calibrate_model
    from facegate.components.core.settings import load_settings

    _print(calibrate_model(load_settings(), backbone, sets or [], out, log=lambda m: typer.echo(m, err=True)))


@gallery_app.command("build")
@friendly
def gallery_build() -> None:
    """Re-embed every enrolled employee with the model in service and recalibrate tau."""
    from facegate.flows.gallery import build_gallery_flow

    _print(build_gallery_flow())


@gallery_app.command("snapshot")
@friendly
def gallery_snapshot(
    pending: Annotated[bool, typer.Option("--pending", help="only if a write asked for one (what the "
                                                                "background process runs)")] = False,
) -> None:
    """Version gallery/ with DVC now (`dvc add gallery` + push): gallery.dvc matches gallery/ after it."""
    from facegate.components.lifecycle import gallery_snapshots

    if gallery_snapshots.dvc_target() is None:
        from facegate.components.core.paths import gallery_dir

        typer.echo(f"{gallery_dir()} is outside the repository: DVC cannot version it (no snapshot)")
        return
    version = gallery_snapshots.snapshot_if_dirty() if pending else gallery_snapshots.snapshot()
    if version is None and not pending:
        typer.echo("no gallery/ yet: nothing to snapshot")
    elif version is not None:
        typer.echo(f"gallery.dvc: {version}")
    from facegate.components.core.paths import state_dir

    pending_records = state_dir() / "pending-records"  # gallery_changes.pending_records_dir, without its imports
    if pending_records.is_dir() and any(pending_records.iterdir()):
        from facegate.components.service.gallery_changes import flush_records

        _quiet_for_one_item()
        for run_id in flush_records():  # CLI enrolments' MLflow runs, written after their answer
            typer.echo(f"mlflow run: {run_id}")


@gallery_app.command("show")
@friendly
def gallery_show() -> None:
    """The current gallery's manifest and employees."""
    from facegate.components.service.deployment import gallery_store

    g = gallery_store().load()
    _print({"manifest": g.manifest.to_dict(), "employees": g.employees().to_dict("records")})


@bench_app.command("lfw")
@friendly
def bench_lfw(
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the result here too")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="dlib_resnet | sface | mobilenet_v2 | dlib_resnet+sface (default: the model in service)")] = None,
    mode: Annotated[Optional[str], typer.Option(help="pretrained | head | finetune (default: the model in service's)")] = None,
    tta: Annotated[Optional[bool], typer.Option("--tta/--no-tta", help="flip TTA (default: params)")] = None,
    miner: Annotated[Optional[str], typer.Option(help="override train.miner")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="override train.epochs")] = None,
    groups: Annotated[Optional[int], typer.Option(help="models per 10 folds (default: head 10, finetune 2)")] = None,
    lr: Annotated[Optional[float], typer.Option(help="override train.lr")] = None,
    mining: Annotated[str, typer.Option(help="head mode: online (in-batch) | dataset (FAISS rounds)")] = "online",
    speed: Annotated[bool, typer.Option("--speed/--no-speed", help="also time embedding and the whole pipeline")] = True,
    masked: Annotated[bool, typer.Option("--masked", help="the masked protocol: the second image of every pair masked (seeded)")] = False,
) -> None:
    """LFW View 2 (10 folds of 600 pairs, threshold chosen on 9) on the shared LFW copy."""
    from facegate.flows.bench import lfw_benchmark_flow

    result = lfw_benchmark_flow(backbone=backbone, mode=mode, flip_tta=tta, miner=miner, epochs=epochs,
                                groups=groups, lr=lr, mining=mining, speed=speed, masked=masked)
    _emit(result, json_out)


@bench_app.command("identify")
@friendly
def bench_identify(
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the result here too")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="default: params")] = None,
    mode: Annotated[str, typer.Option(help="pretrained | head (trained on the other identity half)")] = "pretrained",
    frames: Annotated[int, typer.Option(help="frames timed end to end")] = 200,
) -> None:
    """LFW open-set identification: one-shot enrolment, strangers, calibrated tau, end-to-end latency."""
    from facegate.flows.bench import identify_benchmark_flow

    result = identify_benchmark_flow(backbone=backbone, mode=mode, timed_frames=frames)
    _emit(result, json_out)


@bench_app.command("detect")
@friendly
def bench_detect(
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the result here too")] = None,
    model: Annotated[Optional[str], typer.Option(help="MLflow model URI (default: the detector's champion)")] = None,
    hog: Annotated[bool, typer.Option("--hog/--no-hog", help="also score dlib HOG on the same images")] = True,
) -> None:
    """Detector on the held-out split: VOC/COCO mAP (and pycocotools), speed, face AP beside dlib HOG."""
    from facegate.flows.detect import detect_bench_flow

    _emit(detect_bench_flow(model_uri=model, hog=hog), json_out)


@bench_app.command("face-detectors")
@friendly
def bench_face_detectors(
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the result here too")] = None,
    detector: Annotated[Optional[list[str]], typer.Option(help="NAME or NAME@UPSAMPLE, repeatable (default: yunet, dlib_hog@1)")] = None,
) -> None:
    """Face AP@0.5 of the recognition path's face detectors on the face-mask held-out split."""
    from facegate.flows.detect import face_detectors_bench_flow

    _emit(face_detectors_bench_flow(detectors=detector), json_out)


@bench_app.command("gallery")
@friendly
def bench_gallery(
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the result here too")] = None,
    sizes: Annotated[str, typer.Option(help="gallery sizes, comma separated")] = "1000,10000,100000,1000000",
    queries: Annotated[int, typer.Option(help="queries per size (half strangers)")] = 2000,
) -> None:
    """Search cost as the gallery grows (exact vs HNSW/IVF) on synthetic LFW-like galleries."""
    import sys
    import time

    import faiss

    from facegate.benchmarks import gallery_scaling as gs

    faiss.omp_set_num_threads(2)
    t0 = time.perf_counter()
    result = gs.run_benchmark([int(x) for x in sizes.split(",")], queries,
                              log=lambda m: print(f"[{time.perf_counter() - t0:7.1f} s] {m}", file=sys.stderr))
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    _emit(result, json_out)


@bench_app.command("calibration")
@friendly
def bench_calibration(
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the result here too")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="a pretrained backbone (default: the model in service)")] = None,
    splits: Annotated[int, typer.Option(min=1, help="random 20-person ORL galleries (FPIR pooled over them)")] = 100,
) -> None:
    """Calibration transfer: thresholds fitted on one LFW identity half; FAR 1e-3 and FPIR 1e-2 achieved
    on the other half, ORL and the face-mask set's faces (strangers), per score normalisation."""
    from facegate.benchmarks.calibration import run_from_settings
    from facegate.components.core.settings import load_settings

    _emit(run_from_settings(load_settings(), backbone, log=lambda m: typer.echo(m, err=True), splits=splits),
          json_out)


@app.command()
@friendly
def stylize(
    content: Annotated[Path, typer.Argument(help="content image C (what is where)")],
    style: Annotated[Path, typer.Argument(help="style image S (how it looks)")],
    out: Annotated[Path, typer.Option(help="write G here (.jpg or .png)")],
    iterations: Annotated[Optional[int], typer.Option(help="override style.iterations")] = None,
    log_images: Annotated[Optional[bool], typer.Option(
        "--log-images/--no-log-images", help="content, style and output in MLflow "
        "(default: params style.log_images, off: a face photo is biometric data)")] = None,
) -> None:
    """Neural style transfer (Gatys et al.): G keeps C's content and takes S's style; costs in MLflow."""
    from facegate.flows.style import check_inputs, stylize_flow

    check_inputs(content, style, out)
    _print(stylize_flow(str(content), str(style), str(out), iterations=iterations, log_images=log_images))


@bench_app.command("style")
@friendly
def bench_style(
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the result here too")] = None,
    figure: Annotated[Optional[Path], typer.Option(help="write content, style and output side by side here")] = None,
    iterations: Annotated[Optional[int], typer.Option(help="override style.iterations")] = None,
) -> None:
    """Style transfer on a 256x256 content from the shared data and a packaged style image, on 2 threads."""
    from facegate.flows.style import style_bench_flow

    _emit(style_bench_flow(figure=str(figure) if figure else None, iterations=iterations), json_out)

from facegate.cli.accounts import access_log_app, accounts_app  # noqa: E402 - needs `friendly` above

app.add_typer(accounts_app, name="accounts")
app.add_typer(access_log_app, name="access-log")


def main() -> None:
    import facegate.flows  # noqa: F401 - sets the embedded defaults before anything heavy is imported

    app()


if __name__ == "__main__":
    sys.exit(main())
