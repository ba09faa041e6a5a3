"""ISO/IEC 30107-3 figures and the PAD threshold for a target APCER.

A face is accepted as live iff its live probability is ``> threshold``. APCER is the share of attack
presentations accepted as live, BPCER the share of live (bona fide) presentations rejected; BPCER20 and
BPCER100 are the BPCER at the threshold where APCER is 5% and 1%. The threshold is set from the attack
scores alone (that is the risk an operator fixes: how many attacks may pass); the live scores only
report what it costs.

The operating threshold must hold for people the calibration set does not contain, and a person's
attack frames are near-duplicates: the calibration set is a few subjects, not hundreds of independent
frames. So the rule (:func:`subject_robust_threshold`, docs/decisions/pad.md) works by subject: the
higher of (1) the threshold that keeps APCER at most the target on the worst calibration subject and
(2) the threshold at which an unseen subject's expected APCER is the target, under a random-effects
model of how subjects' attack scores shift (logit scale). A calibration without subject labels (an older
file) falls back to the pooled quantile, :func:`threshold_for_apcer`.

A model's calibration (its calibration set's attack and live scores and the attacks' subjects, no
images) is stored with the model, so the threshold for any ``pad.target_apcer`` is recomputed without
re-running the model: a file in ``calibration/pad/`` for the shipped weights, an artifact of the
registered version for a fine-tuned model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

#: Scores are clipped to [EPS, 1 - EPS] before the logit (float32 softmaxes reach 0 and 1 exactly).
LOGIT_EPS = 1e-12


def threshold_for_apcer(attack_scores: np.ndarray, target_apcer: float) -> float:
    """The smallest threshold at which at most ``floor(target * n)`` attacks score above it: the
    ``k+1``-th highest attack score (ties only lower the APCER reached). Without attacks: -inf."""
    _check_target(target_apcer)
    scores = np.sort(np.asarray(attack_scores, np.float64))[::-1]
    k = int(math.floor(target_apcer * len(scores) + 1e-9))
    return float(scores[k]) if k < len(scores) else float("-inf")


def _check_target(target_apcer: float) -> None:
    if not 0.0 <= target_apcer < 1.0:
        raise ValueError(f"target APCER must be in [0, 1), got {target_apcer}")


def worst_subject_threshold(attack_scores: np.ndarray, subjects: Sequence[str], target_apcer: float) -> float:
    """The smallest threshold at which EVERY subject's APCER is at most ``target``: the highest of the
    subjects' own :func:`threshold_for_apcer` (with fewer than ``1/target`` frames, a subject's highest
    attack score)."""
    _check_target(target_apcer)
    scores, subj = np.asarray(attack_scores, np.float64), np.asarray(subjects)
    if not len(scores):
        return float("-inf")
    return max(threshold_for_apcer(scores[subj == s], target_apcer) for s in np.unique(subj))


def _logit(scores: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(scores, np.float64), LOGIT_EPS, 1.0 - LOGIT_EPS)
    return np.log(p) - np.log1p(-p)


def _normal_sf(x: np.ndarray) -> np.ndarray:
    return np.array([0.5 * math.erfc(v / math.sqrt(2.0)) for v in np.ravel(x)])


def unseen_subject_threshold(attack_scores: np.ndarray, subjects: Sequence[str], target_apcer: float) -> float | None:
    """The threshold at which an UNSEEN subject's expected APCER is ``target``, under a random-effects
    model on the logit scale (None with fewer than two subjects: no spread between subjects to estimate).

    A subject's attack logits are its location (the median) plus a within-subject deviation. Locations
    vary between subjects as a normal with the calibration subjects' mean and standard deviation,
    widened by ``sqrt(1 + 1/S)`` for the mean's own uncertainty (the medians' sampling noise is left in:
    conservative); the deviations' shape is the calibration subjects' pooled, each subject weighted
    equally. The expected APCER of a new subject at ``t`` is then the average over those deviations of
    ``P(location > t - deviation)``; it falls as ``t`` rises, and the ``t`` where it meets the target is
    found by bisection. Unlike a quantile of the calibration scores it can lie above every calibration
    attack: it extrapolates how far a new person's prints may score above the calibration subjects'.
    """
    _check_target(target_apcer)
    z, subj = _logit(attack_scores), np.asarray(subjects)
    names = np.unique(subj)
    if len(names) < 2 or target_apcer <= 0.0:
        return None
    medians = np.array([np.median(z[subj == s]) for s in names])
    deviations = np.concatenate([z[subj == s] - m for s, m in zip(names, medians)])
    weights = np.concatenate([np.full(int(np.sum(subj == s)), 1.0 / np.sum(subj == s)) for s in names]) / len(names)
    centre = float(medians.mean())
    spread = float(medians.std(ddof=1)) * math.sqrt(1.0 + 1.0 / len(names))

    def expected_apcer(t: float) -> float:
        if spread <= 1e-9:
            return float(weights[centre + deviations > t].sum())
        return float((weights * _normal_sf((t - centre - deviations) / spread)).sum())

    lo, hi = float(z.min()) - 1.0, float(z.max()) + 10.0 * spread + 1.0
    while expected_apcer(hi) > target_apcer:  # the bracket's top must let through at most the target
        hi += 10.0 * max(spread, 1.0)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if expected_apcer(mid) > target_apcer else (lo, mid)
    return float(1.0 / (1.0 + math.exp(-hi)))


def subject_robust_threshold(attack_scores: np.ndarray, subjects: Sequence[str], target_apcer: float) -> float:
    """The operating threshold: the higher of :func:`worst_subject_threshold` (every calibration subject
    meets the target) and :func:`unseen_subject_threshold` (an unseen subject is expected to). With one
    subject (or none named) this is the pooled quantile, :func:`threshold_for_apcer`."""
    worst = worst_subject_threshold(attack_scores, subjects, target_apcer)
    unseen = unseen_subject_threshold(attack_scores, subjects, target_apcer)
    return worst if unseen is None else max(worst, unseen)


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
    attack kinds, camera, detector) — what the threshold is valid for. ``attack_subjects``: the subject
    of each attack score, in the same order (empty in files written before the subject-robust rule: their
    threshold is the pooled quantile until they are calibrated again).
    """

    model: str
    fingerprint: str
    source: str
    attack_scores: tuple[float, ...]
    live_scores: tuple[float, ...]
    created: str = ""
    meta: dict = field(default_factory=dict)
    attack_subjects: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.attack_subjects and len(self.attack_subjects) != len(self.attack_scores):
            raise ValueError(
                f"PAD calibration of {self.model}: {len(self.attack_subjects)} subjects for "
                f"{len(self.attack_scores)} attack scores"
            )

    @classmethod
    def from_scores(
        cls,
        model: str,
        fingerprint: str,
        source: str,
        live: np.ndarray,
        attack: np.ndarray,
        *,
        attack_subjects: Sequence[str] | None = None,
        **meta,
    ) -> PadCalibration:
        attack = np.asarray(attack, np.float64)
        order = np.argsort(attack, kind="stable")
        subjects = tuple(str(s) for s in np.asarray(attack_subjects)[order]) if attack_subjects is not None else ()
        return cls(
            model,
            fingerprint,
            source,
            tuple(float(v) for v in attack[order]),
            tuple(float(v) for v in np.sort(live)),
            meta.pop("created", ""),
            meta,
            subjects,
        )

    @property
    def rule(self) -> str:
        """Which threshold rule these scores allow (``/status`` shows it)."""
        if len(set(self.attack_subjects)) >= 2:
            return f"subject-robust ({len(set(self.attack_subjects))} calibration subjects)"
        return "pooled quantile (no subject labels: calibrate again for the subject-robust rule)"

    def threshold(self, target_apcer: float) -> float:
        """The operating threshold for ``target_apcer``: :func:`subject_robust_threshold` on the attack
        scores and their subjects (the pooled quantile for a file without subjects)."""
        if not self.attack_scores:
            raise ValueError(f"PAD calibration of {self.model}: no attack scores")
        subjects = self.attack_subjects or ("",) * len(self.attack_scores)
        return subject_robust_threshold(np.asarray(self.attack_scores), subjects, target_apcer)

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
            tuple(raw.get("attack_subjects", ())),
        )

    @classmethod
    def load(cls, path: Path) -> PadCalibration:
        return cls.from_dict(json.loads(Path(path).read_text()))
