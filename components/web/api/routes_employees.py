"""The employees in the gallery: list, thumbnail, photo checks (reading) and enrol, remove (writing).
Two routers: the app includes the readers among the first routes and the writers last, the order of
the published OpenAPI schema (and of /docs)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Form, Path, UploadFile
from fastapi.responses import Response

from facegate.components.core.errors import UnknownEmployee
from facegate.components.core.settings import ApiSettings
from facegate.components.gallery.enrolment import EMPLOYEE_ID
from facegate.components.service.facade import FaceGate
from facegate.components.web.accounts import Principal
from facegate.components.web.api.dependencies import ApiState, api_state, checker, enroller, face_gate, reader, remover
from facegate.components.web.api.inputs import LimitedFormRoute, employee_id_form, read_upload
from facegate.components.web.api.schemas import (
    DuplicateFaceBody,
    EmployeeOut,
    Enrolled,
    PhotoCheck,
    Removed,
    error_responses,
)
from facegate.components.web.photo_checks import check_photo, thumbnail


def reading_router(limits: ApiSettings) -> APIRouter:
    """The routes that write nothing; ``limits`` shape their parameters (and so the OpenAPI schema)."""
    router = APIRouter(route_class=LimitedFormRoute)

    @router.get("/employees", dependencies=[Depends(reader)], responses=error_responses(403))
    def employees(gate: FaceGate = Depends(face_gate)) -> list[EmployeeOut]:
        return [EmployeeOut(**e) for e in gate.employees()]

    @router.get(
        "/employees/{employee_id}/photo",
        dependencies=[Depends(reader)],
        response_class=Response,
        responses={**error_responses(403, 404), 200: {"content": {"image/jpeg": {}}}},
    )
    def employee_photo(
        employee_id: str = Path(..., max_length=limits.max_id_length, pattern=EMPLOYEE_ID.pattern),
        gate: FaceGate = Depends(face_gate),
    ) -> Response:
        """A small JPEG of the employee's first enrolment photo (the console's thumbnails)."""
        g = gate.snapshot()
        found = gate.store.employee_photos(employee_id) if g is not None and employee_id in g else []
        if not found:
            raise UnknownEmployee(employee_id)
        return Response(thumbnail(found[0]), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"})

    @router.post("/photos/check", responses=error_responses(400, 403, 415))
    def check_photos(
        images: list[UploadFile] = File(
            ..., min_length=1, max_length=limits.max_files, description="enrolment photos to check"
        ),
        _: Principal = Depends(checker),
        gate: FaceGate = Depends(face_gate),
    ) -> list[PhotoCheck]:
        """Before an enrolment: per photo, is there exactly one face, large and sharp enough? Nothing
        is written."""
        return [PhotoCheck(**check_photo(gate, read_upload(u, limits.max_upload_bytes))) for u in images]

    return router


def writing_router(limits: ApiSettings) -> APIRouter:
    """Enrol and remove: each a new gallery version, an audit row, a count and a snapshot request."""
    router = APIRouter(route_class=LimitedFormRoute)

    @router.post(
        "/employees",
        status_code=201,
        responses={**error_responses(400, 403, 404, 415), 409: {"model": DuplicateFaceBody}},
    )
    def enrol_employee(
        employee_id: str = employee_id_form(limits),
        name: str = Form("", max_length=limits.max_name_length, description="display name"),
        replace: bool = Form(False, description="re-enrol an existing employee with these photos"),
        force: bool = Form(
            False,
            description="enrol even if the face looks already enrolled "
            "under another id (409 duplicate_face otherwise) or, "
            "under pad.mode enforce, is judged a presentation "
            "attack (422 presentation_attack otherwise)",
        ),
        images: list[UploadFile] = File(
            ...,
            min_length=1,
            max_length=limits.max_files,
            description=f"1 to {limits.max_files} photos, exactly one face each",
        ),
        who: Principal = Depends(enroller),
        state: ApiState = Depends(api_state),
    ) -> Enrolled:
        """Enrol one employee from one or more photos: a new gallery version, no retraining."""
        photos = [read_upload(u, limits.max_upload_bytes) for u in images]
        g = state.gate.enrol(employee_id, name or employee_id, photos, replace=replace, force=force, actor=who.name)
        state.wrote("enrol")
        return Enrolled(employee_id=employee_id, photos=len(photos), employees=g.n_employees)

    @router.delete("/employees/{employee_id}", responses=error_responses(403, 404, 409))
    def remove_employee(
        employee_id: str = Path(..., max_length=limits.max_id_length, pattern=EMPLOYEE_ID.pattern),
        who: Principal = Depends(remover),
        state: ApiState = Depends(api_state),
    ) -> Removed:
        """Remove an employee: embeddings (every local gallery version) and stored photos are deleted;
        with ``access_log.erase_on_remove`` their access-log decision rows too (the answer says)."""
        out = state.gate.remove_employee(employee_id, actor=who.name)
        state.wrote("remove")
        return Removed(**out)

    return router
