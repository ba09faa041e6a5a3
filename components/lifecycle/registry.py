"""The MLflow model registry with champion / challenger aliases, and the promotion gate.

Why aliases: the service loads ``models:/<name>@champion`` and never a version number, so promoting or
rolling back is one alias move and the gallery follows it. Each registered model keeps its promotion
history in a tag (``champion_history``, oldest first) so ``rollback`` knows where to go back to, and
each version carries a ``gate`` tag (pending, promoted, rejected, failed, abandoned) so a version left
behind by a crashed chain is visible as such instead of looking like a candidate.

No Prefect here: flows and the CLI call these functions.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from facegate.components.core.errors import RegistryError
from facegate.components.core.paths import configure_environment, use_mlflow_store

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "champion_history"
GATE_TAG = "gate"
GATE_STATES = ("pending", "promoted", "rejected", "failed", "abandoned", "baseline")


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: str
    run_id: str | None
    source: str
    aliases: tuple[str, ...]
    tags: dict[str, str] = field(default_factory=dict)
    created_ms: int = 0

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "aliases": list(self.aliases),
            "run_id": self.run_id,
            "gate": self.tags.get(GATE_TAG),
            "created": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.created_ms / 1000))
            if self.created_ms
            else None,
            "metrics": {k: float(v) for k, v in self.tags.items() if k.startswith("val_")},
            "tags": {k: v for k, v in self.tags.items() if k != GATE_TAG and not k.startswith("val_")},
        }


@dataclass(frozen=True)
class GateDecision:
    """Whether a challenger replaces the champion, and why (the why goes into MLflow and the CLI)."""

    promote: bool
    reason: str
    metric: str
    challenger_value: float
    champion_value: float | None
    min_improvement: float

    @property
    def delta(self) -> float | None:
        return None if self.champion_value is None else self.challenger_value - self.champion_value


def gate(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    metric: str,
    min_improvement: float,
    incumbent: str = "the champion",
    guard_metric: str | None = None,
    max_regression: float = 0.0,
    deploy_metrics: tuple[str, ...] = (),
    deploy_max_regression: float = 0.0,
) -> GateDecision:
    """Promote only a challenger that beats the champion on ``metric`` by at least ``min_improvement``
    and, with ``guard_metric``, loses no more than ``max_regression`` on it (a model that wins on
    masked faces must not pay for it on bare ones), and loses no more than ``deploy_max_regression``
    on any of ``deploy_metrics`` (the deployment's own held-out captures: a model that wins on public
    faces must not pay for it at the door). A deploy metric counts only when both sides have it.

    Both dicts must come from the same evaluation data; with no champion the challenger wins.
    """
    decision = _gate_one(challenger, champion, metric, min_improvement, incumbent)
    if not decision.promote or champion is None:
        return decision
    guards = [(guard_metric, max_regression)] if guard_metric is not None else []
    for side, values in (("challenger", challenger), ("champion", champion)):
        if guard_metric is not None and guard_metric not in values:
            raise RegistryError(f"guard metric {guard_metric!r} missing from the {side}'s metrics ({sorted(values)})")
    guards += [(m, deploy_max_regression) for m in deploy_metrics if m in challenger and m in champion]
    why = decision.reason
    for name, allowed in guards:
        loss = float(champion[name]) - float(challenger[name])
        if not loss <= allowed:  # NaN fails too
            why = (
                f"{why}, but {name} {float(challenger[name]):.4f} loses "
                f"{loss:.4f} to {incumbent}'s {float(champion[name]):.4f} (> {allowed} allowed)"
            )
            return GateDecision(False, why, metric, decision.challenger_value, decision.champion_value, min_improvement)
        why = f"{why}; {name} within {allowed} ({-loss:+.4f})"
    return GateDecision(True, why, metric, decision.challenger_value, decision.champion_value, min_improvement)


def _gate_one(
    challenger: dict[str, float], champion: dict[str, float] | None, metric: str, min_improvement: float, incumbent: str
) -> GateDecision:
    if metric not in challenger:
        raise RegistryError(f"gate metric {metric!r} missing from the challenger's metrics ({sorted(challenger)})")
    value = float(challenger[metric])
    if value != value:  # NaN never wins
        return GateDecision(False, f"challenger {metric} is NaN", metric, value, None, min_improvement)
    if champion is None:
        return GateDecision(True, "no champion yet", metric, value, None, min_improvement)
    if metric not in champion:
        raise RegistryError(f"gate metric {metric!r} missing from the champion's metrics ({sorted(champion)})")
    best = float(champion[metric])
    if value >= best + min_improvement:
        why = f"{metric} {value:.4f} beats {incumbent}'s {best:.4f} by {value - best:+.4f} (>= {min_improvement})"
        return GateDecision(True, why, metric, value, best, min_improvement)
    why = f"{metric} {value:.4f} vs {incumbent}'s {best:.4f}: {value - best:+.4f} is short of +{min_improvement}"
    return GateDecision(False, why, metric, value, best, min_improvement)


def mlflow_client():
    import mlflow  # heavy: MLflow takes seconds to import; only the paths that track or load models need it

    configure_environment()
    use_mlflow_store()
    return mlflow.MlflowClient()


def _info(mv) -> ModelVersionInfo:
    return ModelVersionInfo(
        mv.name,
        str(mv.version),
        mv.run_id,
        mv.source,
        tuple(getattr(mv, "aliases", []) or ()),
        dict(mv.tags or {}),
        int(mv.creation_timestamp or 0),
    )


def register(model_uri: str, name: str, *, run_id: str, tags: dict[str, str] | None = None) -> str:
    """Register ``model_uri`` as a new version of ``name`` with alias ``challenger`` and gate=pending."""
    import mlflow  # heavy: MLflow takes seconds to import; only the paths that track or load models need it

    client = mlflow_client()
    mv = mlflow.register_model(model_uri, name, tags={GATE_TAG: "pending", "run_id": run_id, **(tags or {})})
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    return str(mv.version)


def get_version(name: str, version: str) -> ModelVersionInfo:
    from mlflow.exceptions import (
        MlflowException,  # heavy: MLflow takes seconds to import; only the paths that track or load models need it
    )

    try:
        return _info(mlflow_client().get_model_version(name, str(version)))
    except MlflowException:
        raise RegistryError(f"registry: model {name!r} has no version {version!r}") from None


def by_alias(name: str, alias: str) -> ModelVersionInfo | None:
    from mlflow.exceptions import (
        MlflowException,  # heavy: MLflow takes seconds to import; only the paths that track or load models need it
    )

    try:
        return _info(mlflow_client().get_model_version_by_alias(name, alias))
    except MlflowException:
        return None


def champion(name: str) -> ModelVersionInfo | None:
    return by_alias(name, CHAMPION)


def list_versions(name: str) -> list[ModelVersionInfo]:
    """Every version of ``name``, newest first (empty when the model was never registered)."""
    from mlflow.exceptions import (
        MlflowException,  # heavy: MLflow takes seconds to import; only the paths that track or load models need it
    )

    client = mlflow_client()
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return []
    # search results carry no aliases in every store: read each version for them
    full = [_info(client.get_model_version(name, v.version)) for v in versions]
    return sorted(full, key=lambda v: int(v.version), reverse=True)


def set_gate_state(name: str, version: str, state: str, reason: str = "") -> None:
    if state not in GATE_STATES:
        raise RegistryError(f"unknown gate state {state!r} (known: {GATE_STATES})")
    client = mlflow_client()
    client.set_model_version_tag(name, str(version), GATE_TAG, state)
    if reason:
        client.set_model_version_tag(name, str(version), "gate_reason", reason[:5000])


def history(name: str) -> list[str]:
    """Versions that have held ``champion``, oldest first."""
    from mlflow.exceptions import (
        MlflowException,  # heavy: MLflow takes seconds to import; only the paths that track or load models need it
    )

    try:
        raw = mlflow_client().get_registered_model(name).tags.get(HISTORY_TAG)
    except MlflowException:
        return []
    return json.loads(raw) if raw else []


def promote(name: str, version: str, reason: str) -> str | None:
    """Move ``champion`` to ``version``; returns the previous champion's version (None if there was none)."""
    info = get_version(name, version)  # fails clearly on an unknown version
    client = mlflow_client()
    previous = champion(name)
    client.set_registered_model_alias(name, CHAMPION, info.version)
    past = history(name)
    if not past or past[-1] != info.version:
        past.append(info.version)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(past))
    client.set_model_version_tag(name, info.version, GATE_TAG, "promoted")
    client.set_model_version_tag(name, info.version, "promotion_reason", reason[:5000])
    challenger = by_alias(name, CHALLENGER)
    if challenger is not None and challenger.version == info.version:
        client.delete_registered_model_alias(name, CHALLENGER)
    return previous.version if previous else None


def restore_champion(name: str, version: str | None) -> None:
    """Undo a promotion whose follow-up failed: ``champion`` back on ``version`` (or removed if None)."""
    client = mlflow_client()
    past = history(name)
    current = champion(name)
    if version is None:
        if current is not None:
            client.delete_registered_model_alias(name, CHAMPION)
    else:
        client.set_registered_model_alias(name, CHAMPION, str(version))
    if current is not None and past and past[-1] == current.version and current.version != version:
        past.pop()
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(past))
        client.set_model_version_tag(name, current.version, GATE_TAG, "failed")


def rollback_target(name: str) -> str:
    """The version ``rollback`` makes champion: the latest earlier champion that was not rolled back from."""
    current = champion(name)
    if current is None:
        raise RegistryError(f"registry: model {name!r} has no champion to roll back from")
    candidates = [v for v in history(name) if v != current.version]
    candidates = [v for v in candidates if get_version(name, v).tags.get(GATE_TAG) != "rejected"]
    if not candidates:
        raise RegistryError(f"registry: model {name!r} has no earlier champion than version {current.version}")
    return candidates[-1]


def mark_rolled_back(name: str, version: str, reason: str = "rolled back") -> None:
    """A champion that was rolled back from is never a rollback target again."""
    set_gate_state(name, version, "rejected", reason)


def abandon_pending(name: str, keep: set[str] | None = None) -> list[str]:
    """Versions still ``pending`` (their chain died before the gate) become ``abandoned``; returns them."""
    out = []
    for v in list_versions(name):
        if v.tags.get(GATE_TAG) == "pending" and v.version not in (keep or set()):
            set_gate_state(name, v.version, "abandoned", "its retraining run ended before the gate")
            out.append(v.version)
    return out
