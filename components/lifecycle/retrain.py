"""The retraining chain's logic, apart from its Prefect wiring (flows/retrain.py).

The chain is a list of stages passing one ``ChainState``; each stage runs under ``stage_guard``, the
one place that says what a failure means: the chain's MLflow run gets a ``failed_stage`` tag and the
error, every version this chain registered that is still ``pending`` becomes ``failed``, and
``StageFailed(stage, reason)`` stops the chain (KeyboardInterrupt and SystemExit go on as themselves).
Nothing in service moves before the promote stage, so a failure leaves the champion and the gallery
as they were. Here also: who the incumbent is, when cached features are valid for it, the gate's
verdict and what it means for the winner, and the chain's result.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from facegate.components.core.errors import FacegateError, StageFailed
from facegate.components.core.settings import Settings
from facegate.components.embedding.model import EmbeddingModel
from facegate.components.embedding.train import TrainConfig
from facegate.components.lifecycle import registry
from facegate.components.lifecycle.backends import explain
from facegate.components.lifecycle.model_loading import incumbent_model
from facegate.components.lifecycle.stages import Trained, heldout_embeddings
from facegate.components.lifecycle.tracking import ensure_experiment
from facegate.components.lifecycle.training_data import TrainingData

RETRAIN_EXPERIMENT = "retrain"
Log = Callable[[str], None]


def experiment_name(settings: Settings) -> str:
    return f"{settings.tracking.experiment_prefix}-{RETRAIN_EXPERIMENT}"


# ------------------------------------------------------------------------------------ the incumbent


@dataclass
class Incumbent:
    """The model in service: the champion's version, or None for the pretrained fallback."""

    model: EmbeddingModel
    version: str | None

    @property
    def label(self) -> str:
        return f"champion v{self.version}" if self.version else "pretrained (no champion yet)"

    @property
    def gate_name(self) -> str:
        """How the gate's reason names it."""
        return f"champion v{self.version}" if self.version else "the pretrained model"


def current_incumbent(settings: Settings, backbone: str) -> Incumbent:
    """The registry's champion, or the pretrained ``backbone`` the service falls back to without one."""
    return Incumbent(*incumbent_model(settings, backbone))


def same_backbone(a: EmbeddingModel, b: EmbeddingModel) -> bool:
    """True when both backbones hold identical weights (cached frozen features are then valid for both)."""
    if a.backbone.name != b.backbone.name:
        return False
    sa, sb = a.backbone.state_dict(), b.backbone.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def metric_tags(metrics: dict[str, float]) -> dict[str, str]:
    """Held-out metrics kept on the registered version, so `facegate models list` shows them."""
    return {k: f"{v:.6g}" for k, v in metrics.items() if k.startswith("val_")}


# -------------------------------------------------------------------------------------- the state

T = TypeVar("T")


def _from_stage(value: T | None, stage: str) -> T:
    """What stage ``stage`` left on the state: the chain runs its stages in order (CHAIN), so a later
    stage finding nothing there is a bug in the chain, not in its data."""
    if value is None:
        raise RuntimeError(f"retrain chain: read the output of stage {stage!r} before that stage ran")
    return value


@dataclass
class ChainState:
    """What the stages hand each other, filled in stage by stage."""

    settings: Settings
    cfg: TrainConfig
    run_id: str  # the chain's parent MLflow run
    datasets: list[str] | None = None
    limit: int | None = None
    started: float = field(default_factory=time.perf_counter)
    stage: str = ""  # the stage running, or the last one that ran
    runs: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)  # MLflow runs spanning stages
    registered: list[str] = field(default_factory=list)  # versions this chain registered
    data_version: str | None = None
    data: TrainingData | None = None
    aug_feats: list[np.ndarray] = field(default_factory=list)
    trained: Trained | None = None
    model_uri: str | None = None  # the challenger as logged in its train run
    train_run_id: str | None = None
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    incumbent: Incumbent | None = None
    frozen_ok: bool = False  # the challenger's cached frozen features are the incumbent's too
    incumbent_metrics: dict[str, float] = field(default_factory=dict)
    version: str | None = None  # the challenger's registered version
    decision: registry.GateDecision | None = None
    winner: str | None = None  # the version to make champion; None: the champion stays
    winner_model: EmbeddingModel | None = None
    winner_trained: bool = True  # False: the pretrained incumbent won and was registered
    recognizer: Any = None  # the winner's FaceRecognizer and its calibrated, still empty gallery
    fresh_gallery: Any = None
    promoted: dict = field(default_factory=dict)
    gallery_version: str | None = None

    @property
    def name(self) -> str:
        return self.settings.registry.embedder_model

    @property
    def backbone(self) -> str:
        return self.settings.embedding.backbone

    @property
    def mode(self) -> str:
        return self.settings.embedding.mode

    # -- evaluate
    def set_incumbent(self, incumbent: Incumbent) -> None:
        self.incumbent = incumbent
        trained = _from_stage(self.trained, "train")
        self.frozen_ok = trained.val_feats is not None and same_backbone(incumbent.model, trained.model)

    def incumbent_features(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Held-out frozen features to reuse for the incumbent (None: it embeds the chips itself)."""
        if not self.frozen_ok:
            return None, None
        trained = _from_stage(self.trained, "train")
        return trained.val_feats, trained.val_flip

    # -- register and gate
    def version_tags(self, source: str, metrics: dict[str, float]) -> dict[str, str]:
        # str(): what MLflow stores of a tag value anyway
        return {
            "data_version": str(self.data_version),
            "backbone": self.backbone,
            "mode": self.mode if source == "trained" else "pretrained",
            "retrain_run_id": self.run_id,
            "source": source,
            **metric_tags(metrics),
        }

    def judge(self) -> registry.GateDecision:
        """The gate: the challenger against the incumbent, on the same held-out pairs (and, when the chain
        has held-out captures, no regression on the deployment's own faces)."""
        g = self.settings.registry
        gate_name = _from_stage(self.incumbent, "evaluate").gate_name
        return registry.gate(
            self.challenger_metrics,
            self.incumbent_metrics,
            g.gate_metric,
            g.min_improvement,
            gate_name,
            guard_metric=g.guard_metric,
            max_regression=g.max_regression,
            deploy_metrics=g.deploy_guard_metrics,
            deploy_max_regression=g.deploy_max_regression,
        )

    def accept(self, decision: registry.GateDecision) -> bool:
        """Record the verdict; True when the pretrained incumbent won and must be registered to serve.

        A winning challenger becomes the winner; a losing one is marked ``rejected`` and the champion
        (and its gallery) stays, or, without a champion, the pretrained model in service wins.
        """
        self.decision = decision
        challenger = _from_stage(self.trained, "train").model
        self.winner, self.winner_model, self.winner_trained = self.version, challenger, True
        if decision.promote:
            return False
        registry.set_gate_state(self.name, _from_stage(self.version, "register"), "rejected", decision.reason)
        incumbent = _from_stage(self.incumbent, "evaluate")
        if incumbent.version is not None:
            self.winner = None
            return False
        self.winner, self.winner_model, self.winner_trained = None, incumbent.model, False
        return True

    # -- gallery and promote
    def winner_heldout(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The winner's held-out embeddings and identities when the gallery calibrates on the chain's
        dataset (from cached features when they are the winner's), so calibration embeds nothing again."""
        s = self.settings
        if s.gallery.calibration_dataset != s.retrain.dataset:
            return None
        val_feats = val_flip = None
        if self.winner_trained or self.frozen_ok:
            trained = _from_stage(self.trained, "train")
            val_feats, val_flip = trained.val_feats, trained.val_flip
        data = _from_stage(self.data, "augment")
        return (
            heldout_embeddings(_from_stage(self.winner_model, "gate"), data, s.embedding.flip_tta, val_feats, val_flip),
            data.val_labels,
        )

    @property
    def actor(self) -> str:
        """Who the audit row of this chain's promotion names: the chain's MLflow parent run (tagged with
        its Prefect flow run), so an auditor finds the run, its data version and its gate decision."""
        return f"chain:{self.run_id}"

    @property
    def promotion_reason(self) -> str:
        reason = _from_stage(self.decision, "gate").reason
        return reason if self.winner_trained else f"pretrained model kept: {reason}"

    # -- the end
    def result(self, champion_version: str | None, experiment: str) -> dict:
        decision, incumbent = _from_stage(self.decision, "gate"), _from_stage(self.incumbent, "evaluate")
        return {
            "model": self.name,
            **self.promoted,
            "run_id": self.run_id,
            "experiment": experiment,
            "data_version": self.data_version,
            "challenger_version": self.version,
            "promoted": self.winner is not None and self.winner == self.version,
            "champion_version": champion_version,
            "gate_reason": decision.reason,
            "gate_metric": decision.metric,
            "challenger_metrics": self.challenger_metrics,
            "incumbent": incumbent.label,
            "incumbent_metrics": self.incumbent_metrics,
            "gallery_version": self.gallery_version,
            "wall_s": round(time.perf_counter() - self.started, 1),
        }


# ---------------------------------------------------------------------------------- the one guard


def failure_reason(exc: BaseException) -> str:
    """The error in one line, prefixed with the backing service that is down, when one is (server mode:
    the MLflow or Prefect server, their Postgres, the S3 object store; ``facegate.components.lifecycle.backends``)."""
    reason = exc.message if isinstance(exc, FacegateError) else f"{type(exc).__name__}: {exc}"
    return reason if isinstance(exc, (KeyboardInterrupt, SystemExit)) else explain(reason)


@contextlib.contextmanager
def stage_guard(state: ChainState, stage: str, log: Log = lambda message: None) -> Iterator[None]:
    """Run one stage of the chain; on any failure: tag the chain's run, fail its pending versions, raise
    ``StageFailed(stage, reason)`` (KeyboardInterrupt and SystemExit are re-raised as themselves)."""
    import mlflow  # heavy: MLflow takes seconds to import; only the paths that track or load models need it

    state.stage = stage
    try:
        yield
    except BaseException as exc:
        reason = failure_reason(exc)
        log(f"retrain failed at stage {stage}: {reason}")
        try:  # best effort: with the tracking server or its database down, the failure itself must still show
            client = mlflow.MlflowClient()
            client.set_tag(state.run_id, "failed_stage", stage)
            client.set_tag(state.run_id, "error", reason[:5000])
            for v in state.registered:
                if registry.get_version(state.name, v).tags.get(registry.GATE_TAG) == "pending":
                    registry.set_gate_state(state.name, v, "failed", f"stage {stage}: {reason}")
        except Exception as record_exc:  # noqa: BLE001 - reported, and the stage's own error goes on
            log(f"could not record the failure in MLflow: {type(record_exc).__name__}: {str(record_exc)[:300]}")
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise StageFailed(stage, reason) from exc


def close_stale_runs(settings: Settings) -> list[str]:
    """RUNNING runs in the retrain experiment belong to a chain that died (we hold the lock): KILLED."""
    import mlflow  # heavy: MLflow takes seconds to import; only the paths that track or load models need it

    client = mlflow.MlflowClient()
    exp_id = ensure_experiment(experiment_name(settings))
    stale = client.search_runs([exp_id], filter_string="attributes.status = 'RUNNING'")
    for run in stale:
        client.set_tag(run.info.run_id, "closed_by", "next retrain chain (this one died)")
        client.set_terminated(run.info.run_id, "KILLED")
    return [r.info.run_id for r in stale]
