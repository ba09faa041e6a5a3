"""The fine-tuned PAD pair in the MLflow registry (``pad.registered_model``, alias ``champion``).

A version is the fused network (a PadNet, logged with the library code) and its calibration — the
held-out subjects' live and attack scores — logged beside it in the same run; the threshold at the
target APCER and the gate's figures are version tags. Loading the champion registers it in the PAD
registry as ``minifasnet_pair_finetuned`` (the PAD layer cannot import MLflow's registry).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from facegate.components.core.errors import RegistryError
from facegate.components.core.paths import configure_environment, use_mlflow_store
from facegate.components.core.settings import PadSettings
from facegate.components.lifecycle import registry
from facegate.components.lifecycle.tracking import log_torch_model
from facegate.components.pad.calibration import PadCalibration
from facegate.components.pad.minifasnet import PadNet
from facegate.components.pad.models import MiniFasNetPad, PadModel, pad_model_from_settings, register_pad_model

CALIBRATION_ARTIFACT = "pad/pad_calibration.json"  # in the version's run, beside the model
FINETUNED = "minifasnet_pair_finetuned"


@functools.lru_cache(maxsize=2)
def load_pad_version(name: str, version: str) -> tuple[PadNet, PadCalibration]:
    """The network and the calibration of version ``version`` of registered model ``name`` (cached)."""
    import mlflow  # heavy: MLflow takes seconds to import; only the paths that track or load models need it

    configure_environment()
    use_mlflow_store()
    info = registry.get_version(name, version)
    net = mlflow.pytorch.load_model(info.uri, map_location="cpu").eval()
    if not isinstance(net, PadNet):
        raise RegistryError(f"registry: {info.uri} is a {type(net).__name__}, not a PAD network")
    raw = mlflow.artifacts.load_text(f"runs:/{info.run_id}/{CALIBRATION_ARTIFACT}")
    return net, PadCalibration.from_dict(json.loads(raw))


@register_pad_model
class FinetunedPairPad(MiniFasNetPad):
    """The pair fine-tuned on the camera's own frames (``facegate train-pad``): the registry's champion of
    ``registered_model`` (or ``version``), with the threshold calibrated on its held-out subjects."""

    name = FINETUNED

    def __init__(self, registered_model: str, version: str | None = None, runtime: str = "openvino") -> None:
        if version is None:
            champ = registry.champion(registered_model)
            if champ is None:
                raise RegistryError(
                    f"registry: PAD model {registered_model!r} has no champion: run "
                    "`facegate train-pad` (or set pad.model to a shipped entry)"
                )
            version = champ.version
        net, cal = load_pad_version(registered_model, str(version))
        super().__init__(net, fingerprint=f"{registered_model}/{version}", calibration=cal, runtime=runtime)
        self.version = str(version)


def pad_model_in_service(pad: PadSettings) -> PadModel:
    """``pad.model`` with everything it needs (the fine-tuned entry reads the registry)."""
    return pad_model_from_settings(pad)


def log_pad_model(net: PadNet, calibration: PadCalibration) -> str:
    """The network and its calibration into the active run (the model as ``model``); the model URI."""
    import mlflow  # heavy: MLflow takes seconds to import; only the paths that track or load models need it

    info = log_torch_model(net)
    mlflow.log_dict(calibration.to_dict(), CALIBRATION_ARTIFACT)
    return info.model_uri


@dataclass(frozen=True)
class PadGateDecision:
    promote: bool
    reason: str
    bpcer100: float
    baselines: dict[str, float]


def pad_gate(bpcer100: float, baselines: dict[str, float]) -> PadGateDecision:
    """A fine-tuned pair earns service only if its BPCER100 on the held-out subjects is no worse than
    each baseline's on the same frames (the zero-shot pair always; the champion when there is one)."""
    if bpcer100 != bpcer100:  # NaN never wins
        return PadGateDecision(False, "held-out BPCER100 is NaN", bpcer100, baselines)
    worse = {k: v for k, v in baselines.items() if bpcer100 > v}
    if worse:
        why = ", ".join(f"{k}'s {v:.4f}" for k, v in worse.items())
        return PadGateDecision(False, f"held-out BPCER100 {bpcer100:.4f} is worse than {why}", bpcer100, baselines)
    why = ", ".join(f"{k}'s {v:.4f}" for k, v in baselines.items())
    return PadGateDecision(True, f"held-out BPCER100 {bpcer100:.4f} is no worse than {why}", bpcer100, baselines)


def register_pad_version(
    model_uri: str, name: str, run_id: str, decision: PadGateDecision, tags: dict[str, str]
) -> str:
    """A new version (challenger, gate pending), then champion or rejected as the gate decided."""
    version = registry.register(model_uri, name, run_id=run_id, tags=tags)
    if decision.promote:
        registry.promote(name, version, decision.reason)
    else:
        registry.set_gate_state(name, version, "rejected", decision.reason)
    return version
