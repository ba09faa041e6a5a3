"""Deployment captures through the API, for the console's review page and labelling tools.

Captures are biometric data (chips, embeddings): every route needs the ``review`` permission, which
only the operator role has (a viewer or a turnstile gets 403). Every label is an audit row naming the
account; a template update or removal is a new gallery version with its own audit rows."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Path, Query
from fastapi.responses import Response

from facegate.components.core.errors import BadRequest
from facegate.components.gallery.enrolment import EMPLOYEE_ID
from facegate.components.service.captures import LABELS, CaptureStore
from facegate.components.service.facade import FaceGate
from facegate.components.service.templates import remove_template, update_templates
from facegate.components.web.accounts import Principal
from facegate.components.web.api.dependencies import ApiState, api_state, face_gate, require
from facegate.components.web.api.inputs import LimitedFormRoute
from facegate.components.web.api.schemas import error_responses

reviewer = require("review")
router = APIRouter(route_class=LimitedFormRoute, dependencies=[Depends(reviewer)])


def capture_store(gate: FaceGate) -> CaptureStore:
    store = gate.captures
    if store is None:
        raise BadRequest("this server keeps no access log, so no captures")
    return store


@router.get("/captures/review", responses=error_responses(400, 403))
def review_queue(limit: int = Query(50, ge=1, le=1000), gate: FaceGate = Depends(face_gate)) -> list[dict]:
    """Unlabelled captures, most instructive first: near the threshold, masked, new entrances (``why``)."""
    return capture_store(gate).review_queue(gate.settings.capture.review_band, limit)


@router.get(
    "/captures/{capture_id}/chip",
    response_class=Response,
    responses={**error_responses(400, 403, 404), 200: {"content": {"image/png": {}}}},
)
def capture_chip(capture_id: int = Path(..., ge=1), gate: FaceGate = Depends(face_gate)) -> Response:
    """The capture's aligned face chip (PNG)."""
    return Response(
        capture_store(gate).chip(capture_id), media_type="image/png", headers={"Cache-Control": "private, no-store"}
    )


@router.post("/captures/{capture_id}/label", responses=error_responses(400, 403, 404, 422))
def label_capture(
    capture_id: int = Path(..., ge=1),
    label: str = Form(..., max_length=16, description=f"one of {', '.join(LABELS)}"),
    employee_id: str | None = Form(
        None,
        max_length=64,
        pattern=EMPLOYEE_ID.pattern,
        description="label employee: who it is (default: the one it was recognised as)",
    ),
    who: Principal = Depends(reviewer),
    gate: FaceGate = Depends(face_gate),
) -> dict:
    """An operator's label: confirm the employee, a stranger, not a face, or skip. An audit row."""
    out = capture_store(gate).label(capture_id, label, employee_id or None, who.name)
    gate.audit(who.name, "capture_label", out["label_employee_id"], capture_id=capture_id, label=label)
    return out


@router.post("/captures/templates", responses=error_responses(400, 403, 404))
def refresh_templates(
    employee_id: str | None = Form(None, max_length=64, pattern=EMPLOYEE_ID.pattern),
    who: Principal = Depends(reviewer),
    state: ApiState = Depends(api_state),
) -> dict:
    """Confirmed captures -> templates (at most ``gallery.max_templates`` per employee, the most diverse)."""
    capture_store(state.gate)
    out = update_templates(state.gate, employee_id or None, actor=who.name)
    if out["employees"]:
        state.wrote("templates")
    return out


@router.delete("/captures/{capture_id}/template", responses=error_responses(400, 403, 404))
def drop_template(
    capture_id: int = Path(..., ge=1), who: Principal = Depends(reviewer), state: ApiState = Depends(api_state)
) -> dict:
    """Take a captured template out of its employee's gallery vectors (the capture is relabelled skip)."""
    capture_store(state.gate)
    out = remove_template(state.gate, capture_id, actor=who.name)
    state.wrote("templates")
    return out
