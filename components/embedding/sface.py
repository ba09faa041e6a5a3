"""SFace (OpenCV Zoo ``face_recognition_sface_2021dec.onnx``, Apache-2.0) as a plain torch module.

Why: the same 128-d embedding as OpenCV's ``FaceRecognizerSF`` but batched, threaded by torch and
trainable (``head`` / ``finetune``), with weights read straight from the ONNX file's initialisers. The
graph is not converted automatically: the network is written out below and every initialiser is
mapped to its parameter by name with its shape asserted; :func:`check_graph` also walks the ONNX
nodes and checks each op, stride, group and padding against the module, so a different file fails
loudly instead of loading into the wrong layers.

Network (the ONNX graph, an MXNet export; a MobileNet-v1-style "MobileFaceNet" without residuals):
input RGB 0..255, ``(x - 127.5) * 0.0078125`` (the graph's own ``Sub``/``Mul`` with initialisers
``scalar_op1``/``scalar_op2``); ``conv_1`` 3x3 conv 3->32 + BN + PReLU; ``conv_2`` .. ``conv_14``
depthwise 3x3 (+BN+PReLU) then pointwise 1x1 (+BN+PReLU), stride 2 in conv_3/5/7/13 (112 -> 7);
``bn1`` (BN on the 1024 x 7 x 7 map), dropout (identity at inference), flatten (50,176), ``pre_fc1``
linear to 128 and ``fc1`` BN1d, folded here into one ``nn.Linear``. Convolutions have no bias; BN eps is
1e-3 in the body and 2e-5 in ``bn1``/``fc1``. The output is NOT normalised (OpenCV's ``feature()`` is raw;
its ``match()`` normalises).

Inference (eval mode, no autograd) runs :class:`SFaceInference`, a cached copy with every BN folded
(facegate.components.embedding.folding) and the 1x1 convolutions as matrix products on channels-last maps:
the same function within float rounding (a test holds it to 1e-5 on unit embeddings of real chips),
several times faster on 2 cores. Training and ``state_dict`` see only the module with its BNs.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facegate.components.embedding.folding import (
    fold_bn_linear,
    fold_conv_bn,
    inference_copy,
    running_stats,
    use_inference_copy,
)

INPUT_SIZE = 112
EMBEDDING_DIM = 128
BODY_EPS = 1e-3
OUTPUT_EPS = 2e-5
# conv_2 .. conv_14: (in channels, out channels, depthwise stride)
SEPARABLE_BLOCKS = (
    (32, 64, 1),
    (64, 128, 2),
    (128, 128, 1),
    (128, 256, 2),
    (256, 256, 1),
    (256, 512, 2),
    (512, 512, 1),
    (512, 512, 1),
    (512, 512, 1),
    (512, 512, 1),
    (512, 512, 1),
    (512, 1024, 2),
    (1024, 1024, 1),
)


class SFaceFormatError(ValueError):
    """The ONNX file is not the SFace graph this module reproduces."""


class ConvBnPrelu(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BODY_EPS)
        self.prelu = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn(self.conv(x)))


class SeparableBlock(nn.Module):
    """Depthwise 3x3 then pointwise 1x1, each with BN and PReLU (``conv_i_dw_*`` then ``conv_i_*``)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.dw = ConvBnPrelu(cin, cin, 3, stride, groups=cin)
        self.pw = ConvBnPrelu(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class SFaceNet(nn.Module):
    """The SFace network on (x - input_mean) * input_scale inputs; see :meth:`embed` for 0..255 RGB."""

    input_mean: torch.Tensor  # buffers (register_buffer in __init__)
    input_scale: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([ConvBnPrelu(3, 32, 3)] + [SeparableBlock(*b) for b in SEPARABLE_BLOCKS])
        self.bn1 = nn.BatchNorm2d(1024, eps=OUTPUT_EPS)
        self.fc = nn.Linear(1024 * 7 * 7, EMBEDDING_DIM)  # pre_fc1 with fc1's BN folded in
        self.register_buffer("input_mean", torch.tensor(127.5))
        self.register_buffer("input_scale", torch.tensor(1.0 / 128.0))

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input -> the flattened ``bn1`` map (50,176 values per face)."""
        for block in self.blocks:
            x = block(x)
        return self.bn1(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_inference_copy(self):
            return inference_copy(self, SFaceInference.from_net, variant=torch.float32)(x)
        return self.reference_forward(x)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The graph as written (BN layers separate): what training differentiates."""
        return self.fc(self.body(x))

    def reference_positional(self, x: torch.Tensor) -> torch.Tensor:
        """N x 49 x 128 per-position shares of :meth:`reference_forward` (without ``fc.bias``)."""
        m = self.body(x).view(len(x), self.bn1.num_features, -1)  # N x 1024 x 49
        weight = self.fc.weight.view(self.fc.out_features, self.bn1.num_features, -1)  # 128 x 1024 x 49
        return torch.einsum("ncp,kcp->npk", m, weight)

    def embed(self, rgb: torch.Tensor) -> torch.Tensor:
        """N x 3 x 112 x 112 float RGB in 0..255 -> raw 128-d embeddings (as ``FaceRecognizerSF.feature``)."""
        return self((rgb - self.input_mean) * self.input_scale)


class PointwiseLinear(nn.Module):
    """A 1x1 convolution (bias folded in) as one matrix product over the pixels of a channels-last map:
    MKL's GEMM, where PyTorch's single-thread path for small batches first copies the input."""

    weight: torch.Tensor  # buffers (register_buffer in __init__)
    bias: torch.Tensor

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.bias is None:
            raise ValueError("PointwiseLinear takes a convolution with its bias (a folded one)")
        self.register_buffer("weight", conv.weight.detach().flatten(1).clone())  # out x in
        self.register_buffer("bias", conv.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.permute(0, 2, 3, 1), self.weight, self.bias).permute(0, 3, 1, 2)


class SFaceInference(nn.Module):
    """SFaceNet for inference: conv+BN folded, 1x1 convs as GEMMs, ``bn1`` folded into the linear layer
    (its weights reordered to read the channels-last map without a copy)."""

    position_weight: torch.Tensor  # buffers (register_buffer in __init__)
    fc_bias: torch.Tensor
    position_offsets: torch.Tensor

    def __init__(
        self, layers: list[nn.Module], fc: nn.Linear, channels: int, side: int, position_offsets: torch.Tensor
    ) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)
        # positions x channels x 128, contiguous: a channels-last map, viewed per position, multiplies it
        # as it is (a permuted view here made every call copy all 6.4 million weights first)
        w = fc.weight.detach().view(fc.out_features, channels, side * side).permute(2, 1, 0)
        self.register_buffer("position_weight", w.contiguous())
        self.register_buffer("fc_bias", fc.bias.detach().clone())
        self.register_buffer("position_offsets", position_offsets.detach().clone())  # bn1's shift, per position

    @classmethod
    def from_net(
        cls, net: SFaceNet, dtype: torch.dtype = torch.float32, pointwise_gemm: bool | None = None
    ) -> SFaceInference:
        """Folded in float64, then cast to ``dtype``. In bfloat16 the 1x1 convolutions stay convolutions:
        oneDNN runs them on the matrix units (AMX), faster there than as GEMMs. ``pointwise_gemm`` (default:
        float32 only) turns them into :class:`PointwiseLinear` GEMMs."""
        gemm = dtype == torch.float32 if pointwise_gemm is None else pointwise_gemm
        layers: list[nn.Module] = []
        for _, layer in _layer_names(net):
            conv = fold_conv_bn(layer.conv, layer.bn)
            pointwise = conv.kernel_size == (1, 1) and conv.groups == 1 and conv.stride == (1, 1)
            prelu = nn.PReLU(layer.prelu.num_parameters).to(conv.weight.device)
            prelu.weight.data.copy_(layer.prelu.weight.detach())
            layers += [PointwiseLinear(conv) if pointwise and gemm else conv, prelu]
        fc = fold_bn_linear(net.bn1, net.fc)
        bn = net.bn1
        running_mean, running_var = running_stats(bn)
        shift = bn.bias.double() - running_mean.double() * bn.weight.double() / torch.sqrt(
            running_var.double() + bn.eps
        )
        per_position = net.fc.weight.detach().double().view(net.fc.out_features, bn.num_features, -1)
        offsets = torch.einsum("kcp,c->pk", per_position, shift).float()  # what bn1's shift adds at each position
        out = cls(layers, fc, bn.num_features, INPUT_SIZE // 16, offsets)
        # Module.to's stubs lack memory_format (its runtime signature takes it)
        return out.to(dtype=dtype, memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(x.contiguous(memory_format=torch.channels_last))
        flat = x.permute(0, 2, 3, 1).reshape(len(x), -1)  # channels-last: a view
        return torch.addmm(self.fc_bias, flat, self.position_weight.view(-1, self.position_weight.shape[-1]))

    def positional(self, x: torch.Tensor) -> torch.Tensor:
        """N x 49 x 128: each 7x7 map position's share of the embedding, as
        :meth:`SFaceNet.reference_positional` (their sum plus SFace's own fc bias is :meth:`forward`).
        One matrix product per position: the work of the fc layer."""
        x = self.layers(x.contiguous(memory_format=torch.channels_last))
        n, c, h, w = x.shape
        by_position = x.permute(2, 3, 0, 1).reshape(h * w, n, c)  # channels-last: one copy of the map
        shares = torch.bmm(by_position, self.position_weight).float() + self.position_offsets.float()[:, None, :]
        return shares.transpose(0, 1)  # float32: the head sums 49 of them


class SFaceExport(nn.Module):
    """``SFaceBackbone.features`` in eval mode as one float32 module, for an exporter (the OpenVINO backend):
    0..255 RGB in, SFace's input normalisation, the folded layers with the 1x1 convolutions kept as
    convolutions (a compiler fuses those), each 7x7 position's share of the embedding out (flattened).
    Nothing reads the batch size in Python, so a traced graph keeps it dynamic."""

    input_mean: torch.Tensor  # buffers (register_buffer in __init__)
    input_scale: torch.Tensor

    def __init__(self, net: SFaceNet) -> None:
        super().__init__()
        self.inference = SFaceInference.from_net(net, torch.float32, pointwise_gemm=False)
        self.register_buffer("input_mean", net.input_mean.detach().clone().float())
        self.register_buffer("input_scale", net.input_scale.detach().clone().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.inference.layers((x - self.input_mean) * self.input_scale)
        by_position = m.flatten(2).permute(2, 0, 1)  # positions x N x channels
        shares = torch.bmm(by_position, self.inference.position_weight) + self.inference.position_offsets[:, None, :]
        return shares.transpose(0, 1).flatten(1)


def _layer_names(net: SFaceNet) -> list[tuple[str, ConvBnPrelu]]:
    """(ONNX prefix, module) for every conv+BN+PReLU layer, in graph order."""
    # torch's ModuleList is not generic: SFaceNet.blocks holds a ConvBnPrelu, then SeparableBlocks
    out: list[tuple[str, ConvBnPrelu]] = [("conv_1", cast(ConvBnPrelu, net.blocks[0]))]
    for i, block in enumerate(cast("list[SeparableBlock]", list(net.blocks[1:])), start=2):
        out += [(f"conv_{i}_dw", block.dw), (f"conv_{i}", block.pw)]
    return out


def read_initialisers(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper  # heavy: only converting the shipped ONNX weights needs it

    return {t.name: numpy_helper.to_array(t) for t in graph.initializer}


def check_graph(graph, path: Path) -> None:
    """The ONNX graph is exactly the layer sequence above (ops, strides, groups, pads, eps)."""
    import onnx  # heavy: only converting the shipped ONNX weights needs it

    net = SFaceNet()
    expected: list[tuple] = [("Sub",), ("Mul",)]
    for prefix, layer in _layer_names(net):
        c = layer.conv
        expected += [
            ("Conv", f"{prefix}_conv2d_weight", c.stride[0], c.groups, c.padding[0]),
            ("BatchNormalization", f"{prefix}_batchnorm_gamma", BODY_EPS),
            ("PRelu", f"{prefix}_relu_gamma"),
        ]
    expected += [
        ("BatchNormalization", "bn1_gamma", OUTPUT_EPS),
        ("Dropout",),
        ("Flatten",),
        ("Gemm", "pre_fc1_weight"),
        ("BatchNormalization", "fc1_gamma", OUTPUT_EPS),
    ]
    nodes = list(graph.node)
    if len(nodes) != len(expected):
        raise SFaceFormatError(f"{path}: {len(nodes)} nodes, expected {len(expected)}")
    for node, want in zip(nodes, expected):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        got: tuple = (node.op_type,)
        if node.op_type == "Conv":
            got += (node.input[1], attrs["strides"][0], attrs.get("group", 1), attrs["pads"][0])
        elif node.op_type == "BatchNormalization":
            got += (node.input[1], round(float(attrs["epsilon"]), 8))
            want = want[:2] + (round(float(want[2]), 8),)
        elif node.op_type in ("PRelu", "Gemm"):
            got += (node.input[1],)
            if node.op_type == "Gemm" and (attrs.get("transB") != 1 or attrs.get("alpha", 1.0) != 1.0):
                raise SFaceFormatError(f"{path}: unexpected Gemm attributes {attrs}")
        if got != want:
            raise SFaceFormatError(f"{path}: node {node.name or node.op_type}: {got} where {want} was expected")


def load_sface(path: Path | str) -> SFaceNet:
    """SFaceNet with every parameter and buffer taken from the ONNX initialisers (by name, shapes asserted)."""
    import onnx  # heavy: only converting the shipped ONNX weights needs it

    path = Path(path)
    graph = onnx.load(str(path)).graph
    check_graph(graph, path)
    init = read_initialisers(graph)
    net = SFaceNet()
    used: set[str] = set()

    def take(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if name not in init:
            raise SFaceFormatError(f"{path}: initialiser {name!r} missing")
        value = np.asarray(init[name], np.float32)
        if value.shape != shape:
            raise SFaceFormatError(f"{path}: {name} has shape {value.shape}, expected {shape}")
        used.add(name)
        return torch.from_numpy(value.copy())

    def load_bn(bn: nn.BatchNorm2d, prefix: str) -> None:
        n = bn.num_features
        running_mean, running_var = running_stats(bn)
        bn.weight.copy_(take(f"{prefix}_gamma", (n,)))
        bn.bias.copy_(take(f"{prefix}_beta", (n,)))
        running_mean.copy_(take(f"{prefix}_moving_mean", (n,)))
        running_var.copy_(take(f"{prefix}_moving_var", (n,)))

    with torch.no_grad():
        net.input_mean.fill_(float(take("scalar_op1", (1,))[0]))
        net.input_scale.fill_(float(take("scalar_op2", (1,))[0]))
        for prefix, layer in _layer_names(net):
            layer.conv.weight.copy_(take(f"{prefix}_conv2d_weight", tuple(layer.conv.weight.shape)))
            load_bn(layer.bn, f"{prefix}_batchnorm")
            n = layer.prelu.num_parameters
            layer.prelu.weight.copy_(take(f"{prefix}_relu_gamma", (n, 1, 1)).reshape(n))
        load_bn(net.bn1, "bn1")
        # fc1 = BN1d(pre_fc1(x)): fold to W' = s W, b' = s (b - mean) + beta, s = gamma / sqrt(var + eps)
        weight = take("pre_fc1_weight", (EMBEDDING_DIM, 1024 * 7 * 7)).double()
        bias = take("pre_fc1_bias", (EMBEDDING_DIM,)).double()
        gamma, beta = take("fc1_gamma", (EMBEDDING_DIM,)).double(), take("fc1_beta", (EMBEDDING_DIM,)).double()
        mean = take("fc1_moving_mean", (EMBEDDING_DIM,)).double()
        var = take("fc1_moving_var", (EMBEDDING_DIM,)).double()
        s = gamma / torch.sqrt(var + OUTPUT_EPS)
        net.fc.weight.copy_((weight * s[:, None]).float())
        net.fc.bias.copy_((s * (bias - mean) + beta).float())
    unused = sorted(set(init) - used)
    if unused:
        raise SFaceFormatError(f"{path}: initialisers not mapped to the module: {unused}")
    return net.eval()


def bias_as_feature_offset(fc: nn.Linear) -> torch.Tensor:
    """The minimum-norm c with ``fc.weight @ c == fc.bias``: so ``W (f + c) == W f + b`` exactly.

    The shared embedding head (facegate.components.embedding.model) is a linear map without bias; adding c to
    the features carries SFace's bias into it with nothing lost (W is 128 x 50,176, full row rank).
    """
    w, b = fc.weight.detach().double(), fc.bias.detach().double()
    return (w.T @ torch.linalg.solve(w @ w.T, b)).float()
