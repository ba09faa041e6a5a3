"""How a route reaches what the app was built with, and who may call it.

The app keeps one ``ApiState`` (``app.state.api``): the FaceGate, accounts, console sessions, the
metrics, the login limiter and the write/stop hooks. Routes ask for it with ``Depends(api_state)`` or
``Depends(face_gate)`` (async: a lookup, no thread-pool hop). The request guard
(``facegate.components.web.request_guard``) has already authenticated the request from its headers
and left the principal in the scope; ``require(permission)`` turns that principal into a role check
(403 ``forbidden``) and puts the API-key scheme into the OpenAPI schema.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from facegate.components.core.errors import Forbidden, Unauthorized
from facegate.components.core.settings import ConsoleSettings, Settings
from facegate.components.service.facade import FaceGate
from facegate.components.web.accounts import Accounts, Authenticator, LoginLimiter, Principal, Sessions, session_secret
from facegate.components.web.api.inputs import form_limits
from facegate.components.web.metrics import ServiceMetrics
from facegate.components.web.request_guard import API_KEY_HEADER, PRINCIPAL_SCOPE_KEY

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def gallery_size(gate: FaceGate) -> tuple[int, int]:
    g = gate.snapshot()
    return (g.n_employees, g.n_vectors) if g else (0, 0)


def batch_stats(gate: FaceGate) -> dict[str, dict[str, int]]:
    """The embedding batches run so far, per pass (none when the server does not batch)."""
    return gate.batching.stats() if gate.batching is not None else {}


@dataclass
class ApiState:
    """What one app serves with; built once by ``create_app``, read by every request."""

    gate: FaceGate
    accounts: Accounts
    sessions: Sessions
    authenticate: Authenticator
    metrics: ServiceMetrics
    login_limiter: LoginLimiter
    after_write: Callable[[], None] | None = None  # after every enrolment or removal (the DVC snapshot request)
    on_stop: Callable[[], None] | None = None  # when the server stops (the final snapshot)
    form_limits: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        gate: FaceGate,
        key: str,
        accounts: Accounts | None = None,
        after_write: Callable[[], None] | None = None,
        on_stop: Callable[[], None] | None = None,
    ) -> ApiState:
        """``accounts`` default: those in ``gate``'s access-log database, with ``key`` as the legacy
        operator key (only that key when the gate keeps no log, and then sessions die with the process)."""
        settings, log = gate.settings, gate.access_log
        if accounts is None:
            accounts = Accounts(log.engine if log is not None else None, legacy_key=key)
        sessions = Sessions(
            session_secret() if log is not None else secrets.token_bytes(32), settings.console.session_hours * 3600
        )
        return cls(
            gate=gate,
            accounts=accounts,
            sessions=sessions,
            authenticate=Authenticator(accounts, sessions),
            metrics=ServiceMetrics(partial(gallery_size, gate), partial(batch_stats, gate)),
            login_limiter=LoginLimiter(settings.console.login_max_failures, settings.console.login_window_s),
            after_write=after_write,
            on_stop=on_stop,
            form_limits=form_limits(settings.api),
        )

    @property
    def settings(self) -> Settings:
        return self.gate.settings

    def wrote(self, action: str) -> None:
        """A gallery change is done: count it, then ask for the snapshot."""
        self.metrics.gallery_changes.labels(action).inc()
        if self.after_write:
            self.after_write()


async def api_state(request: Request) -> ApiState:
    return request.app.state.api


async def face_gate(request: Request) -> FaceGate:
    return request.app.state.api.gate


def metrics_public(console: ConsoleSettings, scope) -> bool:  # noqa: ANN001 - an ASGI scope
    """``/metrics`` answers without a key when the server is bound to loopback (and the settings allow)."""
    server = scope.get("server") or ("",)
    return scope.get("path") == "/metrics" and console.metrics_public_on_loopback and str(server[0]) in LOOPBACK


def public_without_key(console: ConsoleSettings, scope) -> bool:  # noqa: ANN001 - an ASGI scope
    """The request guard's conditional public paths: the console's pages answer a visitor without a
    session themselves (a redirect to the login), and ``/metrics`` on loopback."""
    page = scope.get("path", "").startswith("/console/") and scope.get("method") in ("GET", "HEAD")
    return page or metrics_public(console, scope)


api_key_header = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="the service's API key ($FACEGATE_API_KEY or .facegate/api_key)"
)


def principal(request: Request) -> Principal:
    """Who is asking. RequestGuard already authenticated from the headers; asked again here in case the
    app is mounted without it."""
    p = request.scope.get(PRINCIPAL_SCOPE_KEY) or request.app.state.api.authenticate(request.scope)
    if p is None:
        raise Unauthorized(f"missing or wrong {API_KEY_HEADER} header")
    return p


def require(permission: str) -> Callable[..., Principal]:
    """A dependency: the principal, if its role may ``permission`` (403 ``forbidden`` otherwise)."""

    def check(request: Request, _: str | None = Depends(api_key_header)) -> Principal:
        p = principal(request)
        if not p.can(permission):
            raise Forbidden(f"account {p.name!r} ({p.role}) may not {permission}")
        return p

    return check


reader, decider, enroller, remover, checker = (require(x) for x in ("read", "decide", "enrol", "remove", "check"))
