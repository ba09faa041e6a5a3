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
from functools import partial

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from facegate.components.core.paths import state_dir
from facegate.components.service.facade import FaceGate
from facegate.components.web import console as console_pages
from facegate.components.web.accounts import Accounts
from facegate.components.web.api import (
    routes_accounts,
    routes_captures,
    routes_employees,
    routes_log,
    routes_recognition,
    routes_status,
)
from facegate.components.web.api.dependencies import ApiState, public_without_key
from facegate.components.web.api.error_handlers import install_error_handlers
from facegate.components.web.console import review as console_review
from facegate.components.web.metrics import MetricsMiddleware
from facegate.components.web.request_guard import RequestGuard

DOCS_STATIC = "/docs-static"
PUBLIC_PATHS = ("/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/", "/login", "/logout")
CONSOLE_STATIC = "/console/static"


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


DRAIN_S = 30.0  # at shutdown, the longest the embedding batches under way may take to answer


@asynccontextmanager
async def lifespan(app: FastAPI):
    yield
    batching = app.state.api.gate.batching
    if batching is not None:  # the requests still in a batch get their answer (service/batching.py)
        batching.close(DRAIN_S)
    if app.state.api.on_stop:
        app.state.api.on_stop()


def create_app(
    gate: FaceGate,
    key: str | None = None,
    after_write: Callable[[], None] | None = None,
    on_stop: Callable[[], None] | None = None,
    accounts: Accounts | None = None,
    console: bool = True,
) -> FastAPI:
    """The REST adapter over ``gate``: decode uploads, call a verb, answer its result as JSON.

    ``after_write`` runs after every enrolment or removal (the DVC snapshot request); ``on_stop`` when
    the server stops (the final snapshot). ``accounts`` default: those in ``gate``'s access-log
    database, with ``key`` as the legacy operator key (only that key when the gate keeps no log).
    """
    state = ApiState.build(gate, key or api_key(), accounts, after_write, on_stop)
    app = FastAPIOffline(title="facegate", version="1", description=__doc__, lifespan=lifespan, static_url=DOCS_STATIC)
    app.state.api = state
    app.add_middleware(
        RequestGuard,
        authenticate=state.authenticate,
        max_body_bytes=gate.settings.api.max_body_bytes,
        public_paths=PUBLIC_PATHS,
        public_prefixes=(DOCS_STATIC + "/", CONSOLE_STATIC + "/"),
        public_when=partial(public_without_key, gate.settings.console),
    )
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)  # outermost: refusals are counted too
    install_error_handlers(app)
    limits = gate.settings.api  # the order of the routes is the order of the published schema's paths
    for router in (
        routes_status.router,
        routes_recognition.recognition_router(limits),
        routes_employees.reading_router(limits),
        routes_log.router,
        routes_accounts.router,
        routes_employees.writing_router(limits),
        routes_captures.router,
    ):
        app.include_router(router)
    if console:
        app.include_router(console_pages.router)
        app.include_router(console_review.router)
        app.mount(
            CONSOLE_STATIC, StaticFiles(directory=str(console_pages.CONSOLE_DIR / "static")), name="console-static"
        )
    return app
