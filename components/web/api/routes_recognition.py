"""The turnstile's questions: who is this (identify, 1:N) and is this the claimed employee (verify, 1:1).
Each answer is an access-log row (written by the FaceGate) and a count in the decision metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, UploadFile

from facegate.components.core.settings import ApiSettings
from facegate.components.web.accounts import Principal
from facegate.components.web.api.dependencies import ApiState, api_state, decider
from facegate.components.web.api.inputs import (
    LimitedFormRoute,
    decoded_pixels,
    employee_id_form,
    entrance_form,
    read_upload,
)
from facegate.components.web.api.schemas import IdentificationOut, VerificationOut, error_responses
from facegate.components.web.metrics import ServiceMetrics


def count_decisions(metrics: ServiceMetrics, kind: str, answers: list[dict], mode: str) -> None:
    """Each answer's decision (recognized, not_recognized, accepted, rejected, attack; none: no_face), and
    each face judged a presentation attack, whatever ``pad.mode`` did with it."""
    for a in answers:
        metrics.decision(kind, a["decision"])
        if (a.get("liveness") or {}).get("label") == "attack":
            metrics.attack(kind, mode)
    if not answers:
        metrics.decision(kind, "no_face")


def recognition_router(limits: ApiSettings) -> APIRouter:
    """The routes; ``limits`` shape their parameters (and so the OpenAPI schema)."""
    router = APIRouter(route_class=LimitedFormRoute)

    @router.post("/identify", responses=error_responses(400, 403, 404, 409, 415))
    def identify(
        image: UploadFile = File(..., description="a camera frame or photo"),
        entrance: str | None = entrance_form(),
        who: Principal = Depends(decider),
        state: ApiState = Depends(api_state),
    ) -> IdentificationOut:
        """Who is this? Every face in the frame: box, employee id or not recognized, distance, tau.
        Each face is an access-log row (with ``entrance``) before the answer."""
        pixels = decoded_pixels(read_upload(image, limits.max_upload_bytes), state.settings.images.max_pixels)
        result = state.gate.identify(pixels, entrance=entrance, actor=who.name).to_dict()
        count_decisions(state.metrics, "identify", result["faces"], state.settings.pad.mode)
        for f in result["faces"]:
            state.metrics.decision_path("identify", f["path"])
        return IdentificationOut(**result)

    @router.post("/verify", responses=error_responses(400, 403, 404, 409, 415))
    def verify(
        employee_id: str = employee_id_form(limits),
        image: UploadFile = File(..., description="a photo with exactly one face"),
        entrance: str | None = entrance_form(),
        who: Principal = Depends(decider),
        state: ApiState = Depends(api_state),
    ) -> VerificationOut:
        """Is this the claimed employee? 1:1 at the calibrated false-accept rate (an access-log row)."""
        photo = read_upload(image, limits.max_upload_bytes)
        result = state.gate.verify(
            employee_id,
            decoded_pixels(photo, state.settings.images.max_pixels),
            photo.name,
            entrance=entrance,
            actor=who.name,
        ).to_dict()
        count_decisions(state.metrics, "verify", [result], state.settings.pad.mode)
        state.metrics.decision_path("verify", result["path"])
        return VerificationOut(**result)

    return router
