"""REST API (FastAPI): identify, verify, enrol, remove, status, health. `facegate serve` runs it.

A thin adapter over ``components.service.FaceGate``: readers answer from an immutable snapshot of the
current gallery; writers take one lock, build the new version on disk (atomically) and only then swap
the snapshot, so a request never sees half an update and concurrent enrolments are serialised.

Limits come before work (``components.request_guard``): every route but /health and the docs needs the
API key (header ``X-API-Key``), checked from the headers before one body byte is read; the body is
refused on its Content-Length or once over ``api.max_body_bytes``; forms are parsed with limits on
files, fields and field size. Every error is JSON ``{"code": ..., "message": ...}`` with its status;
an unexpected failure is ``internal_error`` (500) with no traceback in the answer. Swagger UI (/docs)
and ReDoc (/redoc) are served from the ``fastapi-offline`` package's files: they work offline.
DVC snapshots of the gallery are made by a background worker after writes, flushed when the server stops.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import Depends, FastAPI, File, Form, Path, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from components.enrolment import EMPLOYEE_ID, Photo
from components.errors import (BadRequest, FacegateError, FormLimitExceeded, ImageTooLarge, Unauthorized,
                               UnsupportedMediaType)
from components.images import decode_image
from components.paths import state_dir
from components.request_guard import API_KEY_HEADER, RequestGuard, key_matches
from components.service import FaceGate, Identification, Verification

IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff", "image/gif"}
DOCS_STATIC = "/docs-static"
PUBLIC_PATHS = ("/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
              413: "body_too_large", 415: "unsupported_media_type", 422: "invalid_request"}


def api_key() -> str:
    """FACEGATE_API_KEY, else a key generated once into the state dir (mode 600)."""
    if os.environ.get("FACEGATE_API_KEY"):
        return os.environ["FACEGATE_API_KEY"]
    path = state_dir() / "api_key"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


# ------------------------------------------------------------------------------ answers (OpenAPI)


class ErrorBody(BaseModel):
    code: str
    message: str


class Health(BaseModel):
    status: Literal["ok"]


class Status(BaseModel):
    status: Literal["ok"]
    embedder: str
    employees: int
    tau: float | None


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


def _errors(*statuses: int) -> dict:
    return {s: {"model": ErrorBody} for s in sorted({401, 413, 422, 500, 503, *statuses})}


# ------------------------------------------------------------------------------------ form limits


def _form_error(detail: str) -> FacegateError:
    if detail.startswith("Too many") or "exceeded maximum size" in detail:
        return FormLimitExceeded(detail)
    return BadRequest(f"form: {detail}")


class LimitedFormRoute(APIRoute):
    """Parses a form body with the app's limits on files, fields and field size (``app.state.form_limits``)
    before FastAPI's own parsing, which then reuses the parsed form."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def limited(request: Request):
            ctype = request.headers.get("content-type", "")
            if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
                try:
                    await request.form(**request.app.state.form_limits)
                except StarletteHTTPException as exc:  # Starlette's MultiPartException, as a 400
                    raise _form_error(str(exc.detail)) from None
            return await handler(request)

        return limited


# ------------------------------------------------------------------------------------------- app


def create_app(gate: FaceGate, key: str | None = None, after_write: Callable[[], None] | None = None,
               on_stop: Callable[[], None] | None = None) -> FastAPI:
    """The REST adapter over ``gate``: decode uploads, call a verb, answer its result as JSON.

    ``after_write`` runs after every enrolment or removal (the DVC snapshot request); ``on_stop`` when
    the server stops (the final snapshot).
    """
    key = key or api_key()
    key_bytes = key.encode()
    settings = gate.settings
    limits = settings.api
    upload_limit = limits.max_upload_bytes

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        if on_stop:
            on_stop()

    app = FastAPIOffline(title="facegate", version="1", description=__doc__, lifespan=lifespan,
                         static_url=DOCS_STATIC)
    app.router.route_class = LimitedFormRoute
    app.state.form_limits = {"max_files": limits.max_files, "max_fields": limits.max_fields,
                             "max_part_size": limits.max_field_bytes}
    app.add_middleware(RequestGuard, key=key_bytes, max_body_bytes=limits.max_body_bytes,
                       public_paths=PUBLIC_PATHS, public_prefixes=(DOCS_STATIC + "/",))

    def error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)

    @app.exception_handler(FacegateError)
    async def facegate_error(_: Request, exc: FacegateError) -> JSONResponse:
        return error(exc.http_status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path", "header"))
            parts.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
        return error(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        # the traceback goes to the server log (uvicorn), never into the answer
        return error(500, "internal_error", "internal error (see the server log)")

    api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                                  description="the service's API key ($FACEGATE_API_KEY or .facegate/api_key)")

    def require_key(request: Request, _: str | None = Depends(api_key_header)) -> None:
        # RequestGuard already refused a wrong key; checked again here in raw bytes, in case the app is
        # mounted without it
        raw = [v for k, v in request.scope.get("headers", ()) if k.lower() == API_KEY_HEADER.lower().encode()]
        if len(raw) != 1 or not key_matches(raw[0], key_bytes):
            raise Unauthorized(f"missing or wrong {API_KEY_HEADER} header")

    protected = [Depends(require_key)]

    def read_upload(upload: UploadFile) -> Photo:
        if (upload.content_type or "").split(";")[0].strip().lower() not in IMAGE_TYPES:
            raise UnsupportedMediaType(
                f"{upload.filename}: content type {upload.content_type!r} is not an image type")
        data = upload.file.read(upload_limit + 1)
        if len(data) > upload_limit:
            raise ImageTooLarge(upload.filename or "upload", f"more than {upload_limit} bytes")
        return Photo(upload.filename or "upload", data)

    def pixels(photo: Photo):
        return decode_image(photo.data, photo.name, settings.images.max_pixels).pixels

    def employee_id_form():
        return Form(..., min_length=1, max_length=limits.max_id_length, pattern=EMPLOYEE_ID.pattern,
                    description="employee id: letters, digits, '_', '.', '-' (first a letter or digit)")

    @app.get("/health", responses={500: {"model": ErrorBody}})
    def health() -> Health:
        """Liveness only: no key needed, nothing revealed."""
        return Health(status="ok")

    @app.get("/status", dependencies=protected, responses=_errors())
    def status() -> Status:
        """The model in service, the number of employees, the gallery's tau."""
        return Status(**gate.status())

    @app.post("/identify", dependencies=protected, responses=_errors(400, 404, 409, 415))
    def identify(image: UploadFile = File(..., description="a camera frame or photo")) -> IdentificationOut:
        """Who is this? Every face in the frame: box, employee id or not recognized, distance, tau."""
        return IdentificationOut(**gate.identify(pixels(read_upload(image))).to_dict())

    @app.post("/verify", dependencies=protected, responses=_errors(400, 404, 409, 415))
    def verify(employee_id: str = employee_id_form(),
               image: UploadFile = File(..., description="a photo with exactly one face")) -> VerificationOut:
        """Is this the claimed employee? 1:1 at the calibrated false-accept rate."""
        photo = read_upload(image)
        return VerificationOut(**gate.verify(employee_id, pixels(photo), photo.name).to_dict())

    @app.get("/employees", dependencies=protected, responses=_errors())
    def employees() -> list[EmployeeOut]:
        return [EmployeeOut(**e) for e in gate.employees()]

    @app.post("/employees", status_code=201, dependencies=protected, responses=_errors(400, 404, 409, 415))
    def enrol_employee(employee_id: str = employee_id_form(),
                       name: str = Form("", max_length=limits.max_name_length, description="display name"),
                       replace: bool = Form(False, description="re-enrol an existing employee with these photos"),
                       force: bool = Form(False, description="enrol even if the face is already enrolled under "
                                                             "another id (409 duplicate_face otherwise)"),
                       images: list[UploadFile] = File(..., min_length=1, max_length=limits.max_files,
                                                       description=f"1 to {limits.max_files} photos, "
                                                                   "exactly one face each")) -> Enrolled:
        """Enrol one employee from one or more photos: a new gallery version, no retraining."""
        photos = [read_upload(u) for u in images]
        g = gate.enrol(employee_id, name or employee_id, photos, replace=replace, force=force)
        if after_write:
            after_write()
        return Enrolled(employee_id=employee_id, photos=len(photos), employees=g.n_employees)

    @app.delete("/employees/{employee_id}", dependencies=protected, responses=_errors(404, 409))
    def remove_employee(employee_id: str = Path(..., max_length=limits.max_id_length,
                                                pattern=EMPLOYEE_ID.pattern)) -> Removed:
        """Remove an employee: embeddings (every local gallery version) and stored photos are deleted."""
        n = gate.remove(employee_id)
        if after_write:
            after_write()
        return Removed(employee_id=employee_id, vectors_removed=n)

    return app


def build_service_app() -> FastAPI:
    """The deployment's app: the gallery of this repository, DVC snapshots by a background worker."""
    from components.gallery_snapshots import SnapshotWorker, mark_dirty

    gate = FaceGate()
    if gate.settings.gallery.snapshot == "manual":
        return create_app(gate, after_write=mark_dirty)
    snapshots = SnapshotWorker()
    return create_app(gate, after_write=snapshots.request, on_stop=snapshots.close)


def serve(host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(build_service_app(), host=host, port=port, log_level="info")
