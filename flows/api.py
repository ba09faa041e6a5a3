"""REST API (FastAPI): identify, verify, enrol, remove, health. `facegate serve` runs it.

Readers answer from an immutable snapshot of the current gallery; writers take one lock, build the new
version on disk (atomically) and only then swap the snapshot, so a request never sees half an update
and concurrent enrolments are serialised, never lost. Every route but /health needs the API key
(header ``X-API-Key``). Errors are JSON: ``{"code": ..., "message": ...}``.
"""
from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable

from fastapi import Depends, FastAPI, File, Form, Header, Request, UploadFile
from fastapi.responses import JSONResponse

from components.enrolment import EnrolmentStore, Photo, enrol, remove
from components.errors import FacegateError, ImageTooLarge
from components.gallery import Gallery, current_version
from components.images import decode_image
from components.paths import state_dir
from components.recognition import FaceRecognizer
from components.settings import Settings

IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff", "image/gif"}
STATUS = {  # error code -> HTTP status
    "no_face_found": 422, "multiple_faces": 422, "unreadable_image": 422, "invalid_employee": 422,
    "invalid_gallery_input": 422, "image_too_large": 413, "unsupported_media_type": 415,
    "unknown_employee": 404, "gallery_not_found": 404, "employee_exists": 409,
    "gallery_model_mismatch": 409, "gallery_locked": 503, "gallery_corrupt": 503, "unauthorized": 401,
}


class ApiError(FacegateError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


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


class GalleryHolder:
    """The current gallery snapshot, the recognizer that matches it, and the single-writer lock.

    Another process may switch the gallery (a CLI enrolment, a retraining chain promoting a new
    champion): each request first compares the on-disk CURRENT pointer with the snapshot's version
    (one small file read) and reloads; a gallery made by another model brings that model in too
    (``recognizer_for``), so a promotion reaches the turnstile without a restart.
    """

    def __init__(self, store: EnrolmentStore, recognizer: FaceRecognizer,
                 recognizer_for: Callable[[str], FaceRecognizer] | None = None) -> None:
        self.store = store
        self.recognizer = recognizer
        self.recognizer_for = recognizer_for
        self.write_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self.snapshot: Gallery | None = None
        self.version: str | None = None
        self.refresh()

    def _disk_version(self) -> str | None:
        try:
            return current_version(self.store.index_dir) if self.store.exists() else None
        except FacegateError:
            return self.version  # a pointer mid-write: keep serving the snapshot

    def refresh(self) -> None:
        if self._disk_version() == self.version:
            return
        with self._refresh_lock:
            now = self._disk_version()
            if now == self.version or now is None:
                return
            g = Gallery.load(self.store.index_dir, version=now)
            if self.recognizer_for and g.manifest.embedder_version != self.recognizer.embedder_version:
                self.recognizer = self.recognizer_for(g.manifest.embedder_version)
            self.snapshot, self.version = g, now

    def reload(self) -> None:
        self.version = None
        self.refresh()

    def current(self) -> Gallery:
        self.refresh()
        g = self.snapshot
        if g is None:
            raise ApiError("gallery_not_found", "no gallery yet: enrol an employee first")
        return g


def create_app(settings: Settings, store: EnrolmentStore, recognizer: FaceRecognizer,
               new_gallery: Callable[[], Gallery], key: str | None = None,
               after_write: Callable[[], None] | None = None,
               recognizer_for: Callable[[str], FaceRecognizer] | None = None) -> FastAPI:
    key = key or api_key()
    holder = GalleryHolder(store, recognizer, recognizer_for)
    limit = settings.api.max_upload_bytes
    app = FastAPI(title="facegate", version="1", description=__doc__)

    @app.exception_handler(FacegateError)
    async def facegate_error(_: Request, exc: FacegateError) -> JSONResponse:
        return JSONResponse({"code": exc.code, "message": exc.message}, status_code=STATUS.get(exc.code, 400))

    def require_key(x_api_key: str | None = Header(default=None)) -> None:
        if not x_api_key or not secrets.compare_digest(x_api_key, key):
            raise ApiError("unauthorized", "missing or wrong X-API-Key")

    def read_upload(upload: UploadFile) -> Photo:
        if (upload.content_type or "").split(";")[0] not in IMAGE_TYPES:
            raise ApiError("unsupported_media_type",
                           f"{upload.filename}: content type {upload.content_type!r} is not an image type")
        data = upload.file.read(limit + 1)
        if len(data) > limit:
            raise ImageTooLarge(upload.filename or "upload", f"more than {limit} bytes")
        return Photo(upload.filename or "upload", data)

    def checked_gallery() -> tuple[Gallery, FaceRecognizer]:
        g, recognizer = holder.current(), holder.recognizer
        g.check_model(recognizer.embedder_name, recognizer.embedder_version)
        return g, recognizer

    @app.get("/health")
    def health() -> dict:
        holder.refresh()
        g, recognizer = holder.snapshot, holder.recognizer
        return {"status": "ok", "embedder": f"{recognizer.embedder_name}@{recognizer.embedder_version}",
                "employees": g.n_employees if g else 0, "tau": g.manifest.tau if g else None}

    @app.post("/identify", dependencies=[Depends(require_key)])
    def identify(image: UploadFile = File(...)) -> dict:
        photo = read_upload(image)
        g, recognizer = checked_gallery()
        pixels = decode_image(photo.data, photo.name, settings.images.max_pixels).pixels
        tau = store.identification_tau(g, settings.gallery.target_fpir)
        faces = []
        for face in recognizer.embed_all(pixels):
            eid, dist, name = g.identify(face.embedding[None], tau)
            faces.append({"box": face.box.as_list(), "employee_id": eid, "name": name,
                          "recognized": eid is not None, "distance": dist})
        return {"faces": faces, "tau": tau, "target_fpir": settings.gallery.target_fpir}

    @app.post("/verify", dependencies=[Depends(require_key)])
    def verify(employee_id: str = Form(...), image: UploadFile = File(...)) -> dict:
        photo = read_upload(image)
        g, recognizer = checked_gallery()
        pixels = decode_image(photo.data, photo.name, settings.images.max_pixels).pixels
        face = recognizer.embed_one(pixels, photo.name)
        accepted, dist = g.verify(employee_id, face.embedding[None])
        return {"employee_id": employee_id, "accepted": accepted, "distance": dist, "tau": g.manifest.tau,
                "target_far": g.manifest.target_far}

    @app.get("/employees", dependencies=[Depends(require_key)])
    def employees() -> list[dict]:
        holder.refresh()
        g = holder.snapshot
        return g.employees().to_dict("records") if g else []

    @app.post("/employees", status_code=201, dependencies=[Depends(require_key)])
    def enrol_employee(employee_id: str = Form(...), name: str = Form(""), replace: bool = Form(False),
                       images: list[UploadFile] = File(...)) -> dict:
        photos = [read_upload(u) for u in images]
        with holder.write_lock:
            holder.refresh()
            g = enrol(store, holder.recognizer, employee_id, name or employee_id, photos,
                      max_pixels=settings.images.max_pixels, new_gallery=new_gallery, replace=replace,
                      keep_versions=settings.gallery.keep_versions)
            holder.reload()
        if after_write:
            after_write()
        return {"employee_id": employee_id, "photos": len(photos), "employees": g.n_employees}

    @app.delete("/employees/{employee_id}", dependencies=[Depends(require_key)])
    def remove_employee(employee_id: str) -> dict:
        with holder.write_lock:
            n = remove(store, employee_id)
            holder.reload()
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
        from flows.serving import gallery_store

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
    from components import data_version
    from components.settings import load_settings
    from flows.serving import gallery_store, new_gallery_factory, service_recognizer

    settings = load_settings()
    recognizer = service_recognizer(settings)

    def champion_recognizer(_: str) -> FaceRecognizer:
        """The gallery moved to another model: the champion now (a mismatch is still refused)."""
        service_recognizer.cache_clear()
        return service_recognizer(settings)

    return create_app(settings, gallery_store(), recognizer,
                      new_gallery_factory(recognizer, settings, data_version.read_version()),
                      after_write=DvcSnapshotter(), recognizer_for=champion_recognizer)


def serve(host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(build_service_app(), host=host, port=port, log_level="info")

