"""Operator accounts and scoped API keys: roles, hashed secrets, login rate limit, signed sessions.

Roles: ``operator`` (enrol, remove, identify, read), ``viewer`` (read: employees, access log, status)
and ``turnstile`` (identify and verify only). An account's secret is generated (never chosen), shown
once, and stored as a salted scrypt hash; it is both the console password and, as ``NAME.SECRET`` in
``X-API-Key``, the account's API key. Checks use ``hmac.compare_digest``. The deployment's single
API key ($FACEGATE_API_KEY or .facegate/api_key) keeps working and acts as an operator named
``api-key``. A verified key is remembered (by its SHA-256, in memory, for ``KEY_CACHE_S``) so a
turnstile does not pay scrypt on every frame; a removed account stops working at once.

Console sessions are cookies signed with a secret kept in the state folder (mode 600), carrying the
account name and expiring after ``console.session_hours``; the account is looked up on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from http.cookies import CookieError, SimpleCookie
from typing import Any, cast

from sqlalchemy import DateTime, String, delete, select
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from facegate.components.core.errors import AccessLogError, AccountError, LoginRateLimited, UnknownAccount
from facegate.components.core.paths import state_dir

ROLES = ("operator", "viewer", "turnstile")
# what each role may do; routes name the permission they need
PERMISSIONS = {
    "operator": frozenset({"read", "enrol", "remove", "decide", "check", "review"}),  # review: captures (biometrics)
    "viewer": frozenset({"read"}),
    "turnstile": frozenset({"decide"}),
}
LEGACY_NAME = "api-key"
ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")
SCRYPT = {"n": 2**14, "r": 8, "p": 1}
KEY_CACHE_S = 60.0


class AccountBase(DeclarativeBase):
    pass


class Account(AccountBase):
    __tablename__ = "accounts"
    name: Mapped[str] = mapped_column(String(48), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(200))  # scrypt$n$r$p$salt_hex$hash_hex
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class Principal:
    """Who is asking, as the routes see it."""

    name: str
    role: str

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, ())


def hash_secret(
    secret: str, salt: bytes | None = None, n: int = SCRYPT["n"], r: int = SCRYPT["r"], p: int = SCRYPT["p"]
) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def secret_matches(secret: str, stored: str) -> bool:
    """Constant-time check of ``secret`` against a stored scrypt hash."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        given = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(given, bytes.fromhex(digest))


def split_key(key: str) -> tuple[str, str] | None:
    """``NAME.SECRET`` -> (name, secret); secrets are URL-safe base64 (no dots), names may hold dots."""
    name, sep, secret = key.rpartition(".")
    return (name, secret) if sep and name and secret else None


class LoginLimiter:
    """At most ``max_failures`` failed logins per key (account name, client address) in ``window_s``."""

    def __init__(self, max_failures: int, window_s: float) -> None:
        self.max_failures, self.window_s = max_failures, window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, t: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and t - q[0] > self.window_s:
            q.popleft()
        return q

    def check(self, *keys: str) -> None:
        t = time.monotonic()
        with self._lock:
            for key in keys:
                q = self._recent(key, t)
                if len(q) >= self.max_failures:
                    wait = int(self.window_s - (t - q[0])) + 1
                    raise LoginRateLimited(f"too many failed logins for {key}: try again in {wait} s", wait)

    def failed(self, *keys: str) -> None:
        t = time.monotonic()
        with self._lock:
            for key in keys:
                self._recent(key, t).append(t)

    def succeeded(self, name_key: str) -> None:
        with self._lock:
            self._failures.pop(name_key, None)


class Accounts:
    """Accounts in the access log's database (same engine), plus the deployment's legacy key."""

    def __init__(self, engine, legacy_key: str | None = None) -> None:  # noqa: ANN001 - sqlalchemy Engine
        self.engine = engine
        if engine is not None:  # the accounts table lives in the access log's database, created here
            try:
                AccountBase.metadata.create_all(engine)
            except SQLAlchemyError as exc:
                raise AccessLogError(f"accounts table: cannot create ({type(exc).__name__}: {exc})") from None
        self.legacy_key = legacy_key.encode() if legacy_key else None
        self._verified: dict[bytes, tuple[str, float]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------- management

    def add(self, name: str, role: str) -> str:
        """Create an account; returns its secret, the only time it is ever visible."""
        if self.engine is None:
            raise AccountError("accounts: this service has no access-log database to keep accounts in")
        if not ACCOUNT_NAME.match(name or "") or name == LEGACY_NAME:
            raise AccountError(f"name {name!r}: 1-48 letters, digits, '_', '.', '-' (not {LEGACY_NAME!r})")
        if role not in ROLES:
            raise AccountError(f"role {role!r}: one of {', '.join(ROLES)}")
        secret = secrets.token_urlsafe(24)
        try:
            with Session(self.engine) as s, s.begin():
                s.add(Account(name=name, role=role, secret_hash=hash_secret(secret), created_at=datetime.now(UTC)))
        except IntegrityError:
            raise AccountError(f"name {name!r}: an account with this name exists") from None
        except SQLAlchemyError as exc:
            raise AccessLogError(f"accounts: write failed ({type(exc).__name__})") from None
        return secret

    def remove(self, name: str) -> None:
        with Session(self.engine) as s, s.begin():
            # Session.execute is typed Result; a DELETE gives a CursorResult, which has rowcount
            if not cast("CursorResult[Any]", s.execute(delete(Account).where(Account.name == name))).rowcount:
                raise UnknownAccount(f"account {name!r} does not exist")
        with self._lock:
            self._verified = {k: v for k, v in self._verified.items() if v[0] != name}

    def list(self) -> list[dict]:
        if self.engine is None:
            return []
        with Session(self.engine) as s:
            return [
                {"name": a.name, "role": a.role, "created_at": a.created_at.isoformat(timespec="seconds")}
                for a in s.scalars(select(Account).order_by(Account.name))
            ]

    def role_of(self, name: str) -> str | None:
        if name == LEGACY_NAME and self.legacy_key:
            return "operator"
        if self.engine is None:
            return None
        with Session(self.engine) as s:
            a = s.get(Account, name)
            return a.role if a else None

    # ---------------------------------------------------------------------------- verification

    def login(self, name: str, secret: str) -> Principal | None:
        """The account whose name and secret these are, or None (a slow scrypt either way)."""
        if name == LEGACY_NAME:
            return (
                Principal(LEGACY_NAME, "operator")
                if self.legacy_key and hmac.compare_digest(secret.encode(), self.legacy_key)
                else None
            )
        if self.engine is None:
            return None
        with Session(self.engine) as s:
            a = s.get(Account, name)
            stored = a.secret_hash if a else hash_secret("", b"\0" * 16)  # same cost for unknown names
            role = a.role if a else None
        return Principal(name, role) if role is not None and secret_matches(secret, stored) else None

    def from_key(self, raw: bytes) -> Principal | None:
        """An ``X-API-Key`` header's bytes: the legacy key, or ``NAME.SECRET`` of an account."""
        if self.legacy_key and hmac.compare_digest(raw, self.legacy_key):
            return Principal(LEGACY_NAME, "operator")
        try:
            key = raw.decode("ascii")
        except UnicodeDecodeError:
            return None
        parts = split_key(key)
        if parts is None:
            return None
        fp = hashlib.sha256(raw).digest()
        t = time.monotonic()
        with self._lock:
            hit = self._verified.get(fp)
        if hit and t - hit[1] < KEY_CACHE_S and hit[0] == parts[0]:
            role = self.role_of(parts[0])  # removed since: refused at once
            return Principal(parts[0], role) if role else None
        p = self.login(*parts)
        if p is not None:
            with self._lock:
                if len(self._verified) > 10_000:
                    self._verified.clear()
                self._verified[fp] = (p.name, t)
        return p


# -------------------------------------------------------------------------------------- sessions


def session_secret() -> bytes:
    """The cookie-signing secret, generated once into the state folder (mode 600)."""
    path = state_dir() / "console_secret"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
        except FileExistsError:
            pass
    return path.read_text().strip().encode()


class Sessions:
    """Signed, expiring session cookies (itsdangerous): the payload is the account name."""

    COOKIE = "facegate_session"

    def __init__(self, secret: bytes, max_age_s: float) -> None:
        from itsdangerous import URLSafeTimedSerializer  # optional: sessions only in the server

        self.max_age_s = max_age_s
        self._s = URLSafeTimedSerializer(secret, salt="facegate-console")

    def issue(self, p: Principal) -> str:
        return self._s.dumps({"n": p.name})

    def name_of(self, cookie: str) -> str | None:
        from itsdangerous import BadSignature  # optional: sessions only in the server

        try:
            # itsdangerous annotates max_age as int but only compares ``age > max_age``: a float works
            return self._s.loads(cookie, max_age=self.max_age_s)["n"]  # type: ignore[arg-type]
        except (BadSignature, KeyError, TypeError):
            return None


class Authenticator:
    """Who a request is, from its headers alone (``RequestGuard``'s ``authenticate``): one ``X-API-Key``
    header (the legacy key or ``NAME.SECRET``), else the console's session cookie. A cookie does not
    count for a state-changing request whose ``Origin`` is another site (SameSite=Strict already keeps
    browsers from sending it; this is the second lock)."""

    def __init__(self, accounts: Accounts, sessions: Sessions) -> None:
        self.accounts, self.sessions = accounts, sessions

    def __call__(self, scope) -> Principal | None:  # noqa: ANN001 - an ASGI scope
        headers = scope.get("headers", ())
        keys = [v for k, v in headers if k == b"x-api-key"]
        if keys:
            return self.accounts.from_key(keys[0]) if len(keys) == 1 else None
        cookie = next((v for k, v in headers if k == b"cookie"), None)
        if cookie is None:
            return None

        try:
            jar = SimpleCookie(cookie.decode("latin-1"))
        except CookieError:
            return None
        morsel = jar.get(Sessions.COOKIE)
        name = self.sessions.name_of(morsel.value) if morsel else None
        if name is None:
            return None
        if scope.get("method", "GET") not in ("GET", "HEAD", "OPTIONS"):
            origin = next((v for k, v in headers if k == b"origin"), None)
            host = next((v for k, v in headers if k == b"host"), b"")
            if origin is not None and origin.split(b"://", 1)[-1] != host:
                return None
        role = self.accounts.role_of(name)
        return Principal(name, role) if role else None
