"""The retraining chain, one Prefect flow and one MLflow parent run:

    ingest -> validate -> augment -> train -> evaluate -> register -> gate -> gallery -> promote -> version

Wiring only. What it guarantees:
- A failed stage stops the chain with its name and reason (``StageFailed``), marks the MLflow run
  FAILED with a ``failed_stage`` tag, marks its registered version ``failed``, and leaves the champion
  and the gallery in service as they were: the new gallery is built and calibrated before anything in
  service moves, then the champion alias and the gallery's CURRENT pointer move together under the
  gallery lock (the alias is put back if the gallery switch fails). Only the last step, the DVC
  snapshot of the already switched gallery (retried), can fail after that: the new champion and its
  gallery then stay in service together, and the next write or chain snapshots them.
- The challenger is compared with the model in service on the same held-out pairs: the champion, or
  when the registry has none, the pretrained model the service falls back to. The winner ends up as
  champion (a pretrained winner is registered first, so the service is always a registered version).
- One chain at a time (a lock); a chain killed mid-way leaves nothing half-done that matters: its
  MLflow runs are closed as KILLED and its registered version marked ``abandoned`` by the next chain,
  which reuses every cached chip and feature and so resumes where the work was.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import mlflow
import torch
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from components import data_version, registry
from components.embedding.backbones import make_backbone
from components.embedding.model import EmbeddingModel
from components.embedding.train import TrainConfig
from components.enrolment import enrolled_names, reembed_all
from components.errors import FacegateError, RegistryError, RetrainBusy, StageFailed
from components.gallery import Gallery, GalleryLocked, gallery_lock
from components.paths import mlflow_tracking_uri, state_dir
from components.recognition import FaceRecognizer
from components.settings import Settings, load_settings
from components.tracking import ensure_experiment, set_data_version, tracked_run
from flows.data import ingest_flow, validate_flow
from flows.gallery import version_gallery
from flows.serving import (
    calibrated_gallery,
    embedder_version_label,
    gallery_store,
    load_registered_model,
    service_recognizer,
)
from flows.train import (
    TrainingData,
    augment_stage,
    evaluate_stage,
    heldout_embeddings,
    load_training_data,
    log_embedding_model,
    train_stage,
)

RETRAIN_EXPERIMENT = "retrain"


def experiment_name(settings: Settings) -> str:
    return f"{settings.tracking.experiment_prefix}-{RETRAIN_EXPERIMENT}"


@dataclass
class Incumbent:
    """The model in service: the champion's version, or None for the pretrained fallback."""

    model: EmbeddingModel
    version: str | None

    @property
    def label(self) -> str:
        return f"champion v{self.version}" if self.version else "pretrained (no champion yet)"


def same_backbone(a: EmbeddingModel, b: EmbeddingModel) -> bool:
    """True when both backbones hold identical weights (cached frozen features are then valid for both)."""
    if a.backbone.name != b.backbone.name:
        return False
    sa, sb = a.backbone.state_dict(), b.backbone.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def metric_tags(metrics: dict[str, float]) -> dict[str, str]:
    """Held-out metrics kept on the registered version, so `facegate models list` shows them."""
    return {k: f"{v:.6g}" for k, v in metrics.items() if k.startswith("val_")}


def close_stale_runs(settings: Settings) -> list[str]:
    """RUNNING runs in the retrain experiment belong to a chain that died (we hold the lock): KILLED."""
    client = mlflow.MlflowClient()
    exp_id = ensure_experiment(experiment_name(settings))
    stale = client.search_runs([exp_id], filter_string="attributes.status = 'RUNNING'")
    for run in stale:
        client.set_tag(run.info.run_id, "closed_by", "next retrain chain (this one died)")
        client.set_terminated(run.info.run_id, "KILLED")
    return [r.info.run_id for r in stale]


@task(name="register", cache_policy=NO_CACHE)
def register_stage(model_uri: str, run_id: str, name: str, tags: dict[str, str]) -> str:
    return registry.register(model_uri, name, run_id=run_id, tags=tags)


@task(name="gallery", cache_policy=NO_CACHE)
def gallery_stage(model: EmbeddingModel, label: str, settings: Settings, version: str | None,
                  heldout) -> tuple[FaceRecognizer, Gallery]:
    """The new model's calibrated, still empty gallery (nothing in service changes here)."""
    recognizer = FaceRecognizer(model, settings, label)
    fresh = calibrated_gallery(recognizer, settings, version, heldout)
    m = fresh.manifest
    mlflow.log_metrics({"tau": m.tau, "target_far": m.target_far, "achieved_far": m.achieved_far,
                        "achieved_tar": m.achieved_tar})
    get_run_logger().info("tau %.4f for FAR %.0e (achieved %.2e, TAR %.4f)", m.tau, m.target_far,
                          m.achieved_far, m.achieved_tar)
    return recognizer, fresh


@task(name="promote", cache_policy=NO_CACHE)
def promote_stage(recognizer: FaceRecognizer, fresh: Gallery, name: str, version: str, reason: str,
                  settings: Settings) -> dict:
    """Under the gallery lock: re-embed every enrolled employee, move ``champion``, switch the gallery.

    Re-embedding comes first (a bad stored photo fails here, before anything moves); if the gallery
    save fails after the alias moved, the alias goes back to the previous champion.
    """
    store = gallery_store()
    with gallery_lock(store.index_dir):
        reembed_all(store, recognizer, fresh, settings.images.max_pixels, enrolled_names(store))
        previous = registry.promote(name, version, reason)
        try:
            path = fresh.save(store.index_dir, keep=settings.gallery.keep_versions)
        except BaseException:
            registry.restore_champion(name, previous)
            raise
    service_recognizer.cache_clear()  # this process now serves the new champion
    mlflow.log_metrics({"gallery_employees": float(fresh.n_employees), "gallery_vectors": float(fresh.n_vectors)})
    return {"previous_champion": previous, "champion": version, "gallery_index_version": path.name,
            "employees": fresh.n_employees}


def _incumbent(settings: Settings, backbone: str) -> Incumbent:
    champ = registry.champion(settings.registry.embedder_model)
    if champ is not None:
        return Incumbent(load_registered_model(settings.registry.embedder_model, champ.version), champ.version)
    return Incumbent(EmbeddingModel(make_backbone(backbone)), None)


@flow(name="retrain", log_prints=True)
def retrain_flow(datasets: list[str] | None = None, limit: int | None = None) -> dict:
    """The whole chain on the data named in params (``retrain.dataset`` is trained and evaluated on)."""
    settings = load_settings()
    log = get_run_logger()
    try:
        with gallery_lock(state_dir() / "retrain", timeout=0):
            return _chain(settings, datasets, limit, log)
    except GalleryLocked:
        raise RetrainBusy(f"{state_dir() / 'retrain'}: another retraining chain is running") from None


def _chain(settings: Settings, datasets: list[str] | None, limit: int | None, log) -> dict:
    name = settings.registry.embedder_model
    backbone, mode = settings.embedding.backbone, settings.embedding.mode
    mlflow.set_tracking_uri(mlflow_tracking_uri())
    stale = close_stale_runs(settings)
    abandoned = registry.abandon_pending(name)
    if stale or abandoned:
        log.warning("a previous chain died: closed runs %s, abandoned versions %s", stale, abandoned)
    cfg = TrainConfig.from_settings(settings)
    params = {**settings.flat(), "run.backbone": backbone, "run.mode": mode, "run.limit": limit,
              "run.datasets": ",".join(datasets or [s.name for s in settings.ingest.datasets])}
    stage, version, result = "ingest", None, {"model": name}
    registered: list[str] = []  # versions this chain registered: any still pending at a failure is marked failed
    started = time.perf_counter()
    from prefect.runtime import deployment, flow_run

    trigger = {"prefect_flow_run_id": str(flow_run.id), "prefect_deployment": deployment.name or "none"}
    with tracked_run(experiment_name(settings), f"retrain-{backbone}-{mode}", params=params,
                     data_version=data_version.read_version(), tags=trigger) as parent:
        try:
            ingested = ingest_flow(datasets=datasets, limit=limit)
            data_ver = ingested["data_version"]
            set_data_version(data_ver)

            stage = "validate"
            validate_flow(datasets=datasets)

            stage = "augment"
            data: TrainingData = load_training_data(settings.retrain.dataset, settings)
            with tracked_run("", "augment", data_version=data_ver):
                aug_feats = augment_stage(data, backbone, mode, settings)

            stage = "train"
            with tracked_run("", "train", data_version=data_ver,
                             params={f"run.train.{k}": v for k, v in cfg.__dict__.items()}) as train_run:
                trained = train_stage(data, backbone, mode, cfg, settings, aug_feats)
                logged = log_embedding_model(trained.model)

            stage = "evaluate"
            with tracked_run("", "evaluate-challenger", data_version=data_ver):
                challenger_metrics = evaluate_stage(trained.model, data, settings, "challenger",
                                                    trained.val_feats, trained.val_flip)
            incumbent = _incumbent(settings, backbone)
            frozen_ok = trained.val_feats is not None and same_backbone(incumbent.model, trained.model)
            with tracked_run("", "evaluate-incumbent", data_version=data_ver,
                             tags={"incumbent": incumbent.label}):
                incumbent_metrics = evaluate_stage(
                    incumbent.model, data, settings, incumbent.label,
                    trained.val_feats if frozen_ok else None, trained.val_flip if frozen_ok else None)
            mlflow.log_metrics(challenger_metrics)
            mlflow.log_metrics({f"incumbent_{k}": v for k, v in incumbent_metrics.items()})

            stage = "register"
            version = register_stage(logged.model_uri, train_run.info.run_id, name,
                                     {"data_version": data_ver, "backbone": backbone, "mode": mode,
                                      "retrain_run_id": parent.info.run_id, "source": "trained",
                                      **metric_tags(challenger_metrics)})
            registered.append(version)
            mlflow.set_tag("challenger_version", version)

            stage = "gate"
            decision = registry.gate(challenger_metrics, incumbent_metrics, settings.registry.gate_metric,
                                     settings.registry.min_improvement,
                                     f"champion v{incumbent.version}" if incumbent.version else "the pretrained model")
            log.info("gate: %s", decision.reason)
            mlflow.log_metrics({"gate_promoted": float(decision.promote), "gate_delta": float(decision.delta)})
            mlflow.set_tags({"gate_reason": decision.reason, "incumbent": incumbent.label})
            winner, winner_model, winner_trained = version, trained.model, True
            if not decision.promote:
                registry.set_gate_state(name, version, "rejected", decision.reason)
                if incumbent.version is not None:
                    winner = None  # the champion stays, and so does its gallery
                else:  # the pretrained model in service won: register it so the service is a registered version
                    with tracked_run("", "register-pretrained", data_version=data_ver) as base_run:
                        base_logged = log_embedding_model(incumbent.model)
                    winner = register_stage(base_logged.model_uri, base_run.info.run_id, name,
                                            {"data_version": data_ver, "backbone": backbone, "mode": "pretrained",
                                             "retrain_run_id": parent.info.run_id, "source": "pretrained",
                                             **metric_tags(incumbent_metrics)})
                    registered.append(winner)
                    winner_model, winner_trained = incumbent.model, False

            gallery_version = None
            if winner is not None:
                stage = "gallery"
                label = embedder_version_label(name, winner)
                heldout = None
                if settings.gallery.calibration_dataset == settings.retrain.dataset:
                    feats_ok = winner_trained or frozen_ok
                    heldout = (heldout_embeddings(winner_model, data, settings.embedding.flip_tta,
                                                  trained.val_feats if feats_ok else None,
                                                  trained.val_flip if feats_ok else None), data.val_labels)
                with tracked_run("", "gallery", data_version=data_ver):
                    recognizer, fresh = gallery_stage(winner_model, label, settings, data_ver, heldout)

                    stage = "promote"
                    promoted = promote_stage(recognizer, fresh, name, winner,
                                             decision.reason if winner_trained else
                                             f"pretrained model kept: {decision.reason}", settings)
                    log.info("champion: version %s (was %s)", winner, promoted["previous_champion"])

                    stage = "version"
                    gallery_version = version_gallery()
                    mlflow.set_tag("gallery_version", gallery_version)
                result.update(promoted)
            champ = registry.champion(name)
            mlflow.set_tags({"champion_version": champ.version if champ else "none",
                             "gallery_version": gallery_version or "unchanged"})
            result.update({
                "run_id": parent.info.run_id, "experiment": experiment_name(settings), "data_version": data_ver,
                "challenger_version": version, "promoted": winner is not None and winner == version,
                "champion_version": champ.version if champ else None, "gate_reason": decision.reason,
                "gate_metric": decision.metric, "challenger_metrics": challenger_metrics,
                "incumbent": incumbent.label, "incumbent_metrics": incumbent_metrics,
                "gallery_version": gallery_version, "wall_s": round(time.perf_counter() - started, 1),
            })
        except BaseException as exc:
            reason = exc.message if isinstance(exc, FacegateError) else f"{type(exc).__name__}: {exc}"
            mlflow.set_tags({"failed_stage": stage, "error": reason[:5000]})
            for v in registered:
                if registry.get_version(name, v).tags.get(registry.GATE_TAG) == "pending":
                    registry.set_gate_state(name, v, "failed", f"stage {stage}: {reason}")
            log.error("retrain failed at stage %s: %s", stage, reason)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise StageFailed(stage, reason) from exc
    return result


@flow(name="switch-champion", log_prints=True)
def switch_champion_flow(version: str | None = None, rollback: bool = False, reason: str = "") -> dict:
    """A human's promotion (``version``) or rollback: the model and its re-embedded gallery move together.

    No gate: the operator decides. The gallery is calibrated for the new champion and every enrolled
    employee re-embedded before the alias moves, exactly as in the chain.
    """
    settings = load_settings()
    name = settings.registry.embedder_model
    current = registry.champion(name)
    if rollback:
        if version is not None:
            raise RegistryError("give either a version or rollback, not both")
        version = registry.rollback_target(name)
    elif version is None:
        raise RegistryError("which version? (`facegate models list` shows them)")
    target = registry.get_version(name, version)
    why = reason or (f"rollback from v{current.version}" if rollback and current else "promoted by hand")
    data_ver = data_version.read_version()
    with tracked_run(experiment_name(settings), "rollback" if rollback else "promote", data_version=data_ver,
                     params={"version": target.version, "previous": current.version if current else None}):
        model = load_registered_model(name, target.version)
        recognizer, fresh = gallery_stage(model, embedder_version_label(name, target.version), settings,
                                          data_ver, None)
        promoted = promote_stage(recognizer, fresh, name, target.version, why, settings)
        if rollback and current is not None:
            registry.mark_rolled_back(name, current.version, why)
        gallery_version = version_gallery()
        mlflow.set_tags({"champion_version": target.version, "gallery_version": gallery_version})
    return {**promoted, "gallery_version": gallery_version, "reason": why}
