"""Training consent: an employee's explicit, revocable yes to their confirmed captures training the model.

Why per employee, recorded apart from the captures: being recognised at the door (access control, the
reason the employee was enrolled) and having one's face train a model are two purposes, and biometric
data needs explicit consent for each (GDPR art. 9). Only the employee can give it, not the operator who
labels a capture, so a per-capture flag would record the operator's opinion, not the person's will; and
a withdrawal must reach every capture, past and future, at once. So: one register, in the access log's
database beside the captures, append-only (grant and withdraw rows, each with who recorded it and when;
the latest row per employee is in force), and no consent by default. It is recorded at or after
enrolment (``facegate data consent``), never implied by it.

The captures dataset (service/capture_export.py) exports only consenting employees, records in each row
whether and since when consent held, and validation checks the register again at validation time, so a
withdrawal between an export and a chain fails that chain's validation by name. An erasure deletes the
employee's rows: a re-enrolled employee is asked again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Boolean, DateTime, Integer, String, delete, func, select
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from facegate.components.core.errors import AccessLogError
from facegate.components.service.access_log import engine_for, now, safe_url


class Base(DeclarativeBase):
    pass


class ConsentEvent(Base):
    """One grant or withdrawal of an employee's training consent."""

    __tablename__ = "training_consent"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    employee_id: Mapped[str] = mapped_column(String(64), index=True)
    granted: Mapped[bool] = mapped_column(Boolean)
    actor: Mapped[str] = mapped_column(String(64))  # who recorded it (the operator's account, local:<user>)
    note: Mapped[str] = mapped_column(String(500), default="")  # e.g. the signed form's reference


class ConsentStore:
    """The consent register over the access log's engine (SQLite or Postgres)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = engine_for(url)
        try:
            Base.metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise AccessLogError(f"consent register {safe_url(url)}: cannot open ({type(exc).__name__})") from None

    def record(self, employee_id: str, granted: bool, actor: str, note: str = "") -> dict:
        row = ConsentEvent(at=now(), employee_id=employee_id, granted=granted, actor=actor, note=note[:500])
        try:
            with Session(self.engine) as s, s.begin():
                s.add(row)
                s.flush()
                out = _row(row)
        except SQLAlchemyError as exc:
            raise AccessLogError(
                f"consent register {safe_url(self.url)}: write failed ({type(exc).__name__})"
            ) from None
        return out

    def current(self) -> dict[str, datetime]:
        """Employees whose consent is in force now -> when it was (last) given."""
        latest = select(ConsentEvent.employee_id, func.max(ConsentEvent.id).label("last")).group_by(
            ConsentEvent.employee_id
        )
        sub = latest.subquery()
        q = select(ConsentEvent).join(sub, ConsentEvent.id == sub.c.last).where(ConsentEvent.granted.is_(True))
        with Session(self.engine) as s:
            return {e.employee_id: e.at for e in s.scalars(q)}

    def history(self, employee_id: str) -> list[dict]:
        """The employee's grants and withdrawals, oldest first."""
        q = select(ConsentEvent).where(ConsentEvent.employee_id == employee_id).order_by(ConsentEvent.id)
        with Session(self.engine) as s:
            return [_row(e) for e in s.scalars(q)]

    def erase_employee(self, employee_id: str) -> int:
        try:
            with Session(self.engine) as s, s.begin():
                result = s.execute(delete(ConsentEvent).where(ConsentEvent.employee_id == employee_id))
                return int(cast("CursorResult[Any]", result).rowcount or 0)
        except SQLAlchemyError as exc:
            raise AccessLogError(
                f"consent register {safe_url(self.url)}: erasure failed ({type(exc).__name__})"
            ) from None


def _row(e: ConsentEvent) -> dict:
    return {
        "employee_id": e.employee_id,
        "granted": bool(e.granted),
        "at": e.at.isoformat(timespec="seconds") if e.at else None,
        "actor": e.actor,
        "note": e.note,
    }
