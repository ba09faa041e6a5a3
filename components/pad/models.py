"""Presentation-attack detectors behind one interface, one registry entry each (as the face detectors).

``score(frame_rgb, box) -> live probability`` for one face, ``score_faces(frame_rgb, boxes)`` for all the
faces of a frame in one call. Every entry carries its calibration (the scores its threshold comes from,
:mod:`facegate.components.pad.calibration`) and a fingerprint naming the exact weights it scores with.

Entries here run the shipped MiniFASNet weights: the source's fused pair and each member alone. The
fine-tuned pair lives in the MLflow registry and is registered from the lifecycle layer
(``facegate.components.lifecycle.pad_models``), which this layer must not import.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np

from facegate.components.core.paths import REPO_ROOT
from facegate.components.core.settings import PadSettings
from facegate.components.faces.types import FaceBox
from facegate.components.pad.calibration import PadCalibration
from facegate.components.pad.minifasnet import (
    LIVE_CLASS,
    V1SE_SPEC,
    V2_SPEC,
    ModelSpec,
    PadNet,
    crop_face,
    load_pad_net,
    source_box,
    to_input_array,
)
from facegate.components.pad.runtime import pad_runner


class PadModel(Protocol):
    name: ClassVar[str]
    fingerprint: str
    calibration: PadCalibration | None

    def score(self, frame_rgb: np.ndarray, box: FaceBox) -> float:
        """Live probability of the face in ``box`` of an HxWx3 uint8 RGB frame."""

    def score_faces(self, frame_rgb: np.ndarray, boxes: Sequence[FaceBox]) -> np.ndarray:
        """Live probability of each face, in ``boxes`` order."""


def calibrations_dir() -> Path:
    """The calibrations committed with the code (``calibration/``; ``FACEGATE_CALIBRATIONS`` overrides),
    as for the embedders: PAD's are in its ``pad/`` folder."""
    return Path(os.environ.get("FACEGATE_CALIBRATIONS", REPO_ROOT / "calibration")) / "pad"


def weights_fingerprint(specs: Sequence[ModelSpec]) -> str:
    """What a shipped entry scores with: a hash of its members' pinned sha256s, in order."""
    return hashlib.sha256("+".join(s.sha256 for s in specs).encode()).hexdigest()[:16]


def committed_calibration_file(name: str, fingerprint: str) -> Path:
    return calibrations_dir() / f"{name}-{fingerprint}.json"


def committed_calibration(name: str, fingerprint: str) -> PadCalibration | None:
    """The committed calibration of these exact weights (None when there is none: never another model's)."""
    path = committed_calibration_file(name, fingerprint)
    if not path.is_file():
        return None
    cal = PadCalibration.load(path)
    return cal if cal.fingerprint == fingerprint and cal.model == name else None


class MiniFasNetPad:
    """A PadNet (one or more MiniFASNets on their own crops, softmaxes averaged) behind the interface.

    ``net``: a trained network (the fine-tuned pair); default: the shipped weights of ``specs``,
    verified. ``runtime``: ``pad.runtime`` (:data:`facegate.components.pad.runtime.RUNTIMES`: ``openvino``
    serves, ``opencv`` is its fallback, ``torch`` the reference).
    """

    name: ClassVar[str] = ""
    specs: ClassVar[tuple[ModelSpec, ...]] = ()

    def __init__(
        self,
        net: PadNet | None = None,
        *,
        fingerprint: str | None = None,
        calibration: PadCalibration | None = None,
        runtime: str = "openvino",
    ) -> None:
        self.net = net if net is not None else load_pad_net(self.specs)
        self.member_specs = self.net.specs
        self.fingerprint = fingerprint or weights_fingerprint(self.member_specs)
        self.runner = pad_runner(self.net, runtime)
        self.calibration = (
            calibration if calibration is not None else committed_calibration(self.name, self.fingerprint)
        )

    def crops(self, frame: np.ndarray, boxes: Sequence[FaceBox], *, rgb: bool = True) -> list[np.ndarray]:
        """Per member, the ``Nx3x80x80`` float batch of its crops of every face (BGR 0-255, as trained)."""
        return [
            to_input_array([crop_face(frame, source_box(b), spec, rgb=rgb) for b in boxes])
            for spec in self.member_specs
        ]

    def score_faces(self, frame_rgb: np.ndarray, boxes: Sequence[FaceBox]) -> np.ndarray:
        if not len(boxes):
            return np.zeros(0, np.float64)
        return self.runner(self.crops(frame_rgb, boxes))[:, LIVE_CLASS]

    def score(self, frame_rgb: np.ndarray, box: FaceBox) -> float:
        return float(self.score_faces(frame_rgb, [box])[0])


class MiniFasNetPairPad(MiniFasNetPad):
    """The source's pair, zero-shot: V2 on the 2.7x crop (texture) and V1SE on the 4.0x crop (the photo's
    edges and the hand holding it), their softmaxes averaged."""

    name = "minifasnet_pair"
    specs = (V2_SPEC, V1SE_SPEC)


class MiniFasNetV2Pad(MiniFasNetPad):
    name = "minifasnet_v2"
    specs = (V2_SPEC,)


class MiniFasNetV1SEPad(MiniFasNetPad):
    name = "minifasnet_v1se"
    specs = (V1SE_SPEC,)


PAD_MODELS: dict[str, type[MiniFasNetPad]] = {
    cls.name: cls for cls in (MiniFasNetPairPad, MiniFasNetV2Pad, MiniFasNetV1SEPad)
}


def register_pad_model(cls: type[MiniFasNetPad]) -> type[MiniFasNetPad]:
    """Add an entry (by its ``name``) from a layer above this one (the fine-tuned pair in MLflow)."""
    PAD_MODELS[cls.name] = cls
    return cls


def make_pad_model(name: str, **kwargs) -> PadModel:
    """PAD model ``name``; a missing or wrong weights file is one WeightFileError naming it."""
    try:
        cls = PAD_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown PAD model {name!r} (known: {sorted(PAD_MODELS)})") from None
    return cls(**kwargs)


def pad_model_from_settings(pad: PadSettings, name: str | None = None, **options) -> PadModel:
    """The entry ``pad.model`` names (or ``name``), given the ``pad`` values its constructor takes
    (``runtime``; the fine-tuned entry: ``registered_model``); ``options`` win."""
    name = name or pad.model
    if name not in PAD_MODELS:
        raise ValueError(f"unknown PAD model {name!r} (known: {sorted(PAD_MODELS)})")
    accepted = inspect.signature(PAD_MODELS[name]).parameters
    knobs = {k: getattr(pad, k) for k in ("registered_model", "runtime") if k in accepted}
    return make_pad_model(name, **{**knobs, **options})
