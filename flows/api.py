"""REST API (FastAPI): identify, verify, enrol, remove, health. `facegate serve` runs it.

A thin adapter over ``components.service.FaceGate``: readers answer from an immutable snapshot of the
current gallery; writers take one lock, build the new version on disk (atomically) and only then swap
the snapshot, so a request never sees half an update and concurrent enrolments are serialised. Every
route but /health needs the API key (header ``X-API-Key``). Errors are JSON: ``{"code": ..., "message": ...}``.
"""
from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable

from fastapi import Depends, FastAPI, File, Form, Header, Request, UploadFile
from fastapi.responses import JSONResponse

from components.enrolment import Photo
from components.errors import FacegateError, ImageTooLarge, Unauthorized, UnsupportedMediaType
from components.images import decode_image
from components.paths import state_dir
from components.service import FaceGate

IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff", "image/gif"}


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


def create_app(gate: FaceGate, key: str | None = None, after_write: Callable[[], None] | None = None) -> FastAPI:
    """The REST adapter over ``gate``: decode uploads, call a verb, answer its result as JSON."""
    key = key or api_key()
    settings = gate.settings
    limit = settings.api.max_upload_bytes
    app = FastAPI(title="facegate", version="1", description=__doc__)

    @app.exception_handler(FacegateError)
    async def facegate_error(_: Request, exc: FacegateError) -> JSONResponse:
        return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.http_status)

    def require_key(x_api_key: str | None = Header(default=None)) -> None:
        if not x_api_key or not secrets.compare_digest(x_api_key, key):
            raise Unauthorized("missing or wrong X-API-Key")

    def read_upload(upload: UploadFile) -> Photo:
        if (upload.content_type or "").split(";")[0] not in IMAGE_TYPES:
            raise UnsupportedMediaType(
                f"{upload.filename}: content type {upload.content_type!r} is not an image type")
        data = upload.file.read(limit + 1)
        if len(data) > limit:
            raise ImageTooLarge(upload.filename or "upload", f"more than {limit} bytes")
        return Photo(upload.filename or "upload", data)

    def pixels(photo: Photo):
        return decode_image(photo.data, photo.name, settings.images.max_pixels).pixels

    @app.get("/health")
    def health() -> dict:
        return gate.status()

    @app.post("/identify", dependencies=[Depends(require_key)])
    def identify(image: UploadFile = File(...)) -> dict:
        return gate.identify(pixels(read_upload(image))).to_dict()

    @app.post("/verify", dependencies=[Depends(require_key)])
    def verify(employee_id: str = Form(...), image: UploadFile = File(...)) -> dict:
        photo = read_upload(image)
        return gate.verify(employee_id, pixels(photo), photo.name).to_dict()

    @app.get("/employees", dependencies=[Depends(require_key)])
    def employees() -> list[dict]:
        return gate.employees()

    @app.post("/employees", status_code=201, dependencies=[Depends(require_key)])
    def enrol_employee(employee_id: str = Form(...), name: str = Form(""), replace: bool = Form(False),
                       images: list[UploadFile] = File(...)) -> dict:
        photos = [read_upload(u) for u in images]
        g = gate.enrol(employee_id, name or employee_id, photos, replace=replace)
        if after_write:
            after_write()
        return {"employee_id": employee_id, "photos": len(photos), "employees": g.n_employees}

    @app.delete("/employees/{employee_id}", dependencies=[Depends(require_key)])
    def remove_employee(employee_id: str) -> dict:
        n = gate.remove(employee_id)
        if after_write:
            after_write()
        return {"employee_id": employee_id, "vectors_removed": n}

    return app


class DvcSnapshotter:
    """Versions ``gallery/`` with DVC after writes, in one background thread (a write never waits for
    DVC; bursts of writes coalesce into one snapshot)."""

    def __init__(self) -> None:
        self._dirty = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="dvc-snapshot")
        self._thread.start()

    def __call__(self) -> None:
        self._dirty.set()

    def _loop(self) -> None:
        from components import data_version
        from components.gallery import gallery_lock
        from components.service import gallery_store

        while True:
            self._dirty.wait()
            self._dirty.clear()
            try:
                with gallery_lock(gallery_store().index_dir):
                    data_version.add_data(target="gallery")
                data_version.push(target="gallery")
            except FacegateError:
                pass  # retried on the next write; the gallery itself is already safely on disk


def build_service_app() -> FastAPI:
    return create_app(FaceGate(), after_write=DvcSnapshotter())


def serve(host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(build_service_app(), host=host, port=port, log_level="info")

