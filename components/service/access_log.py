"""The access log: one row per identify/verify decision, one audit row per gallery change.

Every entrance system keeps a record of who was let in, when, by which model, and who changed the
gallery. It lives in a real database through SQLAlchemy: SQLite under the state folder by default
(WAL mode, so the API's threads, a CLI enrolment and the console read and write at once), Postgres
when ``access_log.url`` (or ``FACEGATE_ACCESS_LOG_URL``) names one. No image and no embedding is ever
stored: a decision row holds ids, distances, thresholds and versions only.

A decision is written before the answer goes out (the caller's request fails if the row cannot be
written): an acknowledged decision is a logged one. Decision rows older than
``access_log.retention_days`` are purged (at open, then at most hourly); audit rows are kept. An
erasure request (``remove`` with ``access_log.erase_on_remove``) deletes the employee's decision rows
and keeps the audit rows that say the employee was enrolled and removed, by whom and when.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import (
    DateTime,
    Float,
    Integer,
    String,
    Text,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import CursorResult, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from facegate.components.core.errors import AccessLogError
from facegate.components.core.paths import state_dir

ENV_URL = "FACEGATE_ACCESS_LOG_URL"
OUTCOMES = ("recognized", "not_recognized", "no_face", "accepted", "rejected", "attack")  # attack: pad.mode enforce
AUDIT_ACTIONS = ("enrol", "re-enrol", "remove", "erase", "promote", "rollback", "account_add", "account_remove")
PURGE_EVERY_S = 3600


class Base(DeclarativeBase):
    pass


class Decision(Base):
    """One identify face or one verify answer: who (or nobody), how far, against which threshold."""

    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # identify | verify
    outcome: Mapped[str] = mapped_column(String(16), index=True)  # OUTCOMES
    entrance: Mapped[str | None] = mapped_column(String(64), index=True)
    employee_id: Mapped[str | None] = mapped_column(String(64), index=True)  # recognized / claimed id
    distance: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    model: Mapped[str | None] = mapped_column(String(200))
    gallery_version: Mapped[str | None] = mapped_column(String(64))
    mask: Mapped[str | None] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(String(64))  # the account (turnstile key) that asked
    # presentation-attack detection (null: pad.mode off): live | attack, the live probability, its threshold
    liveness: Mapped[str | None] = mapped_column(String(8), nullable=True, index=True)
    liveness_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    liveness_threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    # which pass decided (recognition.cascade): cheap | full; null: logged before the cascade
    path: Mapped[str | None] = mapped_column(String(8), nullable=True, index=True)


# Columns added to ``decisions`` after its first release: a log made before them gets them on open
# (ALTER TABLE ... ADD COLUMN of a nullable column: the same statement in SQLite and Postgres).
ADDED_COLUMNS = {
    "liveness": "VARCHAR(8)",
    "liveness_score": "FLOAT",
    "liveness_threshold": "FLOAT",
    "path": "VARCHAR(8)",
}


class AuditEvent(Base):
    """One change to the gallery or its model: who, when, what."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32), index=True)
    employee_id: Mapped[str | None] = mapped_column(String(64), index=True)
    detail: Mapped[str] = mapped_column(Text, default="{}")  # JSON: counts, versions, reasons (no biometrics)


def now() -> datetime:
    return datetime.now(UTC)


def default_url(configured: str | None = None) -> str:
    """FACEGATE_ACCESS_LOG_URL, else ``access_log.url``, else SQLite in the state folder."""
    return os.environ.get(ENV_URL) or configured or f"sqlite:///{state_dir() / 'access.db'}"


def safe_url(url: str) -> str:
    """The URL for messages: never its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL is named by its scheme only
        return url.split(":", 1)[0] + ":..."


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One engine per URL and process; SQLite in WAL mode with a busy timeout (many writers, one file)."""
    try:
        u = make_url(url)
        if u.get_backend_name() == "sqlite":
            if u.database and u.database != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(u.database)), exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

            @event.listens_for(engine, "connect")
            def _pragmas(conn, _):  # noqa: ANN001
                cur = conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()
        else:
            engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        Base.metadata.create_all(engine)
        _add_missing_columns(engine)
        if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
            os.chmod(u.database, 0o600)  # account hashes and who went where: the owner's only
    except (SQLAlchemyError, OSError, ValueError) as exc:
        raise AccessLogError(f"access log {safe_url(url)}: cannot open ({type(exc).__name__}: {exc})") from None
    return engine


def _add_missing_columns(engine: Engine) -> None:
    have = {c["name"] for c in inspect(engine).get_columns(Decision.__tablename__)}
    missing = {name: kind for name, kind in ADDED_COLUMNS.items() if name not in have}
    if missing:
        with engine.begin() as conn:
            for name, kind in missing.items():
                conn.execute(text(f"ALTER TABLE {Decision.__tablename__} ADD COLUMN {name} {kind} NULL"))


def _liveness(answer: dict) -> dict:
    """An answer's liveness as the three nullable columns."""
    lv = answer.get("liveness") or {}
    return {"liveness": lv.get("label"), "liveness_score": lv.get("score"), "liveness_threshold": lv.get("threshold")}


@dataclass(frozen=True)
class DecisionFilter:
    """The console's filters; every field optional."""

    employee_id: str | None = None
    outcome: str | None = None
    entrance: str | None = None
    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 200


class AccessLog:
    """The decision and audit store over one SQLAlchemy engine; safe to share between threads."""

    def __init__(self, url: str, retention_days: int = 365) -> None:
        self.url = url
        self.retention = timedelta(days=retention_days)
        self.engine = engine_for(url)
        self._purged_at = 0.0
        self._purge_lock = threading.Lock()
        self.purge()

    @classmethod
    def from_settings(cls, settings) -> AccessLog:  # noqa: ANN001 - Settings (import cycle-free)
        return cls(default_url(settings.access_log.url), settings.access_log.retention_days)

    def _write(self, rows: Sequence[Base]) -> None:
        try:
            with Session(self.engine) as s, s.begin():
                s.add_all(rows)
        except SQLAlchemyError as exc:
            raise AccessLogError(f"access log {safe_url(self.url)}: write failed ({type(exc).__name__})") from None
        if time.monotonic() - self._purged_at > PURGE_EVERY_S:
            self.purge()

    # ------------------------------------------------------------------------------- writers

    def record_identification(
        self, result: dict, *, entrance: str | None, model: str | None, gallery_version: str | None, actor: str | None
    ) -> int:
        """One row per face of an identify answer (``Identification.to_dict()``); a frame without a face
        is one ``no_face`` row, so every request leaves a trace. Returns the rows written."""
        at = now()
        faces = result.get("faces") or []
        rows = [
            Decision(
                at=at,
                kind="identify",
                outcome=f.get("decision") or ("recognized" if f["recognized"] else "not_recognized"),
                entrance=entrance,
                employee_id=f["employee_id"],
                distance=f["distance"],
                threshold=f["tau"],
                model=model,
                gallery_version=gallery_version,
                mask=f.get("mask"),
                actor=actor,
                path=f.get("path"),
                **_liveness(f),
            )
            for f in faces
        ]
        if not rows:
            rows = [
                Decision(
                    at=at,
                    kind="identify",
                    outcome="no_face",
                    entrance=entrance,
                    threshold=result.get("tau"),
                    model=model,
                    gallery_version=gallery_version,
                    actor=actor,
                )
            ]
        self._write(rows)
        return len(rows)

    def record_verification(
        self, result: dict, *, entrance: str | None, model: str | None, gallery_version: str | None, actor: str | None
    ) -> None:
        outcome = result.get("decision") or ("accepted" if result["accepted"] else "rejected")
        self._write(
            [
                Decision(
                    at=now(),
                    kind="verify",
                    outcome=outcome,
                    entrance=entrance,
                    employee_id=result["employee_id"],
                    distance=result["distance"],
                    threshold=result["tau"],
                    model=model,
                    gallery_version=gallery_version,
                    actor=actor,
                    path=result.get("path"),
                    **_liveness(result),
                )
            ]
        )

    def audit(self, actor: str, action: str, employee_id: str | None = None, **detail: Any) -> None:
        self._write(
            [
                AuditEvent(
                    at=now(),
                    actor=actor,
                    action=action,
                    employee_id=employee_id,
                    detail=json.dumps(detail, default=str, sort_keys=True),
                )
            ]
        )

    def erase_employee(self, employee_id: str) -> int:
        """Delete the employee's decision rows (an erasure request); audit rows stay. Rows deleted."""
        try:
            with Session(self.engine) as s, s.begin():
                statement = delete(Decision).where(Decision.employee_id == employee_id)
                # Session.execute is typed Result; a DELETE gives a CursorResult, which has rowcount
                n = cast("CursorResult[Any]", s.execute(statement)).rowcount
        except SQLAlchemyError as exc:
            raise AccessLogError(f"access log {safe_url(self.url)}: erasure failed ({type(exc).__name__})") from None
        return int(n or 0)

    def purge(self, older_than: datetime | None = None) -> int:
        """Delete decision rows older than the retention (or ``older_than``); rows deleted."""
        cutoff = older_than or now() - self.retention
        with self._purge_lock:
            try:
                with Session(self.engine) as s, s.begin():
                    statement = delete(Decision).where(Decision.at < cutoff)
                    n = cast("CursorResult[Any]", s.execute(statement)).rowcount  # a DELETE's (typed Result)
            except SQLAlchemyError as exc:
                raise AccessLogError(f"access log {safe_url(self.url)}: purge failed ({type(exc).__name__})") from None
            self._purged_at = time.monotonic()
        return int(n or 0)

    # ------------------------------------------------------------------------------- readers

    def decisions(self, f: DecisionFilter = DecisionFilter()) -> list[dict]:
        q = select(Decision).order_by(Decision.id.desc()).limit(max(1, min(f.limit, 10_000)))
        for column, value in (
            (Decision.employee_id, f.employee_id),
            (Decision.outcome, f.outcome),
            (Decision.entrance, f.entrance),
            (Decision.kind, f.kind),
        ):
            if value:
                q = q.where(column == value)
        if f.since:
            q = q.where(Decision.at >= f.since)
        if f.until:
            q = q.where(Decision.at < f.until)
        with Session(self.engine) as s:
            return [_row(d) for d in s.scalars(q)]

    def audit_events(self, employee_id: str | None = None, limit: int = 200) -> list[dict]:
        q = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(max(1, min(limit, 10_000)))
        if employee_id:
            q = q.where(AuditEvent.employee_id == employee_id)
        with Session(self.engine) as s:
            return [{**_row(a), "detail": json.loads(a.detail or "{}")} for a in s.scalars(q)]

    def count(self, employee_id: str | None = None, actor: str | None = None) -> int:
        q = select(func.count(Decision.id))
        if employee_id:
            q = q.where(Decision.employee_id == employee_id)
        if actor:
            q = q.where(Decision.actor == actor)
        with Session(self.engine) as s:
            return int(s.scalar(q) or 0)


def _row(obj: Base) -> dict:
    out = {c.name: getattr(obj, c.name) for c in obj.__table__.columns}
    at = out.get("at")
    if isinstance(at, datetime):
        out["at"] = (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat(timespec="seconds")
    return out
