"""The retraining chain, one Prefect flow and one MLflow parent run:

    (export captures) -> ingest -> validate -> augment -> train -> evaluate -> register -> gate -> gallery
    -> promote -> version

Wiring only: ``CHAIN`` lists the stage functions; each takes the ``ChainState`` and runs its tasks,
subflows and nested MLflow runs under ``facegate.components.lifecycle.retrain.stage_guard``. What it guarantees:
- A failed stage stops the chain with its name and reason (``StageFailed``), marks the MLflow run
  FAILED with a ``failed_stage`` tag, marks its registered version ``failed``, and leaves the champion
  and the gallery in service as they were: the new gallery is built and calibrated before anything in
  service moves, then the champion alias and the gallery's CURRENT pointer move together under the
  gallery lock (the alias is put back if the gallery switch fails). Only the last step, the DVC
  snapshot of the already switched gallery (retried), can fail after that: the new champion and its
  gallery then stay in service together, and the next write or chain snapshots them.
- The deployment feeds the loop: its confirmed captures (consenting, enrolled employees) are exported
  before anything else (and before the skip check), ingested and validated as the dataset
  ``retrain.captures_dataset``; their training split trains beside ``retrain.dataset``'s, their held-out
  employees give ``val_deploy_*``, and the gate refuses a challenger that regresses on them. Without
  captures the chain is what it was.
- The challenger is compared with the model in service on the same held-out pairs: the champion, or
  when the registry has none, the pretrained model the service falls back to. The winner ends up as
  champion (a pretrained winner is registered first, so the service is always a registered version).
- One chain at a time (a lock); a chain killed mid-way leaves nothing half-done that matters: its
  MLflow runs are closed as KILLED and its registered version marked ``abandoned`` by the next chain,
  which reuses every cached chip and feature and so resumes where the work was.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import mlflow
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from facegate.components.core.datasets import CAPTURES_KIND
from facegate.components.core.errors import RetrainBusy
from facegate.components.core.locks import file_lock
from facegate.components.core.paths import state_dir, use_mlflow_store
from facegate.components.core.settings import Settings, load_settings
from facegate.components.embedding.model import EmbeddingModel
from facegate.components.embedding.train import TrainConfig
from facegate.components.gallery import Gallery
from facegate.components.lifecycle import data_version, registry
from facegate.components.lifecycle.model_loading import embedder_version_label
from facegate.components.lifecycle.retrain import (
    ChainState,
    close_stale_runs,
    current_incumbent,
    experiment_name,
    stage_guard,
)
from facegate.components.lifecycle.retrain_skip import champion_chain_tags, current_fingerprints, skip_reason
from facegate.components.lifecycle.tracking import log_torch_model, set_data_version, tracked_run
from facegate.components.lifecycle.unit_grids import log_embedder_grids
from facegate.components.recognition.recognizer import FaceRecognizer
from facegate.components.service.facade import FaceGate
from facegate.flows.data import export_captures_task, ingest_flow, select_sources, validate_flow
from facegate.flows.gallery import version_gallery
from facegate.flows.train import augment_stage, evaluate_stage, load_training_data, train_stage

# ------------------------------------------------------------------------------------------ tasks


@task(name="register", cache_policy=NO_CACHE)
def register_stage(model_uri: str, run_id: str, name: str, tags: dict[str, str]) -> str:
    return registry.register(model_uri, name, run_id=run_id, tags=tags)


@task(name="gallery", cache_policy=NO_CACHE)
def gallery_stage(
    model: EmbeddingModel, label: str, settings: Settings, version: str | None, heldout
) -> tuple[FaceRecognizer, Gallery]:
    """The new model's calibrated, still empty gallery (nothing in service changes here)."""
    recognizer, fresh = FaceGate(settings).prepare_gallery(model, label, version, heldout)
    m = fresh.manifest
    mlflow.log_metrics(
        {"tau": m.tau, "target_far": m.target_far, "achieved_far": m.achieved_far, "achieved_tar": m.achieved_tar}
    )
    get_run_logger().info(
        "tau %.4f for FAR %.0e (achieved %.2e, TAR %.4f)", m.tau, m.target_far, m.achieved_far, m.achieved_tar
    )
    return recognizer, fresh


@task(name="promote", cache_policy=NO_CACHE)
def promote_stage(
    recognizer: FaceRecognizer, fresh: Gallery, version: str, reason: str, settings: Settings, actor: str
) -> dict:
    """Under the gallery lock: re-embed every enrolled employee, move ``champion``, switch the gallery;
    the audit row names ``actor`` (the chain's run), not the account the worker runs as."""
    promoted = FaceGate(settings).promote(recognizer, fresh, version, reason, actor=actor)
    mlflow.log_metrics({"gallery_employees": float(fresh.n_employees), "gallery_vectors": float(fresh.n_vectors)})
    return promoted


# ----------------------------------------------------------------------------------------- stages


def ingest(s: ChainState) -> None:
    s.data_version = ingest_flow(datasets=s.datasets, limit=s.limit)["data_version"]
    set_data_version(s.data_version)


def validate(s: ChainState) -> None:
    validate_flow(datasets=s.datasets)


def chain_captures(settings: Settings, datasets: list[str] | None) -> str | None:
    """The captures dataset this chain ingests and trains with (``retrain.captures_dataset``), if any."""
    name = settings.retrain.captures_dataset
    chosen = [c for c in select_sources(settings, datasets) if c.name == name and c.kind == CAPTURES_KIND]
    return name if chosen else None


def augment(s: ChainState) -> None:
    s.data = load_training_data(s.settings.retrain.dataset, s.settings, deploy=chain_captures(s.settings, s.datasets))
    with tracked_run("", "augment", data_version=s.data_version):
        s.aug_feats = augment_stage(s.data, s.backbone, s.mode, s.settings)


def train(s: ChainState) -> None:
    with tracked_run(
        "", "train", data_version=s.data_version, params={f"run.train.{k}": v for k, v in s.cfg.__dict__.items()}
    ) as run:
        s.trained = train_stage(s.data, s.backbone, s.mode, s.cfg, s.settings, s.aug_feats)
        s.model_uri, s.train_run_id = log_torch_model(s.trained.model).model_uri, run.info.run_id


def evaluate(s: ChainState) -> None:
    with tracked_run("", "evaluate-challenger", data_version=s.data_version):
        s.challenger_metrics = evaluate_stage(
            s.trained.model, s.data, s.settings, "challenger", s.trained.val_feats, s.trained.val_flip
        )
    s.set_incumbent(current_incumbent(s.settings, s.backbone))
    with tracked_run("", "evaluate-incumbent", data_version=s.data_version, tags={"incumbent": s.incumbent.label}):
        s.incumbent_metrics = evaluate_stage(
            s.incumbent.model, s.data, s.settings, s.incumbent.label, *s.incumbent_features()
        )
    mlflow.log_metrics(s.challenger_metrics)
    mlflow.log_metrics({f"incumbent_{k}": v for k, v in s.incumbent_metrics.items()})


def register(s: ChainState) -> None:
    s.version = register_stage(s.model_uri, s.train_run_id, s.name, s.version_tags("trained", s.challenger_metrics))
    s.registered.append(s.version)
    mlflow.set_tag("challenger_version", s.version)
    log_embedder_grids(
        s.trained.model,
        embedder_version_label(s.name, s.version),
        s.data,
        s.train_run_id,
        s.settings,
        get_run_logger().warning,
    )


def judge(s: ChainState) -> None:
    decision = s.judge()
    get_run_logger().info("gate: %s", decision.reason)
    mlflow.log_metrics({"gate_promoted": float(decision.promote), "gate_delta": float(decision.delta)})
    deploy = [m for m in s.settings.registry.deploy_guard_metrics if m in s.challenger_metrics]
    mlflow.set_tags(
        {
            "gate_reason": decision.reason,
            "incumbent": s.incumbent.label,
            "gate_deploy_guard": ",".join(deploy) if deploy else "none (no held-out captures)",
        }
    )
    if s.accept(decision):  # the pretrained model in service won: registered, so the service is a version
        with tracked_run("", "register-pretrained", data_version=s.data_version) as base_run:
            base_uri = log_torch_model(s.incumbent.model).model_uri
        s.winner = register_stage(
            base_uri, base_run.info.run_id, s.name, s.version_tags("pretrained", s.incumbent_metrics)
        )
        s.registered.append(s.winner)
        log_embedder_grids(
            s.incumbent.model,
            embedder_version_label(s.name, s.winner),
            s.data,
            base_run.info.run_id,
            s.settings,
            get_run_logger().warning,
        )


def calibrate_gallery(s: ChainState) -> None:
    """Opens the ``gallery`` MLflow run that the promote and version stages log to as well."""
    label = embedder_version_label(s.name, s.winner)
    heldout = s.winner_heldout()
    s.runs.enter_context(tracked_run("", "gallery", data_version=s.data_version))
    s.recognizer, s.fresh_gallery = gallery_stage(s.winner_model, label, s.settings, s.data_version, heldout)


def promote(s: ChainState) -> None:
    s.promoted = promote_stage(s.recognizer, s.fresh_gallery, s.winner, s.promotion_reason, s.settings, s.actor)
    get_run_logger().info("champion: version %s (was %s)", s.winner, s.promoted["previous_champion"])


def snapshot_gallery(s: ChainState) -> None:
    s.gallery_version = version_gallery()
    mlflow.set_tag("gallery_version", s.gallery_version)
    s.runs.close()  # the gallery run ends with this stage


class Stage(NamedTuple):
    name: str
    run: Callable[[ChainState], None]
    needs_winner: bool = False  # skipped when the champion stays (and so does its gallery)


CHAIN: tuple[Stage, ...] = (
    Stage("ingest", ingest),
    Stage("validate", validate),
    Stage("augment", augment),
    Stage("train", train),
    Stage("evaluate", evaluate),
    Stage("register", register),
    Stage("gate", judge),
    Stage("gallery", calibrate_gallery, needs_winner=True),
    Stage("promote", promote, needs_winner=True),
    Stage("version", snapshot_gallery, needs_winner=True),
)


def summarise(s: ChainState) -> dict:
    champ = registry.champion(s.name)
    mlflow.set_tags(
        {"champion_version": champ.version if champ else "none", "gallery_version": s.gallery_version or "unchanged"}
    )
    return s.result(champ.version if champ else None, experiment_name(s.settings))


# ------------------------------------------------------------------------------------------ flows


@flow(name="retrain", log_prints=True)
def retrain_flow(datasets: list[str] | None = None, limit: int | None = None, force: bool = False) -> dict:
    """The whole chain on the data named in params (``retrain.dataset`` is trained and evaluated on);
    skipped in seconds when data, params and code are the champion's chain's (lifecycle/retrain_skip.py)
    unless ``force``."""
    settings = load_settings()
    with file_lock(state_dir() / "retrain", timeout=0, error=_busy):
        return _chain(settings, datasets, limit, force)


def _busy(lock_dir) -> RetrainBusy:
    return RetrainBusy(f"{lock_dir}: another retraining chain is running")


def _skipped(settings: Settings, reason: str, tags: dict[str, str], started: float) -> dict:
    """The skipped chain as an MLflow run of its own (FINISHED, ``skipped``, ``skip_reason``)."""
    name = settings.registry.embedder_model
    with tracked_run(
        experiment_name(settings),
        "retrain-skipped",
        data_version=data_version.read_version(),
        tags={**tags, "skipped": "true", "skip_reason": reason},
    ) as run:
        champ = registry.champion(name)
        wall_s = round(time.perf_counter() - started, 1)
        mlflow.log_metric("skipped_wall_s", wall_s)
    get_run_logger().info("retrain skipped: %s", reason)
    return {
        "model": name,
        "skipped": True,
        "skip_reason": reason,
        "run_id": run.info.run_id,
        "experiment": experiment_name(settings),
        "data_version": data_version.read_version(),
        "challenger_version": None,
        "promoted": False,
        "champion_version": champ.version if champ else None,
        "gallery_version": None,
        "wall_s": wall_s,
    }


def chain_params(settings: Settings, datasets: list[str] | None, limit: int | None) -> dict:
    """The chain run's MLflow params: every params.yaml key and the run's own options."""
    return {
        **settings.flat(),
        "run.backbone": settings.embedding.backbone,
        "run.mode": settings.embedding.mode,
        "run.limit": limit,
        "run.datasets": ",".join(datasets or [s.name for s in settings.ingest.datasets]),
    }


def _chain(settings: Settings, datasets: list[str] | None, limit: int | None, force: bool = False) -> dict:
    log, started = get_run_logger(), time.perf_counter()
    name, backbone, mode = settings.registry.embedder_model, settings.embedding.backbone, settings.embedding.mode
    use_mlflow_store()
    stale, abandoned = close_stale_runs(settings), registry.abandon_pending(name)
    if stale or abandoned:
        log.warning("a previous chain died: closed runs %s, abandoned versions %s", stale, abandoned)
    cfg = TrainConfig.from_settings(settings)
    params = chain_params(settings, datasets, limit)
    from prefect.runtime import deployment, flow_run  # heavy: Prefect takes seconds to import; only flow runs need it

    trigger = {"prefect_flow_run_id": str(flow_run.id), "prefect_deployment": deployment.name or "none"}
    if chain_captures(settings, datasets):  # before the skip check: a newly confirmed capture is new data
        exported = export_captures_task(settings)
        trigger["captures_exported"] = str(sum(e["exported"] for e in exported))
    inputs = current_fingerprints(data_version.read_version(), select_sources(settings, datasets), params)
    trigger.update({**inputs.tags(), "forced": str(force).lower()})
    reason = None if force else skip_reason(inputs, *champion_chain_tags(name))
    if reason:
        return _skipped(settings, reason, trigger, started)
    with tracked_run(
        experiment_name(settings),
        f"retrain-{backbone}-{mode}",
        params=params,
        data_version=data_version.read_version(),
        tags=trigger,
    ) as parent:
        state = ChainState(settings, cfg, parent.info.run_id, datasets, limit)
        with state.runs:  # a run left open by a failed stage ends FAILED with it
            for stage in CHAIN:
                if stage.needs_winner and state.winner is None:
                    continue
                with stage_guard(state, stage.name, log.error):
                    stage.run(state)
        with stage_guard(state, state.stage, log.error):
            return summarise(state)


@flow(name="switch-champion", log_prints=True)
def switch_champion_flow(version: str | None = None, rollback: bool = False, reason: str = "") -> dict:
    """A human's promotion (``version``) or rollback: the model and its re-embedded gallery move together.

    No gate: the operator decides. ``FaceGate.switch_champion`` calibrates the gallery for the new
    champion and re-embeds every enrolled employee before the alias moves, exactly as in the chain.
    """
    settings = load_settings()
    service = FaceGate(settings)
    data_ver = data_version.read_version()
    with tracked_run(experiment_name(settings), "rollback" if rollback else "promote", data_version=data_ver):
        switched = service.switch_champion(version, rollback=rollback, reason=reason, data_version=data_ver)
        mlflow.log_params({"version": switched["champion"], "previous": switched["previous"]})
        g = service.snapshot()
        m = g.manifest
        mlflow.log_metrics(
            {
                "tau": m.tau,
                "target_far": m.target_far,
                "achieved_far": m.achieved_far,
                "achieved_tar": m.achieved_tar,
                "gallery_employees": float(g.n_employees),
                "gallery_vectors": float(g.n_vectors),
            }
        )
        gallery_version = version_gallery()
        mlflow.set_tags({"champion_version": switched["champion"], "gallery_version": gallery_version})
    promoted = {k: v for k, v in switched.items() if k not in ("reason", "previous", "tau")}
    return {**promoted, "gallery_version": gallery_version, "reason": switched["reason"]}
