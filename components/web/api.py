"""REST API (FastAPI): identify, verify, enrol, remove, status, health. `facegate serve` runs it.

A thin adapter over ``facegate.components.service.facade.FaceGate``: readers answer from an immutable snapshot of the
current gallery; writers take one lock, build the new version on disk (atomically) and only then swap
the snapshot, so a request never sees half an update and concurrent enrolments are serialised.

Limits come before work (``facegate.components.web.request_guard``): every route but /health and the docs needs the
API key (header ``X-API-Key``), checked from the headers before one body byte is read; the body is
refused on its Content-Length or once over ``api.max_body_bytes``; forms are parsed with limits on
files, fields and field size. Every error is JSON ``{"code": ..., "message": ...}`` with its status;
an unexpected failure is ``internal_error`` (500) with no traceback in the answer. Swagger UI (/docs)
and ReDoc (/redoc) are served from the ``fastapi-offline`` package's files: they work offline.
DVC snapshots of the gallery are made by a background worker after writes, flushed when the server stops.

Accounts and roles (``facegate.components.web.accounts``): the key may be the deployment's single key (an operator)
or an account's ``NAME.SECRET``; the console's session cookie works too. ``operator`` enrols, removes,
identifies and reads; ``viewer`` reads (employees, access log, status); ``turnstile`` identifies and
verifies only; anything else is 403 ``forbidden``. Every decision and gallery change goes to the access
log (``facegate.components.service.access_log``) before the answer. ``/metrics`` (Prometheus, ``facegate_*``) needs no
key when the server is bound to loopback. The operator console (``components/web/console.py``) is mounted at
``/`` (login) and ``/console/...``.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import Depends, FastAPI, File, Form, Path, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from facegate.components.web.accounts import Accounts, Authenticator, Principal, Sessions, session_secret
from facegate.components.gallery.enrolment import EMPLOYEE_ID, Photo
from facegate.components.core.errors import (BadRequest, FacegateError, FormLimitExceeded, Forbidden, ImageTooLarge,
                               LoginRateLimited, UnknownEmployee, Unauthorized, UnsupportedMediaType)
from facegate.components.core.images import decode_image
from facegate.components.core.inference import InferenceSlots, configure_threads, cpu_cores
from facegate.components.web.metrics import MetricsMiddleware, ServiceMetrics
from facegate.components.core.paths import state_dir
from facegate.components.web.request_guard import API_KEY_HEADER, PRINCIPAL_SCOPE_KEY, RequestGuard
from facegate.components.service.facade import FaceGate
from facegate.components.service.answers import Identification, Verification

IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff", "image/gif"}
DOCS_STATIC = "/docs-static"
PUBLIC_PATHS = ("/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/", "/login", "/logout")
CONSOLE_STATIC = "/console/static"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
ENTRANCE = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
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
    access_rows_erased: int = 0  # the employee's decision rows deleted (access_log.erase_on_remove)
    access_rows_kept: int = 0
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
               on_stop: Callable[[], None] | None = None, accounts: Accounts | None = None,
               console: bool = True) -> FastAPI:
    """The REST adapter over ``gate``: decode uploads, call a verb, answer its result as JSON.

    ``after_write`` runs after every enrolment or removal (the DVC snapshot request); ``on_stop`` when
    the server stops (the final snapshot). ``accounts`` default: those in ``gate``'s access-log
    database, with ``key`` as the legacy operator key (only that key when the gate keeps no log).
    """
    key = key or api_key()
    settings = gate.settings
    limits = settings.api
    upload_limit = limits.max_upload_bytes
    log = gate.access_log
    if accounts is None:
        accounts = Accounts(log.engine if log is not None else None, legacy_key=key)
    sessions = Sessions(session_secret() if log is not None else secrets.token_bytes(32),
                        settings.console.session_hours * 3600)
    authenticate = Authenticator(accounts, sessions)

    def gallery_size() -> tuple[int, int]:
        g = gate.snapshot()
        return (g.n_employees, g.n_vectors) if g else (0, 0)

    metrics = ServiceMetrics(gallery_size)

    def metrics_public(scope) -> bool:
        server = scope.get("server") or ("",)
        return (scope.get("path") == "/metrics" and settings.console.metrics_public_on_loopback
                and str(server[0]) in LOOPBACK)

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
    def public_when(scope) -> bool:
        # the console's pages answer a visitor without a session themselves (a redirect to the login)
        page = scope.get("path", "").startswith("/console/") and scope.get("method") in ("GET", "HEAD")
        return page or metrics_public(scope)

    app.add_middleware(RequestGuard, authenticate=authenticate, max_body_bytes=limits.max_body_bytes,
                       public_paths=PUBLIC_PATHS, public_prefixes=(DOCS_STATIC + "/", CONSOLE_STATIC + "/"),
                       public_when=public_when)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: refusals are counted too
    app.state.metrics, app.state.accounts, app.state.sessions = metrics, accounts, sessions

    def error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)

    @app.exception_handler(FacegateError)
    async def facegate_error(_: Request, exc: FacegateError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, LoginRateLimited) else None
        return error(exc.http_status, exc.code, exc.message, headers)

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

    def principal(request: Request) -> Principal:
        # RequestGuard already authenticated from the headers; asked again here in case the app is
        # mounted without it
        p = request.scope.get(PRINCIPAL_SCOPE_KEY) or authenticate(request.scope)
        if p is None:
            raise Unauthorized(f"missing or wrong {API_KEY_HEADER} header")
        return p

    def need(permission: str):
        def check(request: Request, _: str | None = Depends(api_key_header)) -> Principal:
            p = principal(request)
            if not p.can(permission):
                raise Forbidden(f"account {p.name!r} ({p.role}) may not {permission}")
            return p

        return check

    reader, decider, enroller, remover, checker = (need(x) for x in ("read", "decide", "enrol", "remove", "check"))
    protected = [Depends(reader)]

    def entrance_form():
        return Form(None, max_length=64, pattern=ENTRANCE,
                    description="entrance or camera id, recorded in the access log")

    def count_decisions(kind: str, outcomes: list[str]) -> None:
        for o in outcomes:
            metrics.decision(kind, o)

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

    @app.get("/status", dependencies=protected, responses=_errors(403))
    def status() -> Status:
        """The model in service, the number of employees, the gallery's tau."""
        return Status(**gate.status())

    @app.post("/identify", responses=_errors(400, 403, 404, 409, 415))
    def identify(image: UploadFile = File(..., description="a camera frame or photo"),
                 entrance: str | None = entrance_form(), who: Principal = Depends(decider)) -> IdentificationOut:
        """Who is this? Every face in the frame: box, employee id or not recognized, distance, tau.
        Each face is an access-log row (with ``entrance``) before the answer."""
        result = gate.identify(pixels(read_upload(image)), entrance=entrance, actor=who.name).to_dict()
        count_decisions("identify", [("recognized" if f["recognized"] else "not_recognized") for f in result["faces"]]
                        or ["no_face"])
        return IdentificationOut(**result)

    @app.post("/verify", responses=_errors(400, 403, 404, 409, 415))
    def verify(employee_id: str = employee_id_form(),
               image: UploadFile = File(..., description="a photo with exactly one face"),
               entrance: str | None = entrance_form(), who: Principal = Depends(decider)) -> VerificationOut:
        """Is this the claimed employee? 1:1 at the calibrated false-accept rate (an access-log row)."""
        photo = read_upload(image)
        result = gate.verify(employee_id, pixels(photo), photo.name, entrance=entrance, actor=who.name).to_dict()
        count_decisions("verify", ["accepted" if result["accepted"] else "rejected"])
        return VerificationOut(**result)

    @app.get("/employees", dependencies=protected, responses=_errors(403))
    def employees() -> list[EmployeeOut]:
        return [EmployeeOut(**e) for e in gate.employees()]

    @app.get("/employees/{employee_id}/photo", dependencies=protected, response_class=Response,
             responses={**_errors(403, 404), 200: {"content": {"image/jpeg": {}}}})
    def employee_photo(employee_id: str = Path(..., max_length=limits.max_id_length,
                                               pattern=EMPLOYEE_ID.pattern)) -> Response:
        """A small JPEG of the employee's first enrolment photo (the console's thumbnails)."""
        from facegate.components.web.photo_checks import thumbnail

        g = gate.snapshot()
        found = gate.store.employee_photos(employee_id) if g is not None and employee_id in g else []
        if not found:
            raise UnknownEmployee(employee_id)
        return Response(thumbnail(found[0]), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"})

    @app.post("/photos/check", responses=_errors(400, 403, 415))
    def check_photos(images: list[UploadFile] = File(..., min_length=1, max_length=limits.max_files,
                                                     description="enrolment photos to check"),
                     _: Principal = Depends(checker)) -> list[PhotoCheck]:
        """Before an enrolment: per photo, is there exactly one face, large and sharp enough? Nothing
        is written."""
        from facegate.components.web.photo_checks import check_photo

        return [PhotoCheck(**check_photo(gate, read_upload(u))) for u in images]

    @app.get("/access-log", dependencies=protected, responses=_errors(400, 403))
    def access_log(employee_id: str | None = Query(None, max_length=64), outcome: str | None = Query(None, max_length=16),
                   entrance: str | None = Query(None, max_length=64), kind: str | None = Query(None, max_length=16),
                   since: str | None = Query(None, max_length=40, description="ISO time, UTC unless it says"),
                   until: str | None = Query(None, max_length=40),
                   limit: int = Query(200, ge=1, le=10_000)) -> list[DecisionOut]:
        """Decisions, newest first, filtered."""
        from facegate.components.service.access_log import DecisionFilter

        if log is None:
            return []
        return [DecisionOut(**r) for r in log.decisions(DecisionFilter(
            employee_id or None, outcome or None, entrance or None, kind or None, parse_time("since", since),
            parse_time("until", until), limit))]

    @app.get("/audit", dependencies=protected, responses=_errors(403))
    def audit(employee_id: str | None = Query(None, max_length=64),
              limit: int = Query(200, ge=1, le=10_000)) -> list[AuditOut]:
        """Gallery changes (enrol, remove, promote, rollback): who, when, what; newest first."""
        return [AuditOut(**r) for r in log.audit_events(employee_id or None, limit)] if log is not None else []

    @app.get("/whoami", responses=_errors())
    def whoami(request: Request) -> Me:
        p = principal(request)
        return Me(name=p.name, role=p.role)

    @app.get("/metrics", response_class=Response, include_in_schema=False)  # Prometheus' text format
    def prometheus(request: Request) -> Response:
        """Prometheus metrics (``facegate_*``); no key needed when the server is bound to loopback."""
        if not metrics_public(request.scope):
            principal(request)
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.post("/employees", status_code=201, responses=_errors(400, 403, 404, 409, 415))
    def enrol_employee(employee_id: str = employee_id_form(),
                       name: str = Form("", max_length=limits.max_name_length, description="display name"),
                       replace: bool = Form(False, description="re-enrol an existing employee with these photos"),
                       force: bool = Form(False, description="enrol even if the face is already enrolled under "
                                                             "another id (409 duplicate_face otherwise)"),
                       images: list[UploadFile] = File(..., min_length=1, max_length=limits.max_files,
                                                       description=f"1 to {limits.max_files} photos, "
                                                                   "exactly one face each"),
                       who: Principal = Depends(enroller)) -> Enrolled:
        """Enrol one employee from one or more photos: a new gallery version, no retraining."""
        photos = [read_upload(u) for u in images]
        g = gate.enrol(employee_id, name or employee_id, photos, replace=replace, force=force, actor=who.name)
        metrics.gallery_changes.labels("enrol").inc()
        if after_write:
            after_write()
        return Enrolled(employee_id=employee_id, photos=len(photos), employees=g.n_employees)

    @app.delete("/employees/{employee_id}", responses=_errors(403, 404, 409))
    def remove_employee(employee_id: str = Path(..., max_length=limits.max_id_length,
                                                pattern=EMPLOYEE_ID.pattern),
                        who: Principal = Depends(remover)) -> Removed:
        """Remove an employee: embeddings (every local gallery version) and stored photos are deleted;
        with ``access_log.erase_on_remove`` their access-log decision rows too (the answer says)."""
        out = gate.remove_employee(employee_id, actor=who.name)
        metrics.gallery_changes.labels("remove").inc()
        if after_write:
            after_write()
        return Removed(**out)

    if console:
        from fastapi.staticfiles import StaticFiles

        from facegate.components.web.console import CONSOLE_DIR, console_router

        app.include_router(console_router(gate, accounts, sessions, metrics, principal))
        app.mount(CONSOLE_STATIC, StaticFiles(directory=str(CONSOLE_DIR / "static")), name="console-static")
    return app


def parse_time(field: str, value: str | None):
    """An ISO time from a filter (``2026-12-01`` or ``2026-12-01T07:30``), UTC unless it says otherwise."""
    from datetime import UTC, datetime

    if not value:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{field}: {value!r} is not an ISO date or time") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def inference_slots(settings) -> InferenceSlots:
    """The server's bound on concurrent model runs (``api.inference_slots``, 0: one per core), with torch
    and OpenCV set to ``api.inference_threads`` each: N requests on N threads never oversubscribe the cores."""
    configure_threads(settings.api.inference_threads)
    slots = settings.api.inference_slots or max(1, cpu_cores() // settings.api.inference_threads)
    return InferenceSlots(slots)


def build_service_app() -> FastAPI:
    """The deployment's app: the gallery of this repository, DVC snapshots by a background worker."""
    from facegate.components.lifecycle.gallery_snapshots import SnapshotWorker, mark_dirty
    from facegate.components.core.settings import load_settings

    settings = load_settings()
    gate = FaceGate(settings, inference=inference_slots(settings))
    if gate.settings.gallery.snapshot == "manual":
        return create_app(gate, after_write=mark_dirty)
    snapshots = SnapshotWorker()
    return create_app(gate, after_write=snapshots.request, on_stop=snapshots.close)


def serve(host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(build_service_app(), host=host, port=port, log_level="info")
