"""Data flows: export the deployment's confirmed captures, ingest (sources -> manifests under data/,
versioned by DVC) and validate (GX suites)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from facegate.components.core.datasets import CAPTURES_KIND, read_manifest, read_quarantine, source_folder
from facegate.components.core.errors import DatasetError, ValidationFailed
from facegate.components.core.paths import data_dir, state_dir
from facegate.components.core.settings import Settings, load_settings
from facegate.components.core.settings_sections import DatasetSource
from facegate.components.lifecycle import data_version
from facegate.components.lifecycle.ingest import ingest_source
from facegate.components.lifecycle.tracking import set_data_version, tracked_run
from facegate.components.lifecycle.validation import CaptureReference, ValidationReport, gx_project, validate_manifest
from facegate.components.service.capture_export import capture_reference, export_all
from facegate.components.service.facade import FaceGate

DATA_EXPERIMENT = "data"


def _experiment(settings: Settings) -> str:
    return f"{settings.tracking.experiment_prefix}-{DATA_EXPERIMENT}"


def select_sources(settings: Settings, names: list[str] | None) -> list[DatasetSource]:
    known = {s.name: s for s in settings.ingest.datasets}
    if not names:
        return list(known.values())
    missing = [n for n in names if n not in known]
    if missing:
        raise DatasetError(f"ingest.datasets has no dataset named {missing} (known: {sorted(known)})")
    return [known[n] for n in names]


@task(name="ingest-dataset", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def ingest_dataset(source: DatasetSource, settings: Settings, limit: int | None) -> dict:
    """One source -> data/<name>/ (manifest, quarantine, linked images). Retried: I/O can flake."""
    log = get_run_logger()
    root = source_folder(source.kind, source.path)
    log.info("ingesting %s (%s) from %s", source.name, source.kind, root)
    result = ingest_source(
        source.name,
        source.kind,
        root,
        data_dir(),
        val_fraction=settings.ingest.val_fraction,
        seed=settings.seed,
        max_pixels=settings.images.max_pixels,
        min_side=settings.images.min_side,
        min_train_images=settings.validate_.min_images_per_train_identity,
        link_mode=settings.ingest.link_mode,
        box_clip_tolerance=settings.ingest.box_clip_tolerance_px,
        limit=limit,
        progress=lambda i, n: log.info("%s: %d/%d images inspected", source.name, i, n),
    )
    summary = result.summary()
    log.info("%s: %s", source.name, json.dumps(summary))
    for row in result.quarantine.to_dict("records"):
        log.warning("quarantined %s: [%s] %s", row["path"], row["code"], row["reason"])
    summary["quarantine"] = result.quarantine.to_dict("records")
    summary["clipped_boxes"] = result.clipped_boxes
    return summary


@task(name="version-data", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def version_data() -> str:
    """``dvc add data`` then ``dvc push`` to the configured remote; returns the data version."""
    version = data_version.add_data()
    data_version.push()
    get_run_logger().info("data version %s pushed", version)
    return version


@flow(name="ingest", log_prints=True)
def ingest_flow(datasets: list[str] | None = None, limit: int | None = None) -> dict:
    """Sources -> manifests under data/ -> a new DVC data version, recorded in MLflow."""
    settings = load_settings()
    sources = select_sources(settings, datasets)
    with tracked_run(_experiment(settings), "ingest", params=settings.flat(), data_version=data_version.read_version()):
        summaries = [ingest_dataset(s, settings, limit) for s in sources]
        version = version_data()
        set_data_version(version)
        for s in summaries:
            mlflow.log_metrics({f"{s['dataset']}.images": s["images"], f"{s['dataset']}.quarantined": s["quarantined"]})
        mlflow.log_dict({"data_version": version, "datasets": summaries}, "ingest_report.json")
    rows = [{k: v for k, v in s.items() if k not in ("quarantine", "clipped_boxes", "splits")} for s in summaries]
    create_table_artifact(key="ingest-summary", table=rows, description=f"data version {version}")
    quarantined = [q for s in summaries for q in s["quarantine"]]
    if quarantined:
        create_table_artifact(
            key="ingest-quarantine",
            table=quarantined,
            description="files that could not be used, kept under data/<name>/_quarantine/",
        )
    return {"data_version": version, "datasets": summaries}


@task(name="export-captures", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def export_captures_task(settings: Settings) -> list[dict]:
    """The confirmed captures of enrolled, consenting employees into each captures source's folder."""
    exported = export_all(FaceGate(settings))
    for e in exported:
        get_run_logger().info("captures export %s: %s", e["dataset"], e)
    return exported


@flow(name="export-captures", log_prints=True)
def export_captures_flow() -> list[dict]:
    """The export alone (``facegate data export-captures``); ingest and the chain read what it writes."""
    return export_captures_task(load_settings())


@task(name="validate-dataset", cache_policy=NO_CACHE)
def validate_dataset(source: DatasetSource, settings: Settings, gx_root: Path) -> ValidationReport:
    reference: CaptureReference | None = None
    if source.kind == CAPTURES_KIND:  # checked against who is enrolled and consents now
        reference = capture_reference(FaceGate(settings))
    report = validate_manifest(
        source.name,
        source.kind,
        read_manifest(data_dir(), source.name),
        read_quarantine(data_dir(), source.name),
        data_dir(),
        settings,
        gx_root,
        reference,
    )
    log = get_run_logger()
    (log.info if report.success else log.error)(report.describe())
    return report


@flow(name="validate", log_prints=True)
def validate_flow(datasets: list[str] | None = None) -> list[dict]:
    """GX suites on each manifest; a failure stops here with the failing expectations and rows."""
    settings = load_settings()
    sources = select_sources(settings, datasets)
    with (
        gx_project(state_dir()) as gx_root,  # removed after the run, failed or not (Data Docs are in MLflow)
        tracked_run(
            _experiment(settings), "validate", params=settings.flat(), data_version=data_version.read_version()
        ),
    ):
        reports = [validate_dataset(s, settings, gx_root) for s in sources]
        for r in reports:
            mlflow.log_metrics(
                {
                    f"{r.dataset}.validation_success": float(r.success),
                    f"{r.dataset}.failed_expectations": float(len(r.failures)),
                    f"{r.dataset}.quarantined": float(len(r.quarantined)),
                }
            )
        mlflow.log_dict([r.to_dict() for r in reports], "validation_report.json")
        docs = next((r.data_docs for r in reports if r.data_docs), None)
        if docs:
            mlflow.log_artifacts(docs, "data_docs")
        text = "\n\n".join(f"```\n{r.describe()}\n```" for r in reports)
        create_markdown_artifact(key="validation-report", markdown=f"# Validation\n\n{text}")
        failed = [r for r in reports if not r.success]
        if failed:
            raise ValidationFailed(
                "validation failed:\n" + "\n".join(r.describe() for r in failed),
                failures=[f.__dict__ for r in failed for f in r.failures],
            )
    return [r.to_dict() for r in reports]


@flow(name="data-pipeline", log_prints=True)
def data_pipeline_flow(datasets: list[str] | None = None, limit: int | None = None) -> dict:
    """The data half of the retraining chain: ingest -> validate, one parent MLflow run."""
    settings = load_settings()
    with tracked_run(
        _experiment(settings), "data-pipeline", params=settings.flat(), data_version=data_version.read_version()
    ):
        ingested = ingest_flow(datasets=datasets, limit=limit)
        set_data_version(ingested["data_version"])
        reports = validate_flow(datasets=datasets)
    return {"data_version": ingested["data_version"], "ingest": ingested["datasets"], "validation": reports}
