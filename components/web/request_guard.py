"""Request guard: the API's limits, enforced before a request body is read (pure ASGI, no FastAPI).

An upload must not be received, let alone spooled to disk, before the service knows who is asking and
how much is coming. So, from the headers alone: the API key is checked first (401 before one body byte
is read), a Content-Length over the limit is refused at once (413); then the bytes are counted as they
stream, so a body without a length, or lying about it, is cut off as soon as it goes over (413).
Keys are compared as bytes (``hmac.compare_digest``): a header that is not ASCII is just a wrong key.
Every refusal is JSON ``{"code", "message"}`` with the error's HTTP status.

With accounts (``authenticate``: scope -> principal or None, e.g. ``facegate.components.web.accounts.Authenticator``)
the guard asks that instead of comparing one key, and leaves the principal in the scope
(``PRINCIPAL_SCOPE_KEY``) for the routes' role checks; ``public_when(scope)`` makes a path public
conditionally (``/metrics`` on loopback).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from facegate.components.core.errors import BadRequest, BodyTooLarge, FacegateError, Unauthorized

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

API_KEY_HEADER = "X-API-Key"
PRINCIPAL_SCOPE_KEY = "facegate.principal"


def key_matches(given: bytes | None, key: bytes) -> bool:
    """Constant-time comparison of raw header bytes; any bytes at all are safe to pass."""
    return given is not None and hmac.compare_digest(given, key)


def error_json(exc: FacegateError) -> bytes:
    return json.dumps({"code": exc.code, "message": exc.message}).encode()


async def send_error(send: Send, exc: FacegateError) -> None:
    body = error_json(exc)
    await send(
        {
            "type": "http.response.start",
            "status": exc.http_status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def header_values(scope: Scope, name: bytes) -> list[bytes]:
    return [v for k, v in scope.get("headers", ()) if k.lower() == name]


def content_length(scope: Scope) -> int | None:
    """The declared body length, or None; a malformed or repeated header is a bad request."""
    values = header_values(scope, b"content-length")
    if not values:
        return None
    if len(set(values)) > 1 or not values[0].strip().isdigit() or len(values[0]) > 20:
        raise BadRequest("Content-Length: not one non-negative integer")
    return int(values[0])


class RequestGuard:
    """ASGI middleware: key from the headers, then the body's size, before the app reads anything.

    ``public_paths`` (exact) and ``public_prefixes`` need no key (liveness, the API's own docs).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        key: str | bytes | None = None,
        max_body_bytes: int,
        public_paths: Iterable[str] = (),
        public_prefixes: Iterable[str] = (),
        authenticate: Callable[[Scope], Any] | None = None,
        public_when: Callable[[Scope], bool] | None = None,
    ) -> None:
        if key is None and authenticate is None:
            raise ValueError("RequestGuard needs a key or an authenticate callable")
        self.app = app
        self.key = key.encode() if isinstance(key, str) else key
        self.authenticate = authenticate
        self.public_when = public_when
        self.max_body_bytes = max_body_bytes
        self.public_paths = frozenset(public_paths)
        self.public_prefixes = tuple(public_prefixes)

    def is_public(self, path: str) -> bool:
        return path in self.public_paths or path.startswith(self.public_prefixes)

    def check_key(self, scope: Scope) -> None:
        if self.authenticate is not None:
            if scope.get(PRINCIPAL_SCOPE_KEY) is None:
                raise Unauthorized(f"missing or wrong {API_KEY_HEADER} header")
            return
        assert self.key is not None  # __init__: a guard without an authenticate callable has a key
        values = header_values(scope, API_KEY_HEADER.lower().encode())
        if len(values) != 1 or not key_matches(values[0], self.key):
            raise Unauthorized(f"missing or wrong {API_KEY_HEADER} header")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        try:
            if self.authenticate is not None:  # in a worker thread: a key's first check costs a scrypt
                import anyio  # optional: only this path needs it

                scope[PRINCIPAL_SCOPE_KEY] = await anyio.to_thread.run_sync(self.authenticate, scope)
            path = scope.get("path", "")
            if not (self.is_public(path) or (self.public_when is not None and self.public_when(scope))):
                self.check_key(scope)
            length = content_length(scope)
            if length is not None and length > limit:
                raise BodyTooLarge(f"request body of {length} bytes: the limit is {limit} bytes")
        except FacegateError as exc:
            await send_error(send, exc)
            return

        received = 0
        over = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise BodyTooLarge(f"request body over the limit of {limit} bytes")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:
                # whatever the app made of the interrupted body (a parse error, ...), the answer is 413
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await send_error(send, BodyTooLarge(f"request body over the limit of {limit} bytes"))
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not over:
                raise
            if not started:
                started = True
                await send_error(send, BodyTooLarge(f"request body over the limit of {limit} bytes"))
