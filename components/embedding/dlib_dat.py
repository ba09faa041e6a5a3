"""Reader for dlib's binary serialisation of a DNN (the ``.dat`` of ``dlib_face_recognition_resnet_model_v1``).

Written from dlib's own format definitions (dlib/serialize.h, dlib/float_details.h, dlib/dnn/core.h,
layers.h, input.h, loss.h, tensor.h) so the face descriptor can run in torch without dlib.

The stream is ``serialize(net)`` of the nested template type, which means:

* ``add_loss_layer``: int version 1, the loss details, then its subnetwork.
* every ``add_layer`` writes its int version (2), then its whole subnetwork, then its own details
  (a string tag such as ``"con_4"`` followed by the layer's fields), three bools and its cached
  tensors. So all version ints come first (outermost to innermost) and the layer details follow in
  input-to-output order.
* ``add_tag_layer`` and ``add_skip_layer`` write only an int version (1): their tag ids are compile-time
  template arguments and are NOT in the file. They surface here as :class:`TagOrSkip` records; the
  graph (which tag an ``add_prev`` or ``skip`` refers to) has to come from the known network type.
* the innermost ``add_layer`` (whose subnetwork is the input layer) has version 2 or 3 and writes the
  input layer (e.g. ``"input_rgb_image_sized"`` with the per-channel mean) before its own details.

Encodings (serialize.h): integers are a control byte (bit 7 = negative, low 4 bits = byte count)
followed by the magnitude in little-endian; a float is a ``float_details`` pair, the int64 mantissa
first and then the int16 exponent (value = mantissa * 2**exponent; exponents 32000/32001/32002 mean
+inf/-inf/NaN); bools are the ASCII bytes ``'1'``/``'0'``; strings are an unsigned length and raw bytes.
Tensors (version 2) are four longs (n, k, nr, nc) and raw little-endian float32 data; version-1
tensors store every element as a ``float_details`` pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegate.components.core.errors import DlibFormatError
from facegate.components.embedding.dlib_stream import DlibStream

__all__ = [
    "AddPrev",
    "Affine",
    "Con",
    "DlibFormatError",
    "DlibNet",
    "DlibStream",
    "Fc",
    "InputRGB",
    "LayerRecord",
    "LossMetric",
    "Pool",
    "Relu",
    "TagOrSkip",
    "parse_dlib_dat",
    "parse_dlib_net",
]

# dlib::fc_bias_mode
_FC_HAS_BIAS, _FC_NO_BIAS = 0, 1
# dlib::layer_mode
_CONV_MODE, _FC_MODE = 0, 1


# --------------------------------------------------------------------------------------------------
# Layer records (input-to-output order). Offsets point at the record's first byte, for diagnostics.


@dataclass(frozen=True)
class InputRGB:
    """``input_rgb_image[_sized]``: pixels become ``(value - avg) / 256`` per channel (R, G, B order)."""

    avg_rgb: tuple[float, float, float]  # float32 values, as dlib holds them
    nr: int | None  # None for the unsized input_rgb_image
    nc: int | None
    offset: int


@dataclass(frozen=True)
class LossMetric:
    """``loss_metric_``: training-only; kept for completeness (margin, distance threshold)."""

    margin: float
    dist_thresh: float
    offset: int


@dataclass(frozen=True)
class Con:
    """``con_``: cross-correlation like torch's conv2d; ``filters`` is (out, in, kh, kw)."""

    filters: np.ndarray
    bias: np.ndarray | None
    stride: tuple[int, int]  # (y, x)
    padding: tuple[int, int]  # (y, x), zero padding
    fused_relu: bool  # con_6 can carry a relu
    offset: int


@dataclass(frozen=True)
class Affine:
    """``affine_`` (inference form of ``bn_``): ``y = gamma * x + beta``; gamma/beta shaped (k, nr, nc)."""

    gamma: np.ndarray
    beta: np.ndarray
    conv_mode: bool  # True: per channel, gamma is (k, 1, 1)
    disabled: bool  # affine_2 can be switched off (identity)
    offset: int


@dataclass(frozen=True)
class Relu:
    offset: int


@dataclass(frozen=True)
class Pool:
    """``max_pool_`` / ``avg_pool_``: window nr x nc (0 = the whole input), floor output size.

    dlib takes the max/mean over the window clipped to the image, i.e. padding is ignored
    (torch: max_pool2d's implicit -inf padding, avg_pool2d with count_include_pad=False).
    """

    kind: str  # "max" | "avg"
    nr: int
    nc: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    offset: int


@dataclass(frozen=True)
class AddPrev:
    """``add_prev_``: adds the output of a tagged layer (tag id not stored); mismatched shapes are zero-padded."""

    offset: int


@dataclass(frozen=True)
class TagOrSkip:
    """An ``add_tag_layer`` or ``add_skip_layer``: both serialise as a bare version int, indistinguishable."""

    offset: int


@dataclass(frozen=True)
class Fc:
    """``fc_``: ``y = x.flatten() @ weights (+ bias)``; ``weights`` is (num_inputs, num_outputs)."""

    weights: np.ndarray
    bias: np.ndarray | None
    offset: int


LayerRecord = Con | Affine | Relu | Pool | AddPrev | TagOrSkip | Fc


@dataclass(frozen=True)
class DlibNet:
    """A parsed network: input layer, computational records input-to-output, and the loss."""

    source: str
    input: InputRGB
    layers: list[LayerRecord]
    loss: LossMetric | None


# --------------------------------------------------------------------------------------------------
# Layer details (dlib/dnn/layers.h, input.h, loss.h)


def _slice_params(
    s: DlibStream, params: np.ndarray, dims: tuple[int, ...], at: int, what: str, start: int
) -> np.ndarray:
    """An alias_tensor view into the flat params at ``at`` (dlib keeps weights+biases in one tensor)."""
    n = math.prod(dims)
    flat = params.reshape(-1)
    if at + n > flat.size:
        s.fail(f"{what} {dims} at {at} does not fit in {flat.size} params", start)
    return flat[at : at + n].reshape(dims).copy()


def _read_con(s: DlibStream, tag: str, start: int) -> Con:
    if tag not in ("con_4", "con_5", "con_6"):
        s.fail(f"unsupported convolution version {tag!r} (this reader knows con_4..con_6)", start)
    params = s.read_tensor("con params")
    num_filters = s.read_int(what="num_filters")
    nr = s.read_int(what="con nr")
    nc = s.read_int(what="con nc")
    stride_y = s.read_int(what="stride_y", size=4)
    stride_x = s.read_int(what="stride_x", size=4)
    pad_y = s.read_int(what="padding_y", size=4)
    pad_x = s.read_int(what="padding_x", size=4)
    fdims = s.read_alias_tensor("con filters")
    bdims = s.read_alias_tensor("con biases")
    for name in (
        "learning_rate_multiplier",
        "weight_decay_multiplier",
        "bias_learning_rate_multiplier",
        "bias_weight_decay_multiplier",
    ):
        s.read_float(name)
    use_bias = s.read_bool("use_bias") if tag in ("con_5", "con_6") else True
    use_relu = s.read_bool("use_relu") if tag == "con_6" else False
    if fdims[0] != num_filters or fdims[2:] != (nr, nc):
        s.fail(f"filters alias {fdims} disagrees with num_filters={num_filters}, {nr}x{nc}", start)
    if min(stride_y, stride_x) < 1 or min(pad_y, pad_x) < 0:
        s.fail(f"bad stride ({stride_y},{stride_x}) or padding ({pad_y},{pad_x})", start)
    filters = _slice_params(s, params, fdims, 0, "filters", start)
    bias = None
    if use_bias and math.prod(bdims) > 0:
        if math.prod(bdims) != num_filters:
            s.fail(f"bias alias {bdims} is not {num_filters} values", start)
        bias = _slice_params(s, params, bdims, filters.size, "biases", start).reshape(-1)
    expected = filters.size + (0 if bias is None else bias.size)
    if params.size != expected:
        s.fail(f"con params hold {params.size} values, filters+bias need {expected}", start)
    return Con(
        filters=filters,
        bias=bias,
        stride=(stride_y, stride_x),
        padding=(pad_y, pad_x),
        fused_relu=use_relu,
        offset=start,
    )


def _read_affine(s: DlibStream, tag: str, start: int) -> Affine:
    if tag.startswith("bn_"):
        s.fail(f"found batch-norm {tag!r}: only inference nets (bn_ already turned into affine_) are supported", start)
    if tag not in ("affine_", "affine_2"):
        s.fail(f"unsupported affine version {tag!r}", start)
    params = s.read_tensor("affine params")
    gdims = s.read_alias_tensor("affine gamma")
    bdims = s.read_alias_tensor("affine beta")
    mode = s.read_int(what="affine mode", size=4)
    disabled = s.read_bool("affine disabled") if tag == "affine_2" else False
    if mode not in (_CONV_MODE, _FC_MODE):
        s.fail(f"unknown affine mode {mode}", start)
    if gdims != bdims:
        s.fail(f"gamma {gdims} and beta {bdims} differ in shape", start)
    gamma = _slice_params(s, params, gdims, 0, "gamma", start)
    beta = _slice_params(s, params, bdims, gamma.size, "beta", start)
    if params.size != gamma.size + beta.size:
        s.fail(f"affine params hold {params.size} values, gamma+beta need {2 * gamma.size}", start)
    return Affine(gamma=gamma[0], beta=beta[0], conv_mode=mode == _CONV_MODE, disabled=disabled, offset=start)


def _read_pool(s: DlibStream, tag: str, start: int) -> Pool:
    kind = "max" if tag.startswith("max_pool_") else "avg"
    if tag not in ("max_pool_2", "avg_pool_2"):
        s.fail(f"unsupported pooling version {tag!r} (this reader knows *_pool_2)", start)
    nr = s.read_int(what="pool nr")
    nc = s.read_int(what="pool nc")
    stride_y = s.read_int(what="pool stride_y", size=4)
    stride_x = s.read_int(what="pool stride_x", size=4)
    pad_y = s.read_int(what="pool padding_y", size=4)
    pad_x = s.read_int(what="pool padding_x", size=4)
    if min(nr, nc, pad_y, pad_x) < 0 or min(stride_y, stride_x) < 1:
        s.fail(f"bad pooling geometry {nr}x{nc} stride ({stride_y},{stride_x}) padding ({pad_y},{pad_x})", start)
    return Pool(kind=kind, nr=nr, nc=nc, stride=(stride_y, stride_x), padding=(pad_y, pad_x), offset=start)


def _read_fc(s: DlibStream, tag: str, start: int) -> Fc:
    if tag not in ("fc_2", "fc_3"):
        s.fail(f"unsupported fc version {tag!r} (this reader knows fc_2, fc_3)", start)
    num_outputs = s.read_int(signed=False, what="num_outputs")
    num_inputs = s.read_int(signed=False, what="num_inputs")
    params = s.read_tensor("fc params")
    wdims = s.read_alias_tensor("fc weights")
    bdims = s.read_alias_tensor("fc biases")
    bias_mode = s.read_int(what="fc bias_mode", size=4)
    for name in (
        "learning_rate_multiplier",
        "weight_decay_multiplier",
        "bias_learning_rate_multiplier",
        "bias_weight_decay_multiplier",
    ):
        s.read_float(name)
    use_bias = s.read_bool("use_bias") if tag == "fc_3" else True
    if bias_mode not in (_FC_HAS_BIAS, _FC_NO_BIAS):
        s.fail(f"unknown fc bias_mode {bias_mode}", start)
    if wdims[:2] != (num_inputs, num_outputs):
        s.fail(f"fc weights alias {wdims} is not ({num_inputs}, {num_outputs})", start)
    weights = _slice_params(s, params, wdims, 0, "fc weights", start).reshape(num_inputs, num_outputs)
    bias = None
    if bias_mode == _FC_HAS_BIAS and use_bias:
        bias = _slice_params(s, params, bdims, weights.size, "fc biases", start).reshape(-1)
    expected = weights.size + (0 if bias is None else bias.size)
    if params.size != expected:
        s.fail(f"fc params hold {params.size} values, weights+bias need {expected}", start)
    return Fc(weights=weights, bias=bias, offset=start)


def _read_details(s: DlibStream) -> LayerRecord:
    start = s.pos
    tag = s.read_string("layer type")
    if tag.startswith("con_"):
        return _read_con(s, tag, start)
    if tag.startswith(("affine_", "bn_")):
        return _read_affine(s, tag, start)
    if tag == "relu_":
        return Relu(offset=start)
    if tag.startswith(("max_pool_", "avg_pool_")):
        return _read_pool(s, tag, start)
    if tag == "add_prev_":
        return AddPrev(offset=start)
    if tag.startswith("fc_"):
        return _read_fc(s, tag, start)
    s.fail(f"unsupported layer type {tag!r}", start)


def _read_input(s: DlibStream) -> InputRGB:
    start = s.pos
    tag = s.read_string("input layer type")
    if tag not in ("input_rgb_image", "input_rgb_image_sized"):
        s.fail(f"unsupported input layer {tag!r}", start)
    avg = (s.read_float32("avg_red"), s.read_float32("avg_green"), s.read_float32("avg_blue"))
    nr = nc = None
    if tag == "input_rgb_image_sized":
        nr = s.read_int(signed=False, what="input nr")
        nc = s.read_int(signed=False, what="input nc")
    return InputRGB(avg_rgb=avg, nr=nr, nc=nc, offset=start)


def _read_loss(s: DlibStream) -> LossMetric:
    start = s.pos
    tag = s.read_string("loss type")
    if tag == "loss_metric_":  # these were hard coded before loss_metric_2 (dlib/dnn/loss.h)
        return LossMetric(margin=0.1, dist_thresh=0.75, offset=start)
    if tag == "loss_metric_2":
        return LossMetric(margin=s.read_float32("margin"), dist_thresh=s.read_float32("dist_thresh"), offset=start)
    s.fail(f"unsupported loss layer {tag!r} (expected loss_metric_)", start)


def _read_layer_state(s: DlibStream, n_tensors: int) -> None:
    """The training state after each layer's details: 3 bools and cached tensors (normally empty)."""
    for name in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
        s.read_bool(name)
    for i in range(n_tensors):
        s.read_tensor(f"layer state tensor {i}")


def parse_dlib_net(data: bytes, source: str = "<bytes>") -> DlibNet:
    """Parse a serialised ``add_loss_layer<loss_metric_, ...>`` network (see module docstring)."""
    s = DlibStream(data, source)
    loss_version = s.read_int(what="add_loss_layer version", size=4)
    if loss_version != 1:
        s.fail(f"expected add_loss_layer version 1, got {loss_version} (not a dlib DNN file?)", 0)
    loss = _read_loss(s)

    # Version ints of the nested layers, outermost first, until the add_layer over the input layer.
    prefixes: list[tuple[int, int]] = []  # (version, offset)
    while True:
        at = s.pos
        version = s.read_int(what="layer version", size=4)
        peek = s.peek_string()
        if peek is not None and peek.startswith("input"):
            if version not in (2, 3):
                s.fail(f"unsupported version {version} of the add_layer over the input layer", at)
            input_version = version
            break
        if version == 1:
            prefixes.append((1, at))  # add_tag_layer / add_skip_layer
        elif version == 2:
            prefixes.append((2, at))  # add_layer
        else:
            s.fail(f"unexpected layer version {version} (add_layer is 2, tag/skip layers are 1)", at)
        if len(prefixes) > 100_000:
            s.fail("no input layer found", at)

    inp = _read_input(s)
    layers: list[LayerRecord] = [_read_details(s)]
    _read_layer_state(s, 3)  # x_grad, cached_output, grad_final
    if input_version == 3:
        s.read_int(signed=False, size=4, what="sample_expansion_factor")

    for version, at in reversed(prefixes):
        if version == 1:
            layers.append(TagOrSkip(offset=at))
            continue
        layers.append(_read_details(s))
        _read_layer_state(s, 3)  # x_grad, cached_output, params_grad

    if not s.at_end():
        s.fail(f"{len(s.data) - s.pos} unexpected trailing bytes after the network")
    return DlibNet(source=source, input=inp, layers=layers, loss=loss)


def parse_dlib_dat(path: str | Path) -> DlibNet:
    """Read and parse a dlib DNN ``.dat`` file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DlibFormatError(str(p), 0, f"cannot read file: {exc}") from exc
    return parse_dlib_net(data, str(p))
