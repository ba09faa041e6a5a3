"""The API's JSON answers, as pydantic models: FastAPI validates every answer against them and names
its OpenAPI schemas after them, so a class name here is part of the published schema."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from facegate.components.service.answers import Identification, Verification


class ErrorBody(BaseModel):
    code: str
    message: str


class DuplicateFaceBody(ErrorBody):
    """409 ``duplicate_face``: photo ``photo_index`` looks already enrolled as ``other_id`` (their thumbnail
    at ``other_photo_url``); ``false_alarm``: the estimated chance that a new person comes this close to
    someone by chance (null: a gallery with a fixed tau). ``employee_exists`` answers code and message only."""

    photo: str | None = None
    photo_index: int | None = None
    employee_id: str | None = None
    other_id: str | None = None
    other_photo_url: str | None = None
    distance: float | None = None
    tau: float | None = None
    false_alarm: float | None = None


class Health(BaseModel):
    status: Literal["ok"]


class Status(BaseModel):
    status: Literal["ok"]
    embedder: str
    employees: int
    tau: float | None
    # presentation-attack detection: mode, model, threshold, available (and why not: error, note)
    pad: dict | None = None
    # what the backbones run on: backend (torch | openvino | mixed), requested, members' backend and precision
    inference: dict | None = None


# the service's own answer types: the API's schema cannot drift from what FaceGate returns
IdentificationOut = Identification
VerificationOut = Verification


class EmployeeOut(BaseModel):
    employee_id: str
    name: str
    n_vectors: int


class Enrolled(BaseModel):
    employee_id: str
    photos: int
    employees: int


class Removed(BaseModel):
    employee_id: str
    vectors_removed: int
    access_rows_erased: int = 0  # the employee's decision rows deleted (access_log.erase_on_remove)
    access_rows_kept: int = 0
    captures_erased: int = 0  # the employee's deployment captures (chips, embeddings) deleted
    kept: str | None = None  # what the access log keeps about the employee


class PhotoCheck(BaseModel):
    name: str
    ok: bool
    faces: int
    problems: list[str]
    width: int | None = None
    height: int | None = None
    box: list[int] | None = None
    face_px: int | None = None
    sharpness: float | None = None


class DecisionOut(BaseModel):
    id: int
    at: str
    kind: str
    outcome: str
    entrance: str | None
    employee_id: str | None
    distance: float | None
    threshold: float | None
    model: str | None
    gallery_version: str | None
    mask: str | None
    actor: str | None
    liveness: str | None = None  # live | attack; null: pad.mode off
    liveness_score: float | None = None
    liveness_threshold: float | None = None
    path: str | None = None  # which cascade pass decided: cheap | full


class AuditOut(BaseModel):
    id: int
    at: str
    actor: str
    action: str
    employee_id: str | None
    detail: dict


class Me(BaseModel):
    name: str
    role: str


def error_responses(*statuses: int) -> dict:
    """A route's documented error answers: its own ``statuses`` plus those any protected route can give."""
    return {s: {"model": ErrorBody} for s in sorted({401, 413, 422, 500, 503, *statuses})}
