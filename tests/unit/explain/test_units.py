"""Streaming top-9 heaps, a planted red unit, grids and the side-by-side comparison, on tiny generated data."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from facegate.components.core.errors import UnknownLayer
from facegate.components.explain.grids import compare_grids, cut_patch, render
from facegate.components.explain.units import TopUnits, collect, sample_units

PALETTE = np.array(
    [
        [255, 0, 0],
        [0, 255, 0],
        [0, 0, 255],
        [255, 255, 0],
        [0, 255, 255],
        [255, 0, 255],
        [255, 255, 255],
        [0, 0, 0],
        [255, 128, 0],
    ],
    np.uint8,
)


def square_images(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Grey images with 2-4 squares of 10-19 px in colours of the palette."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = np.full((size, size, 3), 128, np.uint8)
        for _ in range(rng.integers(2, 5)):
            s = int(rng.integers(10, 20))
            y, x = rng.integers(0, size - s, 2)
            img[y : y + s, x : x + s] = PALETTE[rng.integers(len(PALETTE))]
        out.append(img)
    return out


def red_net() -> nn.Sequential:
    """Channel 0 of "0" answers only to pure red (r - g - b - 0.5 per pixel, inputs in 0..1, ReLU'd);
    channel 0 of "2" averages it over 5x5 at stride 2: a receptive field of 3 + 4 = 7 input pixels."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.ReLU(), nn.Conv2d(4, 3, 5, 2, 2)).eval()
    with torch.no_grad():
        w = torch.zeros(3, 3, 3)
        w[0], w[1], w[2] = 1 / 9, -1 / 9, -1 / 9
        net[0].weight[0] = w
        net[0].bias[0] = -0.5
        net[2].weight[0].zero_()
        net[2].weight[0, 0] = 1 / 25
        net[2].bias[0] = 0.0
    return net


def to_input_half(img: np.ndarray) -> torch.Tensor:
    """The model sees the image at half size (64 -> 32): boxes must be scaled x2 back to the image."""
    x = torch.from_numpy(img).permute(2, 0, 1).float().div(255).unsqueeze(0)
    return F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)[0]


def test_planted_red_unit_picks_red_patches(tmp_path):
    images = square_images(120)
    res = collect(
        red_net(), ["0", "2"], images, to_input_half, units={"0": [0, 1], "2": [0, 1]}, batch_size=16, progress=False
    )
    doc = render(res, lambda i: images[i], tmp_path, name=lambda i: f"img{i}")
    for layer, side in (("0", 3 * 2), ("2", 7 * 2)):  # the receptive field in input px, x 2 in the image
        red = doc["layers"][layer]["units"][0]
        assert red["unit"] == 0 and len(red["top"]) == 9
        means = []
        for t in red["top"]:
            x0, y0, x1, y1 = t["box_xyxy"]
            assert (x1 - x0, y1 - y0) == (side, side)
            means.append(cut_patch(images[t["image_index"]], (y0, x0, y1, x1)).reshape(-1, 3).mean(0))
        m = np.array(means)  # 9 x 3 mean colours
        assert (m[:, 0] > m[:, 1] + 60).sum() >= 8 and (m[:, 0] > m[:, 2] + 60).sum() >= 8, m
        assert m[:, 0].mean() > 200 and m[:, 1].mean() < 60 and m[:, 2].mean() < 60, m.mean(0)
    saved = json.loads((tmp_path / "units.json").read_text())
    assert saved["layers"]["2"]["receptive_field_px"] == 7 and saved["layers"]["2"]["jump_px"] == 2
    assert saved["layers"]["2"]["units"][0]["top"][0]["image"].startswith("img")
    grid = Image.open(tmp_path / "2.png")
    assert grid.height > 2 * 48 and grid.width > 9 * 48


def test_unknown_layer_before_any_image_is_read():
    read = []

    def images():
        for im in square_images(3):
            read.append(1)
            yield im

    with pytest.raises(UnknownLayer) as e:
        collect(red_net(), ["0", "conv9"], images(), to_input_half, progress=False)
    assert e.value.valid == ["0", "1", "2"] and not read


def test_heaps_stay_bounded_and_exact():
    rng = np.random.default_rng(1)
    rec = TopUnits({"l": [0, 3, 5]}, k=9)
    acts = []
    for b in range(20):
        act = torch.from_numpy(rng.normal(size=(7, 6, 4, 5)).astype(np.float32))
        rec.update("l", act, list(range(b * 7, b * 7 + 7)))
        assert rec.max_heap_size() <= 9
        acts.append(act)
    every = torch.cat(acts)  # brute force, for comparison
    for j, c in enumerate([0, 3, 5]):
        want = every[:, c].flatten(1).max(1).values.argsort(descending=True)[:9].tolist()
        got = rec.top("l", j)
        assert [t[1] for t in got] == want
        for v, i, y, x in got:
            assert every[i, c, y, x].item() == pytest.approx(v)


def test_collect_streams_a_generator_with_bounded_heaps():
    sizes = []
    images = (im for im in square_images(50))  # never materialised as one batch
    res = collect(
        red_net(),
        ["2"],
        images,
        to_input_half,
        units_per_layer=2,
        seed=3,
        batch_size=4,
        progress=False,
        on_batch=lambda rec, n: sizes.append(rec.max_heap_size()),
    )
    assert max(sizes) <= 9 and sizes[-1] == 9 and res.n_images == 50
    r = res.layers["2"]
    assert r.units == sample_units(3, 2, 3, "2") and all(len(t) == 9 for t in r.top)
    assert all(isinstance(v, float) and isinstance(i, int) for t in r.top for v, i, _, _ in t)  # no tensor kept


def test_compare_shows_the_same_units_side_by_side(tmp_path):
    images = square_images(30)
    a, b = red_net(), red_net()
    with torch.no_grad():
        b[2].weight.mul_(-1)
    res_a = collect(a, ["0", "2"], images, to_input_half, units_per_layer=2, seed=1, progress=False)
    res_b = collect(
        b, ["0", "2"], images, to_input_half, units={ly: r.units for ly, r in res_a.layers.items()}, progress=False
    )
    doc = compare_grids(res_a, res_b, lambda i: images[i], tmp_path, labels=("v1", "v2"))
    for ly in ("0", "2"):
        assert [u["unit"] for u in doc["layers"][ly]["v1"]] == [u["unit"] for u in doc["layers"][ly]["v2"]]
        assert (tmp_path / f"compare_{ly}.png").exists()
    assert doc["layers"]["0"]["shared_top_images"] == [9, 9]  # layer "0" is the same in both
    assert (tmp_path / "compare.json").exists()


def test_progress_falls_back_to_a_counter_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # the import fails: as if tqdm were not installed
    collect(red_net(), ["0"], square_images(5), to_input_half, units_per_layer=1, batch_size=2)
    assert "units: 5/5 images" in capsys.readouterr().err
