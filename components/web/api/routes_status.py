"""Liveness, the service's status and its Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from facegate.components.service.facade import FaceGate
from facegate.components.web.api.dependencies import ApiState, api_state, face_gate, metrics_public, principal, reader
from facegate.components.web.api.inputs import LimitedFormRoute
from facegate.components.web.api.schemas import ErrorBody, Health, Status, error_responses

router = APIRouter(route_class=LimitedFormRoute)


@router.get("/health", responses={500: {"model": ErrorBody}})
def health() -> Health:
    """Liveness only: no key needed, nothing revealed."""
    return Health(status="ok")


@router.get("/status", dependencies=[Depends(reader)], responses=error_responses(403))
def status(gate: FaceGate = Depends(face_gate)) -> Status:
    """The model in service, the number of employees, the gallery's tau."""
    return Status(**gate.status())


@router.get("/metrics", response_class=Response, include_in_schema=False)  # Prometheus' text format
def prometheus(request: Request, state: ApiState = Depends(api_state)) -> Response:
    """Prometheus metrics (``facegate_*``); no key needed when the server is bound to loopback."""
    if not metrics_public(state.settings.console, request.scope):
        principal(request)
    return Response(state.metrics.render(), media_type=state.metrics.content_type)
