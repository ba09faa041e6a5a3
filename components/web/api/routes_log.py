"""The access log through the API: decisions (filtered, newest first) and gallery changes (audit)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from facegate.components.service.access_log import DecisionFilter
from facegate.components.service.facade import FaceGate
from facegate.components.web.api.dependencies import face_gate, reader
from facegate.components.web.api.inputs import LimitedFormRoute, parse_time
from facegate.components.web.api.schemas import AuditOut, DecisionOut, error_responses

router = APIRouter(route_class=LimitedFormRoute, dependencies=[Depends(reader)])


@router.get("/access-log", responses=error_responses(400, 403))
def access_log(
    employee_id: str | None = Query(None, max_length=64),
    outcome: str | None = Query(None, max_length=16),
    entrance: str | None = Query(None, max_length=64),
    kind: str | None = Query(None, max_length=16),
    since: str | None = Query(None, max_length=40, description="ISO time, UTC unless it says"),
    until: str | None = Query(None, max_length=40),
    limit: int = Query(200, ge=1, le=10_000),
    gate: FaceGate = Depends(face_gate),
) -> list[DecisionOut]:
    """Decisions, newest first, filtered."""
    log = gate.access_log
    if log is None:
        return []
    return [
        DecisionOut(**r)
        for r in log.decisions(
            DecisionFilter(
                employee_id or None,
                outcome or None,
                entrance or None,
                kind or None,
                parse_time("since", since),
                parse_time("until", until),
                limit,
            )
        )
    ]


@router.get("/audit", responses=error_responses(403))
def audit(
    employee_id: str | None = Query(None, max_length=64),
    limit: int = Query(200, ge=1, le=10_000),
    gate: FaceGate = Depends(face_gate),
) -> list[AuditOut]:
    """Gallery changes (enrol, remove, promote, rollback): who, when, what; newest first."""
    log = gate.access_log
    return [AuditOut(**r) for r in log.audit_events(employee_id or None, limit)] if log is not None else []
