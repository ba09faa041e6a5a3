"""ISO/IEC 30107-3 figures and the PAD threshold for a target APCER.

A face is accepted as live iff its live probability is ``> threshold``. APCER is the share of attack
presentations accepted as live, BPCER the share of live (bona fide) presentations rejected; BPCER20 and
BPCER100 are the BPCER at the threshold where APCER is 5% and 1%. The threshold is set from the attack
scores alone (that is the risk an operator fixes: how many attacks may pass); the live scores only
report what it costs.

A model's calibration (its calibration set's attack and live scores, no images) is stored with the
model, so the threshold for any ``pad.target_apcer`` is recomputed without re-running the model:
a file in ``calibration/pad/`` for the shipped weights, an artifact of the registered version for a
fine-tuned model.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


def threshold_for_apcer(attack_scores: np.ndarray, target_apcer: float) -> float:
    """The smallest threshold at which at most ``floor(target * n)`` attacks score above it: the
    ``k+1``-th highest attack score (ties only lower the APCER reached). Without attacks: -inf."""
    if not 0.0 <= target_apcer < 1.0:
        raise ValueError(f"target APCER must be in [0, 1), got {target_apcer}")
    scores = np.sort(np.asarray(attack_scores, np.float64))[::-1]
    k = int(math.floor(target_apcer * len(scores) + 1e-9))
    return float(scores[k]) if k < len(scores) else float("-inf")


def error_rates(live_scores: np.ndarray, attack_scores: np.ndarray, threshold: float) -> dict[str, float]:
    """APCER and BPCER at ``threshold`` (accept as live iff score > threshold); NaN for an empty side."""
    live, attack = np.asarray(live_scores, np.float64), np.asarray(attack_scores, np.float64)
    return {
        "apcer": float(np.mean(attack > threshold)) if len(attack) else float("nan"),
        "bpcer": float(np.mean(live <= threshold)) if len(live) else float("nan"),
    }


def bpcer_at_apcer(live_scores: np.ndarray, attack_scores: np.ndarray, target_apcer: float) -> dict[str, float]:
    """ISO's BPCER at a fixed APCER on one score set: threshold from its attacks, BPCER on its live faces."""
    t = threshold_for_apcer(attack_scores, target_apcer)
    return {"threshold": t, **error_rates(live_scores, attack_scores, t)}


def iso_figures(live_scores: np.ndarray, attack_scores: np.ndarray) -> dict[str, float]:
    """BPCER20 and BPCER100 with thresholds set on these very scores (ISO's definition), and the AUC."""
    return {
        "bpcer20": bpcer_at_apcer(live_scores, attack_scores, 0.05)["bpcer"],
        "bpcer100": bpcer_at_apcer(live_scores, attack_scores, 0.01)["bpcer"],
        "auc": roc_auc(live_scores, attack_scores),
        "n_live": int(len(live_scores)),
        "n_attack": int(len(attack_scores)),
    }


def det_points(live_scores: np.ndarray, attack_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(APCER, BPCER) at every distinct score used as threshold, APCER descending: the DET curve."""
    live, attack = np.asarray(live_scores, np.float64), np.asarray(attack_scores, np.float64)
    thresholds = np.unique(np.r_[live, attack, -np.inf])
    apcer = (attack[None, :] > thresholds[:, None]).mean(1) if len(attack) else np.zeros(len(thresholds))
    bpcer = (live[None, :] <= thresholds[:, None]).mean(1) if len(live) else np.zeros(len(thresholds))
    return apcer, bpcer


def roc_auc(live_scores: np.ndarray, attack_scores: np.ndarray) -> float:
    """P(a live face scores above an attack), ties counted half: the area under the ROC curve."""
    live, attack = np.asarray(live_scores, np.float64), np.sort(np.asarray(attack_scores, np.float64))
    if not len(live) or not len(attack):
        return float("nan")
    below = np.searchsorted(attack, live, side="left")
    equal = np.searchsorted(attack, live, side="right") - below
    return float((below + 0.5 * equal).sum() / (len(live) * len(attack)))


@dataclass(frozen=True)
class PadCalibration:
    """A PAD model's scores on its calibration set; the threshold for a target APCER comes from them.

    ``model``: the registry name; ``fingerprint``: what the scores belong to (the weights' sha256s, or
    the registered version), checked at load; ``source``: the calibration set in words (subjects,
    attack kinds, camera, detector) — what the threshold is valid for.
    """

    model: str
    fingerprint: str
    source: str
    attack_scores: tuple[float, ...]
    live_scores: tuple[float, ...]
    created: str = ""
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_scores(
        cls, model: str, fingerprint: str, source: str, live: np.ndarray, attack: np.ndarray, **meta
    ) -> PadCalibration:
        return cls(
            model,
            fingerprint,
            source,
            tuple(float(v) for v in np.sort(attack)),
            tuple(float(v) for v in np.sort(live)),
            meta.pop("created", ""),
            meta,
        )

    def threshold(self, target_apcer: float) -> float:
        if not self.attack_scores:
            raise ValueError(f"PAD calibration of {self.model}: no attack scores")
        return threshold_for_apcer(np.asarray(self.attack_scores), target_apcer)

    def expected(self, threshold: float) -> dict[str, float]:
        """APCER and BPCER on the calibration set at ``threshold`` (what it was measured to cost there)."""
        return error_rates(np.asarray(self.live_scores), np.asarray(self.attack_scores), threshold)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, raw: dict) -> PadCalibration:
        return cls(
            raw["model"],
            raw["fingerprint"],
            raw["source"],
            tuple(raw["attack_scores"]),
            tuple(raw["live_scores"]),
            raw.get("created", ""),
            raw.get("meta", {}),
        )

    @classmethod
    def load(cls, path: Path) -> PadCalibration:
        return cls.from_dict(json.loads(Path(path).read_text()))
