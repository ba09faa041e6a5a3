"""Presentation-attack detection in the door: the PAD model in service and what ``pad.mode`` does.

- ``off``: no PAD; answers carry ``liveness: null``.
- ``flag``: every face answers ``liveness`` {score, live|attack, threshold}; decisions are unchanged,
  the access log and ``/metrics`` record the attack; an attack photo is enrolled, its flag in the audit row.
- ``enforce``: an attack is never recognised — its decision is ``attack``, whoever it resembles — and an
  attack photo is refused at enrolment unless forced. If the PAD model cannot run (weights missing or
  wrong, no calibration) the door fails closed (``pad_unavailable``) rather than deciding without it.

``/status`` says which of these holds, and why PAD is unavailable when it is. The threshold is the
model's stored calibration at ``pad.target_apcer`` (:mod:`facegate.components.pad.calibration`).
See docs/decisions/pad.md for why ``enforce`` is the default.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from facegate.components.core.errors import FacegateError, PadUnavailable, PresentationAttack
from facegate.components.core.images import decode_image
from facegate.components.core.settings import Settings
from facegate.components.faces.types import FaceBox
from facegate.components.gallery.enrolment import Photo
from facegate.components.lifecycle.pad_models import pad_model_in_service
from facegate.components.pad.models import PadModel
from facegate.components.recognition.recognizer import FaceRecognizer
from facegate.components.service.answers import Identification, Verification


@dataclass(frozen=True)
class Liveness:
    """One face's PAD answer: the live probability, the verdict, and the threshold it was judged by."""

    score: float
    label: str  # live | attack
    threshold: float

    @property
    def attack(self) -> bool:
        return self.label == "attack"

    def to_dict(self) -> dict:
        return asdict(self)


class LivenessCheck:
    """The PAD model in service (loaded on first use, once per process) and the rules of ``pad.mode``.

    ``model``: a caller's own PAD model (a test); default: ``pad.model`` from the registry.
    """

    def __init__(self, settings: Settings, model: PadModel | None = None) -> None:
        self.pad = settings.pad
        self._model = model
        self._loaded: tuple[PadModel, float] | None = None  # the model and its threshold, once loaded
        self._error: str | None = None
        self._lock = threading.Lock()

    @property
    def mode(self) -> str:
        return self.pad.mode

    @property
    def enforcing(self) -> bool:
        return self.pad.mode == "enforce"

    def _load(self) -> tuple[PadModel, float] | None:
        """The model and its threshold, or None with ``_error`` saying why (tried once per process)."""
        if self._loaded is None and self._error is None:
            with self._lock:
                if self._loaded is None and self._error is None:
                    try:
                        model = self._model or pad_model_in_service(self.pad)
                        if model.calibration is None:
                            raise PadUnavailable(
                                f"PAD model {model.name} has no stored calibration: run `facegate "
                                "calibrate-pad` (shipped weights) or `facegate train-pad`"
                            )
                        self._loaded = model, model.calibration.threshold(self.pad.target_apcer)
                    except (FacegateError, ValueError) as exc:
                        self._error = getattr(exc, "message", None) or str(exc)
        return self._loaded

    def check(self, pixels: np.ndarray, boxes: Sequence[FaceBox]) -> list[Liveness | None]:
        """Each face's liveness (None: PAD off, or unavailable under ``flag``); unavailable under
        ``enforce`` raises PadUnavailable."""
        if self.pad.mode == "off" or not len(boxes):
            return [None] * len(boxes)
        loaded = self._load()
        if loaded is None:
            if self.enforcing:
                raise PadUnavailable(f"pad.mode is enforce and PAD cannot run: {self._error}")
            return [None] * len(boxes)
        model, t = loaded
        return [
            Liveness(round(float(s), 6), "live" if s > t else "attack", round(t, 6))
            for s in model.score_faces(pixels, boxes)
        ]

    def judge_identification(self, result: Identification, live: Sequence[Liveness | None]) -> Identification:
        """Each face with its liveness; under ``enforce`` an attack is not recognised (decision ``attack``)."""
        faces = []
        for face, lv in zip(result.faces, live):
            if lv is not None and lv.attack and self.enforcing:
                face = replace(face, employee_id=None, name=None, recognized=False, decision="attack")
            faces.append(replace(face, liveness=lv.to_dict() if lv is not None else None))
        return replace(result, faces=faces)

    def judge_verification(self, result: Verification, live: Sequence[Liveness | None]) -> Verification:
        lv = live[0] if live else None
        if lv is not None and lv.attack and self.enforcing:
            result = replace(result, accepted=False, decision="attack")
        return replace(result, liveness=lv.to_dict() if lv is not None else None)

    def embed_checked(
        self, recognizer: FaceRecognizer, photos: Sequence[Photo], max_pixels: int, *, force: bool = False
    ) -> tuple[np.ndarray, list[str]]:
        """``embed_photos`` for enrolment, each photo also judged by PAD: under ``enforce`` an attack photo
        is refused (PresentationAttack) unless ``force``; nothing is stored before every photo passes."""
        embs, digests = [], []
        for photo in photos:
            decoded = decode_image(photo.data, photo.name, max_pixels)
            face = recognizer.embed_one(decoded.pixels, photo.name)
            lv = self.check(decoded.pixels, [face.box])[0] if self.enforcing and not force else None
            if lv is not None and lv.attack:
                raise PresentationAttack(photo.name, lv.score, lv.threshold, self.pad.model)
            embs.append(face.embedding)
            digests.append(f"{decoded.sha256}.{decoded.format.lower().replace('jpeg', 'jpg')}")
        return np.stack(embs).astype(np.float32), digests

    def status(self) -> dict:
        """What ``/status`` shows: the mode, the model, its threshold, or why PAD is not running."""
        out: dict = {
            "mode": self.pad.mode,
            "model": self.pad.model,
            "target_apcer": self.pad.target_apcer,
            "available": False,
            "threshold": None,
        }
        if self.pad.mode == "off":
            out["note"] = "PAD is off (pad.mode): printed photos and screens are not checked"
            return out
        loaded = self._load()
        if loaded is None:
            out["error"] = self._error
            out["note"] = (
                "every identify and verify is refused (pad_unavailable) until PAD can run"
                if self.enforcing
                else "answers carry no liveness until PAD can run"
            )
            return out
        model, threshold = loaded
        cal = model.calibration
        out.update(
            available=True,
            threshold=round(threshold, 6),
            fingerprint=model.fingerprint,
            calibration=cal.source if cal else None,
            threshold_rule=cal.rule if cal else None,
            expected_on_calibration=cal.expected(threshold) if cal else None,
        )
        return out
