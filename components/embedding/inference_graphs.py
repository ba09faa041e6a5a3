"""The serving paths as whole OpenVINO graphs: chips in, unit embeddings out, no torch op around them.

Why: each served face used to run the backbones' compiled ``features`` with torch around them: a walk of
the model's modules (eval check), tensor conversions, the mirror image, the heads' small ops and the
fusion, each waking torch's threads between OpenVINO's. On one LFW face at load 0.8 the cheap pass took
7.5 ms where SFace's network alone takes 2.4 ms (bf16, 2 threads). Two graphs take their place:

- the cheap pass (:func:`member_graph`): one member's export module, its head and the L2 normalisation,
  from the member's chip (of a paired chip, its part: ``member_chips``);
- the full embedding (:func:`full_graph`): the chip and its mirror image, every member on its own part,
  the heads, the fusion and flip TTA's mean, from the uint8 chip as it comes from the aligner.

Each is built only where the backbones' OpenVINO copies are asked for and apply (``embedding.backend:
openvino``, eval mode, no autograd, CPU); otherwise, or when a build fails (one warning), the builders
answer None and torch's path runs (the reference). IRs are cached beside the backbones' (``ir_dir``),
keyed by the weights they hold; tests/unit/embedding/test_inference_graphs.py holds both to torch's path
on real LFW chips.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facegate.components.core.devices import module_device
from facegate.components.core.telemetry import import_openvino
from facegate.components.embedding.folding import _state_key, inference_copy, use_inference_copy, weights_fingerprint
from facegate.components.embedding.fusion import member_input
from facegate.components.embedding.openvino_runtime import (
    _core,
    cached_ir,
    compile_config,
    convert,
    export_of,
    ir_dir,
    leaf_backbones,
    precision_hint,
)
from facegate.components.faces.align import ARCFACE_SIZE, PAIRED_GEOMETRY, split_paired

if TYPE_CHECKING:  # model.py imports this module: its class for the annotations only
    from facegate.components.embedding.model import EmbeddingModel

GRAPH_REVISION = 2  # bumped when what the graph computes changes: older IRs are then not read
logger = logging.getLogger(__name__)
_failed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> why its graph was not built (tried once)


class _MemberEmbeddingExport(nn.Module):
    """What the graph computes: the member's features of its preprocessed chip, its head, L2-normalised."""

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features, self.head = features, head

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.head(self.features(x).float()), dim=1)


class CompiledEmbedding(nn.Module):
    """A compiled graph (either kind): chips in, unit embeddings out. One infer request
    per concurrent caller, kept for reuse (a request is not thread-safe)."""

    def __init__(self, compiled: Any, hint: str, threads: int) -> None:
        super().__init__()
        self.compiled, self.hint, self.threads = compiled, hint, threads
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def embed(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            request = self._idle.pop() if self._idle else self.compiled.create_infer_request()
        try:
            out = request.infer({0: x}, share_inputs=True)[0]
        finally:
            with self._lock:
                self._idle.append(request)
        return np.array(out, np.float32)


def graph_path(member: Any, head: nn.Module) -> Path:
    key = hashlib.sha256(f"{weights_fingerprint(member)}:{weights_fingerprint(head)}".encode()).hexdigest()[:16]
    return ir_dir() / f"{key}-{member.name}-embedding-r{GRAPH_REVISION}.xml"


def compiled_graph(model: Any, hint: str, threads: int, sample: tuple[int, ...], dtype: type) -> CompiledEmbedding:
    """``model`` compiled for the CPU, then run on batches of 1 and 3 of ``sample``'s shape: a batch size
    baked into the traced graph fails here (and the torch path runs), not at the door."""
    graph = CompiledEmbedding(_core().compile_model(model, "CPU", compile_config(hint, threads)), hint, threads)
    for n in (1, 3):
        graph.embed(np.zeros((n, *sample), dtype))
    return graph


def _build(member: Any, head: nn.Module, hint: str, threads: int) -> CompiledEmbedding:
    size = member.input_size
    ir = cached_ir(graph_path(member, head), lambda: convert(_MemberEmbeddingExport(export_of(member), head), size))
    return compiled_graph(ir, hint, threads, (3, size, size), np.float32)


def member_graph(member: Any, head: nn.Module, chip_size: int) -> CompiledEmbedding | None:
    """The compiled cheap pass of ``member`` with ``head`` for chips of ``chip_size`` pixels; None where
    the torch path must run (another backend, training, autograd, a chip to resize, a failed build)."""
    if (
        getattr(member, "backend", "torch") != "openvino"
        or module_device(member).type != "cpu"
        or chip_size != member.input_size
        or member.training
        or head.training
        or not use_inference_copy(head)
        or head in _failed
    ):
        return None
    hint = precision_hint(member.inference_dtype())
    threads = torch.get_num_threads()
    variant = ("graph", hint, threads, id(head), _state_key(head))  # the member's own weights: inference_copy's key

    def build() -> CompiledEmbedding:
        return inference_copy(member, lambda m: _build(m, head, hint, threads), variant)

    return _built_or_none(head, f"cheap-pass graph of {member.name}", build)


def _built_or_none(module: nn.Module, what: str, build: Callable[[], CompiledEmbedding]) -> CompiledEmbedding | None:
    """``build()``, or None with the reason logged once and remembered for ``module`` (torch's path runs)."""
    try:
        return build()
    except Exception as exc:  # noqa: BLE001 - any failure means the torch path, said once
        lines = str(exc).strip().splitlines()
        _failed[module] = f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"
        logger.warning("%s not built, torch runs it: %s", what, _failed[module])
        return None


def member_chip_size(chips: np.ndarray, geometry: str) -> int:
    """The side of the member's part of ``chips`` (paired chips hold an ArcFace chip of 112)."""
    return ARCFACE_SIZE if chips.shape[-1] == 6 and geometry == "arcface_112" else int(chips.shape[1])


def member_chips(chips: np.ndarray, geometry: str) -> np.ndarray:
    """The member's part of N x 150 x 150 x 6 paired chips (``split_paired``), or plain N x S x S x 3
    ones, as the graph's float32 N x 3 x S x S input."""
    if chips.shape[-1] == 6:
        dlib_part, arcface_part = split_paired(chips)
        chips = arcface_part if geometry == "arcface_112" else dlib_part
    return np.ascontiguousarray(chips.transpose(0, 3, 1, 2), dtype=np.float32)


def blank_chips(backbone: Any, n: int = 1) -> np.ndarray:
    """``n`` black uint8 chips in ``backbone``'s chip layout (paired: 6 channels), to build and warm graphs."""
    channels = 6 if backbone.chip_geometry == PAIRED_GEOMETRY else 3
    return np.zeros((n, backbone.input_size, backbone.input_size, channels), np.uint8)


class _FullEmbeddingExport(nn.Module):
    """``embed_chips`` in eval mode: uint8 N x S x S x C chips, (with their mirror images, flip TTA's
    mean) through every member's export module on its own part, the head (fusion included), unit length."""

    def __init__(self, model: EmbeddingModel, exports: list[nn.Module], flip: bool) -> None:
        super().__init__()
        self.model, self.exports, self.flip = model, nn.ModuleList(exports), flip

    def embed(self, chips: Tensor) -> Tensor:
        backbone = self.model.backbone
        x = backbone.preprocess(chips)
        members = getattr(backbone, "member_backbones", None)
        if members is None:
            feats = self.exports[0](x)
        else:
            parts = [m.preprocess(member_input(x, m.chip_geometry)) for m in members]
            feats = torch.cat([e(p) for e, p in zip(self.exports, parts)], 1)
        return self.model.embed_features(feats.float())

    def forward(self, chips: Tensor) -> Tensor:
        if not self.flip:
            return self.embed(chips)
        e = self.embed(torch.cat([chips, chips.flip(2)]))  # one batch of 2n, as embed_chips runs it
        both = e.reshape(2, -1, e.shape[-1])  # -1: nothing reads the batch size, so it stays dynamic
        return F.normalize(both[0] + both[1], dim=1)


def _full_path(model: EmbeddingModel, flip: bool) -> Path:
    return (
        ir_dir()
        / f"{weights_fingerprint(model)}-{model.backbone.name}-full{'-flip' if flip else ''}-r{GRAPH_REVISION}.xml"
    )


def _build_full(model: EmbeddingModel, leaves: list[Any], flip: bool, hint: str, threads: int) -> CompiledEmbedding:
    ov = import_openvino()
    _, size, _, channels = blank_chips(model.backbone).shape

    def convert_full() -> Any:
        example = torch.randint(0, 256, (2, size, size, channels), dtype=torch.uint8)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            export = _FullEmbeddingExport(model, [export_of(leaf) for leaf in leaves], flip).eval()
            graph = ov.convert_model(export, example_input=example)
        graph.reshape({graph.inputs[0]: ov.PartialShape([-1, size, size, channels])})
        return graph

    ir = cached_ir(_full_path(model, flip), convert_full)
    return compiled_graph(ir, hint, threads, (size, size, channels), np.uint8)


def full_graph(model: EmbeddingModel, chips: np.ndarray, flip: bool) -> CompiledEmbedding | None:
    """The compiled full embedding of ``model`` (``flip``: with flip TTA) for uint8 ``chips``; None where
    torch's path must run (another backend, training, autograd, chips of another size, a failed build)."""
    leaves = leaf_backbones(model)
    if (
        not leaves
        or any(getattr(leaf, "backend", "torch") != "openvino" for leaf in leaves)
        or module_device(model).type != "cpu"
        or model.training
        or not use_inference_copy(model)
        or chips.dtype != np.uint8
        or chips.ndim != 4
        or chips.shape[1] != model.backbone.input_size
        or model in _failed
    ):
        return None
    hint = precision_hint(leaves[0].inference_dtype())
    threads = torch.get_num_threads()

    def build() -> CompiledEmbedding:
        return inference_copy(
            model, lambda m: _build_full(m, leaves, flip, hint, threads), ("full", flip, hint, threads)
        )

    return _built_or_none(model, f"full-embedding graph of {model.backbone.name}", build)


def prepare_full_graph(model: EmbeddingModel, flip: bool) -> None:
    """Build the full-embedding graph now (where it applies): a failure is logged when the model loads,
    not at the first request, and the backbones' own copies, which the graph replaces on this path,
    are not compiled for nothing (a one-shot CLI enrolment pays only for what it runs)."""
    with torch.inference_mode():
        full_graph(model, blank_chips(model.backbone), flip)
