"""Fine-tuning: only the deepest stages and the head move, from cached copies of each frame (mirrored,
small crops), and the shipped network is never changed in place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facegate.components.core.settings import load_settings
from facegate.components.faces.types import FaceBox
from facegate.components.pad.data import PadSample
from facegate.components.pad.finetune import (
    PadFinetuneConfig,
    augmented_copies,
    finetune_pad,
    jittered_box,
    live_log_loss,
)
from facegate.components.pad.minifasnet import V1SE_SPEC, V2_SPEC, MiniFASNet, PadNet


def test_jittered_box_stays_a_small_crop_of_the_face() -> None:
    rng = np.random.default_rng(0)
    box = FaceBox(100, 100, 199, 199)  # 100 x 100
    for _ in range(100):
        x, y, w, h = jittered_box(box, rng, 0.08)
        assert 92 <= w <= 108 and w == h
        assert abs(x + w / 2 - 150) <= 8.1 and abs(y + h / 2 - 150) <= 8.1


def test_live_log_loss_is_binary_over_the_three_classes() -> None:
    logits = torch.tensor([[0.0, 5.0, 0.0], [3.0, -2.0, 3.0]])
    live = torch.tensor([1.0, 0.0])
    p = torch.softmax(logits, 1)
    expected = -(torch.log(p[0, 1]) + torch.log(p[1, 0] + p[1, 2])) / 2
    torch.testing.assert_close(live_log_loss(logits, live), expected)


def test_finetune_moves_only_the_trained_part(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    samples, boxes = [], []
    for i in range(6):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(path)
        samples.append(PadSample(path, f"s{i % 2}", i % 2 == 0, "live" if i % 2 == 0 else "print"))
        boxes.append(FaceBox(50, 30, 100, 90))
    torch.manual_seed(0)
    net = PadNet((V2_SPEC, V1SE_SPEC)).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = PadFinetuneConfig.from_settings(
        load_settings(), epochs=2, lr=1e-2, batch_size=4, finetune_stages=1, crop_copies=1
    )
    copies = augmented_copies(net, samples, boxes, cfg, max_pixels=10**6)
    assert copies.n_copies == 4 and copies.feats[0].shape[:2] == (6, 4)
    live = np.array([s.live for s in samples])
    tuned, history = finetune_pad(net, copies, np.arange(6), live, cfg)
    assert len(history) == 2 and not tuned.training
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # the original is untouched
    names = (*MiniFASNet.BLOCKS[cfg.start :], "linear", "prob")
    trained = tuple(f"members.{m}.{name}." for m in (0, 1) for name in names)
    for key, value in tuned.state_dict().items():
        moved = not torch.equal(value, before[key])
        if moved:
            assert key.startswith(trained) and not key.split(".")[-2].startswith("bn"), key  # batch norm frozen
    assert any(not torch.equal(v, before[k]) for k, v in tuned.state_dict().items() if ".conv_5." in k)
