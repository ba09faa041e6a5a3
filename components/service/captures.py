"""Deployment captures: the faces the entrance actually sees, kept for operator review and templates.

Off by default (``capture.enabled``; ``capture.entrances`` narrows it to some entrances). Each face an
identify answers keeps its aligned chip, its full embedding, the decision, the distance and threshold,
quality signals (face size, sharpness of the chip, mask state), the entrance and the time, in a
``captures`` table of the access log's database (SQLite under the state dir, or Postgres).

Chips are stored as PNG blobs in the row, not as files: a capture is then one row, so an erasure
request or the retention purge is one DELETE in one transaction (no orphan chip file when a process
dies between the two), and a Postgres deployment with several API hosts sees every chip without a
shared folder. A chip is ~20 KB; the retention (``capture.retention_days``) bounds the table.

Captures are biometric data: never logged to MLflow, served only to the operator role (the API and
the console check it), erased with their employee (``erase_employee``), and purged after retention.
The review queue puts first what a label teaches most (``review_queue``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

import cv2
import numpy as np
from sqlalchemy import Boolean, DateTime, Float, Integer, LargeBinary, String, delete, func, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from facegate.components.core.errors import AccessLogError, FacegateError
from facegate.components.core.settings import Settings
from facegate.components.faces.chip_png import encode_chip
from facegate.components.service.access_log import default_url, engine_for, now, safe_url

LABELS = ("employee", "stranger", "not_a_face", "skip")
MASKED = ("with_mask", "mask_weared_incorrect")
SHARPNESS_SIDE = 112  # as the console's photo check (components/web/photo_checks.py): the figure ignores face size
NEW_ENTRANCE_CAPTURES = 50  # an entrance with fewer captures than this is "new" to the review queue
QUEUE_SCAN = 5000  # unlabelled captures scored for the queue, newest first
PURGE_EVERY_S = 3600


class CaptureNotFound(FacegateError):
    code = "capture_not_found"
    http_status = 404


class InvalidLabel(FacegateError):
    code = "invalid_label"
    http_status = 422


class Base(DeclarativeBase):
    pass


class Capture(Base):
    __tablename__ = "captures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    entrance: Mapped[str | None] = mapped_column(String(64), index=True)
    decision: Mapped[str] = mapped_column(String(16))  # recognized | not_recognized | attack
    employee_id: Mapped[str | None] = mapped_column(String(64), index=True)  # the nearest employee if recognised
    nearest_id: Mapped[str | None] = mapped_column(String(64), index=True)  # the nearest employee, recognised or not
    distance: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    mask: Mapped[str | None] = mapped_column(String(32))
    face_px: Mapped[int] = mapped_column(Integer)  # shorter side of the face box
    sharpness: Mapped[float] = mapped_column(Float)  # variance of the Laplacian of the chip at 112 px
    model: Mapped[str | None] = mapped_column(String(200))
    chip_geometry: Mapped[str | None] = mapped_column(String(32))
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # float32, unit length
    chip: Mapped[bytes] = mapped_column(LargeBinary)  # PNG of the aligned chip
    label: Mapped[str | None] = mapped_column(String(16), index=True)  # LABELS; None: not reviewed
    label_employee_id: Mapped[str | None] = mapped_column(String(64), index=True)
    labelled_by: Mapped[str | None] = mapped_column(String(64))
    labelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    template: Mapped[bool] = mapped_column(Boolean, default=False)  # one of its employee's gallery templates


SUMMARY = (
    "id",
    "at",
    "entrance",
    "decision",
    "employee_id",
    "nearest_id",
    "distance",
    "threshold",
    "mask",
    "face_px",
    "sharpness",
    "model",
    "label",
    "label_employee_id",
    "labelled_by",
    "template",
)


def capture_on(settings: Settings, entrance: str | None) -> bool:
    c = settings.capture
    return c.enabled and (not c.entrances or entrance in c.entrances)


def chip_sharpness(chip: np.ndarray) -> float:
    """On the chip's first RGB image (a fused model's chip stacks two geometries as 6 channels)."""
    grey = cv2.cvtColor(np.ascontiguousarray(chip[..., :3], dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    grey = cv2.resize(grey, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


@dataclass(frozen=True)
class Labelled:
    """A confirmed capture: what a template update needs."""

    id: int
    employee_id: str
    embedding: np.ndarray
    chip: bytes
    model: str | None
    chip_geometry: str | None


class CaptureStore:
    """The ``captures`` table over the access log's engine; safe to share between threads."""

    def __init__(self, url: str, retention_days: int = 30) -> None:
        self.url = url
        self.retention = timedelta(days=retention_days)
        self.engine = engine_for(url)
        Base.metadata.create_all(self.engine)
        self._purged_at = 0.0
        self._purge_lock = threading.Lock()
        self.purge()

    @classmethod
    def from_settings(cls, settings: Settings) -> CaptureStore:
        return cls(default_url(settings.access_log.url), settings.capture.retention_days)

    def _session(self, what: str):  # noqa: ANN202 - a context manager over one transaction
        return _Tx(self, what)

    # ------------------------------------------------------------------------------- writers

    def record(self, rows: Sequence[dict]) -> list[int]:
        """Capture rows (``Capture`` columns; ``embedding`` an array, ``chip`` an RGB array); their ids."""
        objs = [
            Capture(
                at=r.get("at") or now(),
                **{k: v for k, v in r.items() if k not in ("at", "embedding", "chip")},
                embedding=np.asarray(r["embedding"], np.float32).tobytes(),
                chip=encode_chip(r["chip"]),
            )
            for r in rows
        ]
        with self._session("write") as s:
            s.add_all(objs)
            s.flush()
            ids = [o.id for o in objs]
        if time.monotonic() - self._purged_at > PURGE_EVERY_S:
            self.purge()
        return ids

    def purge(self, older_than: datetime | None = None) -> int:
        """Delete captures older than the retention (or ``older_than``); rows deleted."""
        cutoff = older_than or now() - self.retention
        with self._purge_lock, self._session("purge") as s:
            n = cast("CursorResult[Any]", s.execute(delete(Capture).where(Capture.at < cutoff))).rowcount
            self._purged_at = time.monotonic()
        return int(n or 0)

    def erase_employee(self, employee_id: str) -> int:
        """Every capture recognised as, nearest to, or labelled as the employee (an erasure request)."""
        where = or_(
            Capture.employee_id == employee_id,
            Capture.nearest_id == employee_id,
            Capture.label_employee_id == employee_id,
        )
        with self._session("erasure") as s:
            return int(cast("CursorResult[Any]", s.execute(delete(Capture).where(where))).rowcount or 0)

    def label(self, capture_id: int, label: str, employee_id: str | None, actor: str) -> dict:
        """An operator's label; ``employee`` needs the employee (default: the one it was recognised as)."""
        if label not in LABELS:
            raise InvalidLabel(f"label {label!r}: one of {LABELS}")
        with self._session("label") as s:
            c = s.get(Capture, capture_id)
            if c is None:
                raise CaptureNotFound(f"capture {capture_id} does not exist (or was purged or erased)")
            who = (employee_id or c.employee_id) if label == "employee" else None
            if label == "employee" and not who:
                raise InvalidLabel(f"capture {capture_id}: say which employee it is (employee_id)")
            c.label, c.label_employee_id, c.labelled_by, c.labelled_at = label, who, actor, now()
            if label != "employee":
                c.template = False
            return _summary(c)

    def set_templates(self, employee_id: str, capture_ids: Sequence[int]) -> None:
        """Which of the employee's confirmed captures are gallery templates now."""
        with self._session("template") as s:
            s.execute(update(Capture).where(Capture.label_employee_id == employee_id).values(template=False))
            if capture_ids:
                s.execute(update(Capture).where(Capture.id.in_(list(capture_ids))).values(template=True))

    # ------------------------------------------------------------------------------- readers

    def get(self, capture_id: int) -> dict:
        with Session(self.engine) as s:
            c = s.get(Capture, capture_id)
            if c is None:
                raise CaptureNotFound(f"capture {capture_id} does not exist (or was purged or erased)")
            return _summary(c)

    def chip(self, capture_id: int) -> bytes:
        """The PNG of the capture's aligned chip."""
        with Session(self.engine) as s:
            png = s.scalar(select(Capture.chip).where(Capture.id == capture_id))
        if png is None:
            raise CaptureNotFound(f"capture {capture_id} does not exist (or was purged or erased)")
        return png

    def confirmed(self, employee_id: str | None = None) -> list[Labelled]:
        q = select(Capture).where(Capture.label == "employee").order_by(Capture.id)
        if employee_id:
            q = q.where(Capture.label_employee_id == employee_id)
        with Session(self.engine) as s:
            return [
                Labelled(
                    c.id,
                    str(c.label_employee_id),
                    np.frombuffer(c.embedding, np.float32).copy(),
                    c.chip,
                    c.model,
                    c.chip_geometry,
                )
                for c in s.scalars(q)
            ]

    def count(self, employee_id: str | None = None, **equal: Any) -> int:
        q = select(func.count(Capture.id))
        if employee_id:
            q = q.where(
                or_(
                    Capture.employee_id == employee_id,
                    Capture.nearest_id == employee_id,
                    Capture.label_employee_id == employee_id,
                )
            )
        for column, value in equal.items():
            q = q.where(getattr(Capture, column) == value)
        with Session(self.engine) as s:
            return int(s.scalar(q) or 0)

    def labelled_embeddings(self, label: str, model: str | None) -> np.ndarray:
        """The embeddings of every capture labelled ``label`` by model ``model`` (n x d; 0 rows: none)."""
        q = select(Capture.embedding).where(Capture.label == label, Capture.model == model).order_by(Capture.id)
        with Session(self.engine) as s:
            embs = [np.frombuffer(e, np.float32) for e in s.scalars(q)]
        return np.stack(embs) if embs else np.zeros((0, 0), np.float32)

    def embeddings(self, capture_ids: Sequence[int], chunk: int = 500) -> dict[int, np.ndarray]:
        """The stored embeddings of these captures, by id (purged or erased ones are absent)."""
        out: dict[int, np.ndarray] = {}
        ids = list(capture_ids)
        with Session(self.engine) as s:
            for i in range(0, len(ids), chunk):
                q = select(Capture.id, Capture.embedding).where(Capture.id.in_(ids[i : i + chunk]))
                out.update({int(k): np.frombuffer(e, np.float32).copy() for k, e in s.execute(q)})
        return out

    def rows(self, since: datetime | None = None, until: datetime | None = None) -> list[dict]:
        """Summaries (no chip, no embedding) between two times, oldest first: what drift compares."""
        q = select(*[getattr(Capture, c) for c in SUMMARY]).order_by(Capture.id)
        if since:
            q = q.where(Capture.at >= since)
        if until:
            q = q.where(Capture.at < until)
        with Session(self.engine) as s:
            return [dict(zip(SUMMARY, r)) for r in s.execute(q)]

    def review_queue(self, band: float, limit: int = 50) -> list[dict]:
        """Unlabelled captures, most instructive first (``review_priority``)."""
        q = select(*[getattr(Capture, c) for c in SUMMARY]).where(Capture.label.is_(None))
        with Session(self.engine) as s:
            rows = [dict(zip(SUMMARY, r)) for r in s.execute(q.order_by(Capture.id.desc()).limit(QUEUE_SCAN))]
            counts = select(Capture.entrance, func.count(Capture.id)).group_by(Capture.entrance)
            seen: dict[str | None, int] = dict(s.execute(counts).tuples().all())
        for r in rows:
            r["priority"], r["why"] = review_priority(r, band, seen.get(r["entrance"], 0))
        rows.sort(key=lambda r: (-r["priority"], -r["id"]))
        return [_jsonable(r) for r in rows[: max(1, limit)]]


def review_priority(row: dict, band: float, entrance_captures: int) -> tuple[float, list[str]]:
    """How much a label would teach: near the threshold (up to 3, closer is more), masked (+1), a new
    entrance (+0.5). A label far from tau confirms what the model already knows."""
    score, why = 0.0, []
    d, tau = row.get("distance"), row.get("threshold")
    if d is not None and tau is not None and abs(d - tau) <= band:
        score += 2.0 + (1.0 - abs(d - tau) / band)
        why.append("near_threshold")
    if row.get("mask") in MASKED:
        score += 1.0
        why.append("masked")
    if entrance_captures < NEW_ENTRANCE_CAPTURES:
        score += 0.5
        why.append("new_entrance")
    return round(score, 4), why


def _jsonable(row: dict) -> dict:
    at = row.get("at")
    if isinstance(at, datetime):
        row["at"] = at.isoformat(timespec="seconds")
    return row


def _summary(c: Capture) -> dict:
    return _jsonable({k: getattr(c, k) for k in SUMMARY})


class _Tx:
    """One transaction; a database error becomes an AccessLogError naming the store and the operation."""

    def __init__(self, store: CaptureStore, what: str) -> None:
        self.store, self.what = store, what

    def __enter__(self) -> Session:
        self.session = Session(self.store.engine)
        self.session.begin()
        return self.session

    def __exit__(self, kind, exc, tb) -> Literal[False]:  # noqa: ANN001
        try:
            if exc is None:
                self.session.commit()
            else:
                self.session.rollback()
        except SQLAlchemyError as err:
            raise AccessLogError(
                f"captures {safe_url(self.store.url)}: {self.what} failed ({type(err).__name__})"
            ) from None
        finally:
            self.session.close()
        if isinstance(exc, SQLAlchemyError):
            raise AccessLogError(f"captures {safe_url(self.store.url)}: {self.what} failed ({type(exc).__name__})")
        return False


def capture_rows(
    result: dict,
    faces: Sequence[Any],
    *,
    entrance: str | None,
    model: str | None,
    chip_geometry: str | None,
    nearest: Sequence[str | None] | None = None,
) -> list[dict]:
    """Capture rows for an identify answer (``Identification.to_dict()``) and its ``FaceEmbedding``s
    (None for a face the cascade's cheap pass decided: it has no full embedding to keep)."""
    rows = []
    for i, (answer, face) in enumerate(zip(result.get("faces") or [], faces)):
        if face is None or face.chip is None:
            continue
        box = answer["box"]
        rows.append(
            {
                "entrance": entrance,
                "decision": answer.get("decision") or "",
                "model": model,
                "employee_id": answer["employee_id"] if answer["recognized"] else None,
                "nearest_id": answer["employee_id"] or (nearest[i] if nearest else None),
                "distance": answer["distance"],
                "threshold": answer["tau"],
                "mask": answer.get("mask"),
                "chip_geometry": chip_geometry,
                "face_px": int(min(box[2] - box[0], box[3] - box[1])),
                "sharpness": chip_sharpness(face.chip),
                "embedding": face.embedding,
                "chip": face.chip,
            }
        )
    return rows


def capture_identification(gate: Any, result: dict, embedded: Sequence[Any], entrance: str | None) -> list[int]:
    """Keep the faces of one identify answer (``gate``: a FaceGate with a capture store); their ids."""
    g = gate.snapshot()
    nearest = [
        ((g.search(f.embedding[None], k=1)[0] or [(None,)])[0][0] if f is not None and g is not None else None)
        for f in embedded
    ]
    rows = capture_rows(
        result,
        embedded,
        entrance=entrance,
        model=gate.model_label(),
        chip_geometry=gate.recognizer.model.backbone.chip_geometry,
        nearest=nearest,
    )
    return gate.captures.record(rows) if rows else []
