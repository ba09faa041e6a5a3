"""The detector network's output layout, the frozen/unfrozen phases, and its settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from facegate.components.core.errors import SettingsError
from facegate.components.core.paths import repo_root
from facegate.components.core.settings import parse_settings
from facegate.components.detection.model import build_detector, layout_from
from facegate.components.detection.train import DetectTrainConfig

ANCHORS = np.array([[8, 9], [16, 18], [25, 27], [40, 43], [64, 71], [112, 132]], float)


@pytest.fixture(scope="module")
def model():
    layout = layout_from(128, (8, 16), ANCHORS, 3)
    return build_detector(layout, ("a", "b", "c"), width=32, pretrained=False)


def test_one_prediction_vector_per_cell_and_anchor(model):
    out = model(torch.zeros(2, 3, 128, 128))
    assert [tuple(o.shape) for o in out] == [(2, 16, 16, 3, 8), (2, 8, 8, 3, 8)]
    assert model.anchors.shape == (2, 3, 2)
    np.testing.assert_allclose(model.anchors[0].numpy(), ANCHORS[:3])  # small anchors on the fine grid
    p_c = torch.sigmoid(out[0][..., 0])
    assert float(p_c.mean().detach()) == pytest.approx(0.01, abs=0.005)  # the rare-object prior


def test_frozen_then_unfrozen(model):
    model.freeze_backbone()
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("backbone."))
    model.unfreeze_backbone(3)
    trainable = {n.split(".")[1] for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable == {str(i) for i in range(4, 18)}  # stride 8..32 stages, not the 1280 conv
    assert not any(p.requires_grad for p in model.backbone.classifier.parameters())


def test_detection_settings_are_strict():
    raw = yaml.safe_load((repo_root() / "params.yaml").read_text())
    settings = parse_settings(raw)
    cfg = DetectTrainConfig.from_settings(settings, finetune_epochs=1)
    assert cfg.finetune_epochs == 1 and cfg.classes == tuple(settings.detection.classes)
    raw["detection"]["anchor_count"] = 3
    with pytest.raises(SettingsError, match="detection.anchor_count"):
        parse_settings(raw)
    raw["detection"].pop("anchor_count")
    raw["detection"]["strides"] = [8, 12]
    with pytest.raises(SettingsError, match="detection.strides"):
        parse_settings(raw)
