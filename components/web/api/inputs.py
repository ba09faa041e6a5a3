"""What a route reads from a request, with the limits it reads it under: forms parsed with the app's
limits on files, fields and field size; uploads that must be images of at most ``api.max_upload_bytes``;
the employee id and entrance form fields; the times of the access log's filters. Shared by the API's
routes and the console's pages, so both refuse the same input the same way."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
from fastapi import Form, Request, UploadFile
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from facegate.components.core.errors import (
    BadRequest,
    FacegateError,
    FormLimitExceeded,
    ImageTooLarge,
    UnsupportedMediaType,
)
from facegate.components.core.images import decode_image
from facegate.components.core.settings import ApiSettings
from facegate.components.gallery.enrolment import EMPLOYEE_ID, Photo

IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff", "image/gif"}
ENTRANCE = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


def form_limits(limits: ApiSettings) -> dict[str, int]:
    """Starlette's ``request.form`` arguments for the API's limits (``LimitedFormRoute`` reads them)."""
    return {"max_files": limits.max_files, "max_fields": limits.max_fields, "max_part_size": limits.max_field_bytes}


def _form_error(detail: str) -> FacegateError:
    if detail.startswith("Too many") or "exceeded maximum size" in detail:
        return FormLimitExceeded(detail)
    return BadRequest(f"form: {detail}")


class LimitedFormRoute(APIRoute):
    """Parses a form body with the app's limits on files, fields and field size (``app.state.api.form_limits``)
    before FastAPI's own parsing, which then reuses the parsed form."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def limited(request: Request):
            ctype = request.headers.get("content-type", "")
            if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
                try:
                    await request.form(**request.app.state.api.form_limits)
                except StarletteHTTPException as exc:  # Starlette's MultiPartException, as a 400
                    raise _form_error(str(exc.detail)) from None
            return await handler(request)

        return limited


def read_upload(upload: UploadFile, max_bytes: int) -> Photo:
    """An uploaded image's bytes: refused by its declared type (not an image) or once over ``max_bytes``."""
    if (upload.content_type or "").split(";")[0].strip().lower() not in IMAGE_TYPES:
        raise UnsupportedMediaType(f"{upload.filename}: content type {upload.content_type!r} is not an image type")
    data = upload.file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageTooLarge(upload.filename or "upload", f"more than {max_bytes} bytes")
    return Photo(upload.filename or "upload", data)


def decoded_pixels(photo: Photo, max_pixels: int) -> np.ndarray:
    return decode_image(photo.data, photo.name, max_pixels).pixels


def entrance_form() -> Any:  # a FastAPI parameter declaration
    return Form(None, max_length=64, pattern=ENTRANCE, description="entrance or camera id, recorded in the access log")


def employee_id_form(limits: ApiSettings) -> Any:
    return Form(
        ...,
        min_length=1,
        max_length=limits.max_id_length,
        pattern=EMPLOYEE_ID.pattern,
        description="employee id: letters, digits, '_', '.', '-' (first a letter or digit)",
    )


def parse_time(field: str, value: str | None) -> datetime | None:
    """An ISO time from a filter (``2026-12-01`` or ``2026-12-01T07:30``), UTC unless it says otherwise."""
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{field}: {value!r} is not an ISO date or time") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)
