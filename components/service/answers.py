"""The service's answers: what identify and verify return, the same JSON in the CLI and the API."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class IdentifiedFace:
    box: list[int]
    employee_id: str | None
    name: str | None
    recognized: bool
    distance: float | None  # None against an empty gallery (nobody to be near)
    tau: float
    target_fpir: float
    mask: str | None = None  # the face-mask detector's class for this face; None: no detector trained
    # estimated chance that a stranger's nearest employee in a gallery of this size is this close (the
    # FPIR at this distance); None without a stored calibration or against an empty gallery
    far_estimate: float | None = None
    # presentation-attack detection: {score, label: live | attack, threshold}; None when pad.mode is off
    liveness: dict | None = None
    # recognized | not_recognized | attack (pad.mode enforce: a presentation attack is never recognised)
    decision: str = ""
    # which pass decided (recognition.cascade): cheap (one member, no mirror; distance and tau are that
    # member's) or full (the fused, flip-averaged embedding)
    path: str = "full"

    def __post_init__(self) -> None:
        if not self.decision:
            object.__setattr__(self, "decision", "recognized" if self.recognized else "not_recognized")


@dataclass(frozen=True)
class Identification:
    """Every face of a frame: who (or not recognized), how far, against which threshold."""

    faces: list[IdentifiedFace]
    tau: float
    target_fpir: float

    def to_dict(self) -> dict:
        return {"faces": [asdict(f) for f in self.faces], "tau": self.tau, "target_fpir": self.target_fpir}


@dataclass(frozen=True)
class Verification:
    employee_id: str
    accepted: bool
    distance: float
    tau: float
    target_far: float | None
    far_estimate: float | None = None  # share of the stored impostor distances at least this close
    liveness: dict | None = None  # as IdentifiedFace.liveness
    decision: str = ""  # accepted | rejected | attack (pad.mode enforce)
    path: str = "full"  # which pass decided: cheap | full (as IdentifiedFace.path)

    def __post_init__(self) -> None:
        if not self.decision:
            object.__setattr__(self, "decision", "accepted" if self.accepted else "rejected")

    def to_dict(self) -> dict:
        return asdict(self)


def estimate(p: float) -> float:
    """A probability for an answer: 3 significant digits, never rounded to 0 above 0."""
    return float(f"{p:.3g}")
