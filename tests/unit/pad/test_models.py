"""The PAD registry: its entries behind one interface, params naming them, the committed calibrations."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from facegate.components.core.images import load_image
from facegate.components.core.paths import weights_root
from facegate.components.core.settings import PadSettings, load_settings
from facegate.components.faces.detectors import detector_from_settings
from facegate.components.lifecycle import pad_models
from facegate.components.pad.minifasnet import LIVE_CLASS
from facegate.components.pad.models import (
    PAD_MODELS,
    MiniFasNetPad,
    committed_calibration,
    make_pad_model,
    pad_model_from_settings,
    weights_fingerprint,
)
from facegate.components.pad.runtime import OpenVinoPadRunner, TorchPadRunner

needs_weights = pytest.mark.skipif(
    not (weights_root() / "minifasnet" / "2.7_80x80_MiniFASNetV2.pth").is_file(),
    reason=f"MiniFASNet weights not under {weights_root()} (set FACEGATE_WEIGHTS)",
)
SHIPPED = ("minifasnet_pair", "minifasnet_v2", "minifasnet_v1se")


def test_params_choices_are_the_registry() -> None:
    assert pad_models.FINETUNED in PAD_MODELS  # registered from the lifecycle layer
    assert set(typing.get_args(PadSettings.model_fields["model"].annotation)) == set(PAD_MODELS)
    assert load_settings().pad.model in PAD_MODELS


def test_unknown_model_is_named() -> None:
    with pytest.raises(ValueError, match="unknown PAD model 'nope'"):
        make_pad_model("nope")


def test_fine_tuned_entry_without_a_champion_is_a_registry_error(monkeypatch) -> None:
    monkeypatch.setattr(pad_models.registry, "champion", lambda name: None)
    with pytest.raises(pad_models.RegistryError, match="no champion"):
        pad_model_from_settings(load_settings().pad, "minifasnet_pair_finetuned")


@needs_weights
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_entry_scores_the_example_frames_and_has_a_calibration(name: str) -> None:
    model = make_pad_model(name)
    assert isinstance(model, MiniFasNetPad) and model.name == name
    assert isinstance(model.runner, OpenVinoPadRunner)  # pad.runtime's default, the served path
    assert model.fingerprint == weights_fingerprint(model.member_specs)
    assert model.calibration is not None, f"no committed calibration for {name}: run `facegate calibrate-pad`"
    assert model.calibration == committed_calibration(name, model.fingerprint)
    threshold = model.calibration.threshold(load_settings().pad.target_apcer)
    detector = detector_from_settings(load_settings().faces, "yunet")
    scores = {}
    for frame_name in ("image_T1.jpg", "image_F1.jpg", "image_F2.jpg"):
        frame = load_image(weights_root() / "minifasnet" / "samples" / frame_name)
        box = detector.detect(frame)[0]
        scores[frame_name] = model.score(frame, box)
        assert scores[frame_name] == pytest.approx(model.score_faces(frame, [box, box])[1], abs=1e-6)
        reference = TorchPadRunner(model.net)(model.crops(frame, [box]))[0, LIVE_CLASS]  # the served runtime: torch's
        assert scores[frame_name] == pytest.approx(reference, abs=1e-5)
    assert scores["image_T1.jpg"] > threshold
    assert scores["image_F2.jpg"] <= threshold  # F1 is the hard one (the pair: 0.22); a member alone may pass it
    assert model.score_faces(np.zeros((10, 10, 3), np.uint8), []).shape == (0,)
