"""Every error the API answers is JSON ``{"code": ..., "message": ...}`` with its HTTP status: the
service's own errors (``FacegateError``) by their code, with the fields a caller can act on (a suspected
duplicate face: the other employee, their thumbnail's URL, distance, threshold, chance), FastAPI's validation errors as
``invalid_request`` (422), Starlette's (unknown path, wrong method) by status, and anything unexpected as
``internal_error`` (500) with the traceback left to the server log, never in the answer."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from facegate.components.core.errors import DuplicateFace, FacegateError, LoginRateLimited

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}


def error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


async def facegate_error(request: Request, exc: FacegateError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, LoginRateLimited) else None
    extra = exc.details()
    if isinstance(exc, DuplicateFace):  # the console shows both faces: the other by the thumbnail it already serves
        extra["other_photo_url"] = request.app.url_path_for("employee_photo", employee_id=exc.other_id)
    return JSONResponse(
        {"code": exc.code, "message": exc.message, **extra}, status_code=exc.http_status, headers=headers
    )


async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path", "header"))
        parts.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
    return error(422, "invalid_request", "; ".join(parts) or "invalid request")


async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = HTTP_CODES.get(exc.status_code, "http_error")
    return error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))


async def internal_error(_: Request, exc: Exception) -> JSONResponse:
    # the traceback goes to the server log (uvicorn), never into the answer
    return error(500, "internal_error", "internal error (see the server log)")


def install_error_handlers(app: FastAPI) -> None:
    # the decorator's form: Starlette types add_exception_handler for handlers of Exception only
    app.exception_handler(FacegateError)(facegate_error)
    app.exception_handler(RequestValidationError)(invalid_request)
    app.exception_handler(StarletteHTTPException)(http_error)
    app.exception_handler(Exception)(internal_error)
