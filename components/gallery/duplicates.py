"""Is this new face already someone here? The enrolment duplicate check, asked as identification.

A new person is compared with every one of the N people enrolled, so a threshold set for 1:1 (a false
accept in 1,000 comparisons) refuses about N / 1,000 of new people: one in eight at 150 employees (issue
28). The check therefore takes identify's threshold arithmetic with its own target: the distance below
which a stranger's nearest of N people falls with probability ``gallery.duplicate_target`` (1e-3 of new
people by default), read off the same impostor scores as identification (the model's stored sketches
blended with the gallery's own pairs, see ``facegate.components.calibration.thresholds.ImpostorScores``).

N counts the *other* employees: an employee's own photos (``replace``, more templates for the same id)
are never a duplicate of themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facegate.components.calibration.thresholds import ImpostorScores
from facegate.components.gallery.index import Gallery


@dataclass(frozen=True)
class DuplicateRule:
    """How one gallery decides "already enrolled" for a new face compared with ``others`` people.

    ``scores`` None (a gallery made with a fixed tau and no calibration copy): ``fixed_tau`` decides and
    no chance can be estimated.
    """

    scores: ImpostorScores | None
    target: float  # share of new people allowed to be refused as someone else (gallery.duplicate_target)
    fixed_tau: float | None = None

    def tau(self, others: int) -> float | None:
        """Largest distance refused: per-comparison FAR 1 - (1 - target)^(1/others) off the stored tail."""
        if self.scores is None:
            return self.fixed_tau
        return self.scores.tau_for_fpir(self.target, max(others, 1))

    def false_alarm(self, distance: float, others: int) -> float | None:
        """Estimated chance that a new person's nearest of ``others`` people is at least this close."""
        return None if self.scores is None else self.scores.fpir(distance, max(others, 1))


@dataclass(frozen=True)
class DuplicateSuspect:
    """A new photo whose nearest other employee is within the duplicate threshold."""

    photo: int  # index of the new photo
    other_id: str  # the employee it matches
    distance: float
    tau: float
    false_alarm: float | None  # estimated chance a new person comes this close to someone (None: fixed tau)
    others: int  # employees it was compared with

    def to_dict(self) -> dict:
        return {
            "photo": self.photo,
            "other_id": self.other_id,
            "distance": round(self.distance, 6),
            "tau": round(self.tau, 6),
            "false_alarm": self.false_alarm,
            "compared_with": self.others,
        }


def nearest_others(gallery: Gallery, embeddings: np.ndarray, employee_id: str) -> list[tuple[str, float] | None]:
    """Per photo, the nearest employee other than ``employee_id`` and the distance (None: nobody else).
    Search counts each employee once, so the best two always hold one other person."""
    if gallery.n_vectors == 0:
        return [None] * len(embeddings)
    found = []
    for matches in gallery.search(embeddings, k=2):
        found.append(next(((eid, float(d)) for eid, _, d in matches if eid != employee_id), None))
    return found


def other_employees(gallery: Gallery, employee_id: str) -> int:
    return gallery.n_employees - int(employee_id in gallery)


def find_duplicates(
    gallery: Gallery, embeddings: np.ndarray, employee_id: str, rule: DuplicateRule
) -> list[DuplicateSuspect]:
    """New photos of ``employee_id`` whose face is within the rule's threshold of another employee,
    closest first (an empty list when nobody else is enrolled)."""
    others = other_employees(gallery, employee_id)
    tau = rule.tau(others) if others else None
    if tau is None:
        return []
    suspects = [
        DuplicateSuspect(i, near[0], near[1], float(tau), rule.false_alarm(near[1], others), others)
        for i, near in enumerate(nearest_others(gallery, embeddings, employee_id))
        if near is not None and near[1] <= tau
    ]
    return sorted(suspects, key=lambda s: s.distance)
