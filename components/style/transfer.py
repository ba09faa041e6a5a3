"""Neural style transfer (Gatys et al.): optimise the pixels of G so it keeps C's content and takes S's style.

The costs are the course's, written as functions of the same names (``content_cost``,
``gram_matrix``, ``layer_style_cost``, ``style_cost``, ``total_cost``). Features come from the ImageNet
MobileNetV2 already used for embeddings, frozen and in eval mode, so the gradient of J reaches the
pixels of G only. Layers are named as in that network's module tree (``features.7``: the block whose
output has stride 16); params.yaml's ``style`` section chooses them.

Inputs go through the one image loader (a missing or corrupt file is its typed error, naming the file),
and an image smaller than the stride of the deepest layer used is refused by name: that layer would see
less than one cell of it. No Prefect here: ``flows/style.py`` wraps this.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from facegate.components.core.errors import ImageError, ImageTooSmallForStyle, SettingsError
from facegate.components.core.images import DEFAULT_MAX_PIXELS, load_image
from facegate.components.networks.mobilenet_v2 import MobileNetV2, load_mobilenet_v2_imagenet, normalise
from facegate.components.style.costs import (
    content_cost,
    gram_matrix,
    layer_style_cost,
    style_cost,
    style_cost_from_gram,
    total_cost,
)

__all__ = [
    "StyleConfig",
    "StyleFeatures",
    "StyleResult",
    "StyleStep",
    "centre_square",
    "check_output_path",
    "config_from_settings",
    "content_cost",
    "gram_matrix",
    "initial_image",
    "layer_style_cost",
    "load_style_inputs",
    "plot_cost_curve",
    "run_benchmark",
    "save_image",
    "side_by_side",
    "style_cost",
    "stylize",
    "total_cost",
]


# --- configuration ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StyleConfig:
    """Everything one stylisation needs; built from params' ``style`` section by ``config_from_settings``
    (no defaults here: params.yaml has them)."""

    content_layer: str
    style_layers: tuple[tuple[str, float], ...]
    alpha: float
    beta: float
    iterations: int
    lr: float
    optimizer: str  # adam | lbfgs
    init: str  # content_noise (C plus uniform noise) | noise (noise alone)
    noise: float  # half-width of the uniform noise, in [0, 1] pixel units
    image_size: int  # G's longer side
    seed: int

    @property
    def style_weights(self) -> dict[str, float]:
        return dict(self.style_layers)

    @property
    def layers(self) -> tuple[str, ...]:
        names = [self.content_layer] + [name for name, _ in self.style_layers]
        return tuple(dict.fromkeys(names))


def config_from_settings(style, **overrides) -> StyleConfig:
    """A StyleConfig from ``Settings.style`` (a StyleSettings); ``None`` overrides are ignored."""
    fields = {f: getattr(style, f) for f in StyleConfig.__dataclass_fields__ if f != "style_layers"}
    fields["style_layers"] = tuple((str(k), float(v)) for k, v in style.style_layers.items())
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return StyleConfig(**fields)


# --- features -----------------------------------------------------------------------------------------


class StyleFeatures(nn.Module):
    """The frozen MobileNetV2 trunk, cut after the deepest named layer, returning ``{layer: activation}``.

    Every parameter has ``requires_grad`` off and the network is in eval mode (BatchNorm uses its
    ImageNet statistics), so backpropagating J changes nothing but the input image. In-place ReLU6 is
    turned off: a captured activation inside a block must not be overwritten by the next module.
    """

    def __init__(self, network: MobileNetV2, layers: Sequence[str]) -> None:
        super().__init__()
        if not layers:
            raise SettingsError("style: name at least one layer")
        modules = dict(network.named_modules())
        for name in layers:
            if not name.startswith("features.") or name not in modules:
                raise SettingsError(
                    f"style: unknown layer {name!r}; MobileNetV2 layers are features.0 .. "
                    f"features.18 and their submodules (e.g. features.4.conv.0)"
                )
        self.layers = tuple(layers)
        deepest = max(int(name.split(".")[1]) for name in self.layers)
        self.trunk = network.features[: deepest + 1]
        for m in self.trunk.modules():
            if isinstance(m, nn.ReLU6):
                m.inplace = False
        self.requires_grad_(False)
        self.eval()
        self._captured: dict[str, Tensor] = {}
        for name in self.layers:
            modules[name].register_forward_hook(self._capture(name))
        self.strides = self._measure_strides()

    @classmethod
    def imagenet(cls, layers: Sequence[str]) -> StyleFeatures:
        return cls(load_mobilenet_v2_imagenet(), layers)

    def _capture(self, name: str):
        def hook(_module, _inputs, output):
            self._captured[name] = output

        return hook

    def _measure_strides(self) -> dict[str, int]:
        probe = 64
        with torch.no_grad():
            out = self(torch.zeros(1, 3, probe, probe))
        return {name: probe // a.shape[-1] for name, a in out.items()}

    @property
    def min_side(self) -> int:
        """The smallest image side the deepest layer sees as at least one cell."""
        return max(self.strides.values())

    def train(self, mode: bool = True) -> StyleFeatures:
        return super().train(False)  # always frozen: BatchNorm keeps its ImageNet statistics

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        """``image``: 1 x 3 x H x W RGB in [0, 1]."""
        self._captured = {}
        self.trunk(normalise(image))
        out, self._captured = self._captured, {}
        return {name: out[name] for name in self.layers}


# --- inputs -------------------------------------------------------------------------------------------


def _to_tensor(pixels: np.ndarray) -> Tensor:
    return torch.from_numpy(np.array(pixels, dtype=np.float32)).permute(2, 0, 1)[None].div_(255.0).contiguous()


def _check_side(pixels: np.ndarray, name: str | Path, min_side: int, what: str) -> None:
    h, w = pixels.shape[:2]
    if min(h, w) < min_side:
        raise ImageTooSmallForStyle(
            name,
            f"{w}x{h} {what} is too small for style transfer: both sides must be "
            f">= {min_side} px, the stride of the deepest feature layer used",
        )


def _resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    if pixels.shape[1] == w and pixels.shape[0] == h:
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((w, h), Image.Resampling.LANCZOS))


def _cover(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale to cover ``size`` (w, h), then centre-crop to it: no distortion of the style's strokes."""
    w, h = size
    ih, iw = pixels.shape[:2]
    scale = max(w / iw, h / ih)
    sw, sh = max(w, round(iw * scale)), max(h, round(ih * scale))
    big = _resize(pixels, (sw, sh))
    top, left = (sh - h) // 2, (sw - w) // 2
    return big[top : top + h, left : left + w]


def prepare_content(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """C with its longer side ``image_size``, aspect ratio kept."""
    h, w = pixels.shape[:2]
    scale = image_size / max(h, w)
    return _resize(pixels, (max(1, round(w * scale)), max(1, round(h * scale))))


def centre_square(pixels: np.ndarray) -> np.ndarray:
    h, w = pixels.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return pixels[top : top + side, left : left + side]


def load_style_inputs(
    content: str | Path | np.ndarray,
    style: str | Path | np.ndarray,
    image_size: int,
    min_side: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    square: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """C (longer side ``image_size``) and S (scaled and centre-cropped to C's size), uint8 H x W x 3.

    Paths go through the one image loader; arrays are taken as decoded RGB. Either image with a side
    under ``min_side`` (before or after resizing) raises ImageTooSmallForStyle naming it. ``square``
    centre-crops C to a square first (the benchmark's image_size x image_size case).
    """

    def read(src, label):
        if isinstance(src, np.ndarray):
            return src, f"<{label} array>"
        return load_image(src, max_pixels), src

    c_pixels, c_name = read(content, "content")
    s_pixels, s_name = read(style, "style")
    _check_side(c_pixels, c_name, min_side, "content image")
    _check_side(s_pixels, s_name, min_side, "style image")
    c = prepare_content(centre_square(c_pixels) if square else c_pixels, image_size)
    _check_side(c, c_name, min_side, f"content image (resized to longer side {image_size})")
    s = _cover(s_pixels, (c.shape[1], c.shape[0]))
    return c, s


# --- the optimisation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StyleStep:
    """The three cost parts of G at one iteration (the last entry is the final output's)."""

    iteration: int
    content: float
    style: float
    total: float

    def as_dict(self) -> dict[str, float]:
        return {"iteration": self.iteration, "content": self.content, "style": self.style, "total": self.total}


@dataclass
class StyleResult:
    image: np.ndarray  # G, H x W x 3 uint8 RGB
    curve: list[StyleStep]  # one entry per iteration (costs before its update), then the final G's
    style_cost_content: float  # J_style(S, C): the content image's own style cost, the bar to beat
    seconds: float  # wall time of the optimisation loop

    @property
    def loss_start(self) -> float:
        return self.curve[0].total

    @property
    def loss_end(self) -> float:
        return self.curve[-1].total

    @property
    def loss_reduction(self) -> float:
        return 1.0 - self.loss_end / self.loss_start if self.loss_start > 0 else 0.0

    @property
    def style_cost_output(self) -> float:
        return self.curve[-1].style


def initial_image(content: Tensor, cfg: StyleConfig) -> Tensor:
    """G at the start: C plus uniform noise in [-noise, noise] (or noise around mid-grey), clipped to [0, 1]."""
    gen = torch.Generator().manual_seed(cfg.seed)
    noise = (torch.rand(content.shape, generator=gen) * 2 - 1) * cfg.noise
    base = content if cfg.init == "content_noise" else torch.full_like(content, 0.5)
    if cfg.init not in ("content_noise", "noise"):
        raise SettingsError(f"style.init: expected content_noise or noise, got {cfg.init!r}")
    return (base + noise).clamp_(0.0, 1.0)


def _optimizer(G: Tensor, cfg: StyleConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam([G], lr=cfg.lr)
    if cfg.optimizer == "lbfgs":
        # one L-BFGS step per iteration, so each iteration costs about one forward/backward and the
        # pixels are clamped between steps; curvature history carries over between calls
        return torch.optim.LBFGS([G], lr=cfg.lr, max_iter=1, history_size=20)
    raise SettingsError(f"style.optimizer: expected adam or lbfgs, got {cfg.optimizer!r}")


def stylize(
    content: np.ndarray,
    style: np.ndarray,
    cfg: StyleConfig,
    features: StyleFeatures | None = None,
    on_step: Callable[[StyleStep], None] | None = None,
) -> StyleResult:
    """Generate G from C (uint8 H x W x 3) and S (same size) by gradient descent on G's pixels.

    Pixels stay in [0, 1]: G is clamped after every step. ``on_step`` sees each iteration's costs
    (a progress bar, metrics) and cannot change the optimisation.
    """
    if content.shape != style.shape:
        raise ValueError(f"content {content.shape} and style {style.shape} must have the same size")
    features = features or StyleFeatures.imagenet(cfg.layers)
    weights = cfg.style_weights
    C, S = _to_tensor(content), _to_tensor(style)
    with torch.no_grad():
        a_C = features(C)[cfg.content_layer]
        a_S = features(S)
        grams_S = {name: gram_matrix(a_S[name]) for name in weights}
        style_of_content = float(style_cost(a_S, features(C), weights))

    def costs(G: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a_G = features(G)
        J_content = content_cost(a_C, a_G[cfg.content_layer])
        J_style = sum(
            (w * style_cost_from_gram(grams_S[name], a_G[name]) for name, w in weights.items()), start=torch.zeros(())
        )
        return J_content, J_style, total_cost(J_content, J_style, cfg.alpha, cfg.beta)

    G = initial_image(C, cfg).requires_grad_(True)
    opt = _optimizer(G, cfg)
    curve: list[StyleStep] = []
    start = time.perf_counter()
    for i in range(cfg.iterations):
        seen: list[tuple[Tensor, Tensor, Tensor]] = []

        def closure() -> Tensor:
            opt.zero_grad(set_to_none=True)
            parts = costs(G)
            parts[2].backward()
            seen.append((parts[0].detach(), parts[1].detach(), parts[2].detach()))  # noqa: B023 - opt.step runs it now
            return parts[2]

        opt.step(closure)  # type: ignore[arg-type]  # torch types closures -> float; a loss tensor is what they return
        with torch.no_grad():
            G.clamp_(0.0, 1.0)
        jc, js, jt = seen[0]  # the costs of G as this iteration found it
        step = StyleStep(i, float(jc), float(js), float(jt))
        curve.append(step)
        if on_step:
            on_step(step)
    with torch.no_grad():
        jc, js, jt = costs(G)
    curve.append(StyleStep(cfg.iterations, float(jc), float(js), float(jt)))
    seconds = time.perf_counter() - start
    image = (G.detach()[0].permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
    return StyleResult(image=image, curve=curve, style_cost_content=style_of_content, seconds=seconds)


def side_by_side(images: Sequence[np.ndarray], height: int = 256, gap: int = 6) -> np.ndarray:
    """Images resized to one height and laid out left to right on white (the README figure)."""
    scaled = [_resize(im, (max(1, round(im.shape[1] * height / im.shape[0])), height)) for im in images]
    width = sum(im.shape[1] for im in scaled) + gap * (len(scaled) - 1)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    x = 0
    for im in scaled:
        canvas[:, x : x + im.shape[1]] = im
        x += im.shape[1] + gap
    return canvas


def save_image(pixels: np.ndarray, path: str | Path, quality: int = 90) -> Path:
    """Write G (or a figure) as JPEG or PNG; any other suffix is refused by name before any work is lost."""
    path = Path(path)
    check_output_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        Image.fromarray(pixels).save(path)
    else:
        Image.fromarray(pixels).save(path, quality=quality)
    return path


def check_output_path(path: str | Path) -> None:
    if Path(path).suffix.lower() not in (".jpg", ".jpeg", ".png"):
        raise ImageError(path, "the output must be a .jpg, .jpeg or .png file")


def plot_cost_curve(curve: Sequence[StyleStep], alpha: float, beta: float, out: str | Path) -> Path:
    """alpha J_content, beta J_style and J per iteration, log scale: the two weighted parts sum to J."""
    import matplotlib  # heavy: plotting only where a figure is written

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: plotting only where a figure is written

    steps = [s.iteration for s in curve]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, [s.total for s in curve], label="J (total)", color="black")
    ax.plot(steps, [alpha * s.content for s in curve], label=f"alpha J_content (alpha={alpha:g})")
    ax.plot(steps, [beta * s.style for s in curve], label=f"beta J_style (beta={beta:g})")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cost")
    ax.set_title("style transfer: cost of G")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def run_benchmark(
    content: str | Path,
    style: str | Path,
    cfg: StyleConfig,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_step: Callable[[StyleStep], None] | None = None,
) -> tuple[dict, StyleResult, np.ndarray, np.ndarray]:
    """The issue's case: a square C of ``image_size`` from ``content``, S from ``style``.

    ``seconds`` is the wall time of everything the stylisation itself needs (loading the network and
    both images, the optimisation, the final costs), not the start of Prefect or MLflow around it.
    """
    start = time.perf_counter()
    features = StyleFeatures.imagenet(cfg.layers)
    c, s = load_style_inputs(content, style, cfg.image_size, features.min_side, max_pixels, square=True)
    result = stylize(c, s, cfg, features=features, on_step=on_step)
    seconds = time.perf_counter() - start
    out = {
        "loss_start": result.loss_start,
        "loss_end": result.loss_end,
        "loss_reduction": result.loss_reduction,
        "style_cost_output": result.style_cost_output,
        "style_cost_content": result.style_cost_content,
        "style_cost_ratio": result.style_cost_content / result.style_cost_output
        if result.style_cost_output > 0
        else float("inf"),
        "content_cost_output": result.curve[-1].content,
        "seconds": seconds,
        "optimise_seconds": result.seconds,
        "iterations": cfg.iterations,
        "image_hw": list(c.shape[:2]),
    }
    return out, result, c, s
