"""Neural style transfer: the course's costs against numbers worked out by hand, the gradient reaching G
only, and bad inputs failing with typed errors that name the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from facegate.components.core.errors import ImageTooSmall, ImageTooSmallForStyle, SettingsError, UnreadableImage
from facegate.components.core.settings import load_settings
from facegate.components.networks.mobilenet_v2 import MobileNetV2
from facegate.components.style.transfer import (
    StyleConfig,
    StyleFeatures,
    config_from_settings,
    content_cost,
    gram_matrix,
    initial_image,
    layer_style_cost,
    load_style_inputs,
    style_cost,
    stylize,
    total_cost,
)
from tests.images_factory import text_as_jpg, truncated_jpeg, write_jpeg, zero_byte

# one image, n_C = 2 channels, n_H = 1, n_W = 2: channel 0 is [1, 2], channel 1 is [3, -1]
A = torch.tensor([[[[1.0, 2.0]], [[3.0, -1.0]]]])


def gram_by_loops(a: torch.Tensor) -> list[list[float]]:
    _, n_C, n_H, n_W = a.shape
    return [
        [sum(float(a[0, k, i, j] * a[0, k2, i, j]) for i in range(n_H) for j in range(n_W)) for k2 in range(n_C)]
        for k in range(n_C)
    ]


def content_cost_by_loops(a_C: torch.Tensor, a_G: torch.Tensor) -> float:
    _, n_C, n_H, n_W = a_G.shape
    total = sum(
        float(a_C[0, k, i, j] - a_G[0, k, i, j]) ** 2 for k in range(n_C) for i in range(n_H) for j in range(n_W)
    )
    return total / (4 * n_H * n_W * n_C)


def style_cost_by_loops(a_S: torch.Tensor, a_G: torch.Tensor) -> float:
    _, n_C, n_H, n_W = a_G.shape
    g_S, g_G = gram_by_loops(a_S), gram_by_loops(a_G)
    total = sum((g_S[k][k2] - g_G[k][k2]) ** 2 for k in range(n_C) for k2 in range(n_C))
    return total / (2 * n_H * n_W * n_C) ** 2


def test_gram_matrix_of_a_tiny_activation():
    # G_00 = 1*1 + 2*2 = 5, G_01 = 1*3 + 2*(-1) = 1, G_11 = 3*3 + (-1)*(-1) = 10
    assert gram_matrix(A).tolist() == [[5.0, 1.0], [1.0, 10.0]]
    assert gram_matrix(A[0]).tolist() == [[5.0, 1.0], [1.0, 10.0]]  # n_C x n_H x n_W is accepted too


def test_gram_matrix_matches_explicit_loops():
    a = torch.randn(1, 3, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert np.allclose(gram_matrix(a).numpy(), gram_by_loops(a), rtol=1e-12, atol=1e-12)


def test_content_cost_by_hand():
    # sum of squares 1 + 4 + 9 + 1 = 15, over 4 * n_H n_W n_C = 4 * 1 * 2 * 2 = 16
    assert float(content_cost(torch.zeros_like(A), A)) == pytest.approx(15 / 16)
    a_C = torch.randn(1, 4, 3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a_G = torch.randn(1, 4, 3, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert float(content_cost(a_C, a_G)) == pytest.approx(content_cost_by_loops(a_C, a_G), rel=1e-12)


def test_layer_style_cost_by_hand():
    # G(S) = [[5, 1], [1, 10]], G(G) = 0: (25 + 1 + 1 + 100) / (2 * 1 * 2 * 2)^2 = 127 / 64
    assert float(layer_style_cost(A, torch.zeros_like(A))) == pytest.approx(127 / 64)
    assert float(layer_style_cost(A, A)) == 0.0
    # swapping the two pixels keeps the Gram matrix: style does not care where a texture is
    assert float(layer_style_cost(A, A.flip(-1))) == 0.0
    a_S = torch.randn(1, 3, 2, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a_G = torch.randn(1, 3, 2, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert float(layer_style_cost(a_S, a_G)) == pytest.approx(style_cost_by_loops(a_S, a_G), rel=1e-12)


def test_style_cost_weights_the_layers_and_total_cost_combines():
    a_S = {"x": A, "y": A * 2}
    a_G = {"x": torch.zeros_like(A), "y": A}
    # layer y: G(S) = 4 G(A), G(G) = G(A), difference 3 G(A): 9 * 127 / 64
    expected = 0.3 * 127 / 64 + 0.7 * 9 * 127 / 64
    assert float(style_cost(a_S, a_G, {"x": 0.3, "y": 0.7})) == pytest.approx(expected)
    assert float(style_cost(a_S, a_G, {"y": 1.0})) == pytest.approx(9 * 127 / 64)  # unnamed layers are ignored
    assert float(total_cost(torch.tensor(2.0), torch.tensor(0.5), alpha=10, beta=40)) == 10 * 2.0 + 40 * 0.5


def test_costs_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        content_cost(A, torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match="shape"):
        layer_style_cost(A, torch.zeros(1, 2, 2, 2))


def style_config(**overrides) -> StyleConfig:
    """params' style section with ``overrides`` (the config ``facegate stylize`` runs)."""
    return config_from_settings(load_settings().style, **overrides)


@pytest.fixture(scope="module")
def features() -> StyleFeatures:
    return StyleFeatures.imagenet(style_config().layers)


def tiny_pair(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    content = np.stack([xx * 255 // size, yy * 255 // size, np.full_like(xx, 128)], -1).astype(np.uint8)
    style = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return content, style


def test_the_network_is_frozen_and_only_G_changes(features):
    before = {k: v.clone() for k, v in features.state_dict().items()}  # weights and BatchNorm statistics
    assert not any(p.requires_grad for p in features.parameters())
    features.train()  # cannot be put back into training mode: BatchNorm keeps its ImageNet statistics
    assert not features.training and not any(m.training for m in features.modules())
    content, style = tiny_pair()
    cfg = style_config(iterations=3, lr=0.05)
    result = stylize(content, style, cfg, features=features)
    after = features.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a network weight or statistic changed"
    assert all(p.grad is None for p in features.parameters())
    start = initial_image(torch.from_numpy(content).permute(2, 0, 1)[None].float() / 255, cfg)
    start_u8 = (start[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.abs(result.image.astype(int) - start_u8.astype(int)).mean() > 1.0, "G did not move"
    assert result.image.dtype == np.uint8 and result.image.shape == content.shape
    assert len(result.curve) == cfg.iterations + 1
    assert result.loss_end < result.loss_start


def test_lbfgs_and_noise_init_also_reduce_the_loss(features):
    content, style = tiny_pair()
    result = stylize(
        content, style, style_config(iterations=4, optimizer="lbfgs", lr=1.0, init="noise"), features=features
    )
    assert result.loss_end < result.loss_start


def test_initial_image_stays_in_range():
    c = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    for init in ("content_noise", "noise"):
        g = initial_image(c, style_config(init=init, noise=1.0))
        assert 0.0 <= float(g.min()) and float(g.max()) <= 1.0
    assert torch.equal(initial_image(c, style_config(noise=0.0)), c)


def test_unknown_layer_is_a_settings_error():
    for name in ("features.99", "classifier.1", "features.4.conv.9"):
        with pytest.raises(SettingsError, match=name):
            StyleFeatures(MobileNetV2(), [name])
    assert StyleFeatures(MobileNetV2(), ["features.4.conv.0"]).strides == {"features.4.conv.0": 4}


def test_min_side_is_the_stride_of_the_deepest_layer(features):
    assert features.strides["features.1"] == 2 and features.strides["features.13"] == 16
    assert features.min_side == 16


def test_config_from_settings_follows_params():
    style = load_settings().style
    cfg = config_from_settings(style, iterations=7, lr=None)
    assert cfg.iterations == 7 and cfg.lr == style.lr
    assert cfg.style_weights == dict(style.style_layers)
    assert cfg.layers[0] == style.content_layer


def test_missing_file_names_it(tmp_path):
    style = write_jpeg(tmp_path / "style.jpg", 40, 40)
    missing = tmp_path / "nope.jpg"
    with pytest.raises(UnreadableImage, match="nope.jpg: file not found"):
        load_style_inputs(missing, style, 64, 16)


@pytest.mark.parametrize("make", [truncated_jpeg, text_as_jpg, zero_byte])
def test_corrupt_file_names_it(tmp_path, make):
    content = write_jpeg(tmp_path / "content.jpg", 40, 40)
    bad = make(tmp_path / "bad.jpg")
    with pytest.raises(UnreadableImage, match="bad.jpg") as err:
        load_style_inputs(content, bad, 64, 16)
    assert err.value.code == "unreadable_image"


@pytest.mark.parametrize("which", ["content", "style"])
def test_one_pixel_image_is_too_small(tmp_path, which):
    good = write_jpeg(tmp_path / "good.jpg", 40, 40)
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(tiny)
    pair = (tiny, good) if which == "content" else (good, tiny)
    with pytest.raises(ImageTooSmallForStyle, match=r"tiny.png: 1x1 .*>= 16 px") as err:
        load_style_inputs(*pair, 64, 16)
    assert err.value.code == "image_too_small_for_style" and isinstance(err.value, ImageTooSmall)


def test_inputs_are_sized_for_G(tmp_path):
    content = write_jpeg(tmp_path / "content.jpg", 80, 40)
    style = write_jpeg(tmp_path / "style.jpg", 30, 50, seed=1)
    c, s = load_style_inputs(content, style, 64, 16)
    assert c.shape == (32, 64, 3) and s.shape == c.shape and c.dtype == s.dtype == np.uint8


def test_output_must_be_jpg_or_png(tmp_path):
    from facegate.components.core.errors import ImageError
    from facegate.components.style.transfer import save_image

    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    with pytest.raises(ImageError, match=r"g\.gif: the output must be"):
        save_image(pixels, tmp_path / "g.gif")
    assert load_image_shape(save_image(pixels, tmp_path / "sub" / "g.png")) == (4, 4, 3)


def load_image_shape(path) -> tuple[int, ...]:
    from facegate.components.core.images import load_image

    return load_image(path).shape


def test_cost_plot_and_side_by_side(tmp_path):
    from facegate.components.style.transfer import StyleStep, plot_cost_curve, side_by_side

    curve = [StyleStep(i, 1.0 / (i + 1), 0.1 / (i + 1), 11.0 / (i + 1)) for i in range(5)]
    assert plot_cost_curve(curve, 10, 10, tmp_path / "c.png").stat().st_size > 1000
    row = side_by_side([np.zeros((20, 10, 3), np.uint8), np.zeros((10, 10, 3), np.uint8)], height=20, gap=2)
    assert row.shape == (20, 10 + 2 + 20, 3)
