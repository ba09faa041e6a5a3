"""The cascade's cheap pass as one OpenVINO graph: a member's chip in, its unit embedding out.

Why: the cheap pass decides most faces at the door, so its cost is the door's p50. Run through torch it
is the member's compiled ``features`` plus, around it, a walk of the model's modules (eval check), the
tensor conversions and the head's few small ops, each waking torch's threads between OpenVINO's: on
one LFW face at load 0.8 that was 7.5 ms a face where the member's network alone takes 2.4 ms (bf16, 2
threads). Here the member's export module, its head and the L2 normalisation are converted together
into one IR, so a face is one numpy slice and one ``infer`` call (docs/decisions/openvino-backend.md).

The graph is built only where the backbones' OpenVINO copies are asked for and apply (``embedding.
backend: openvino``, eval mode, no autograd, CPU) and where the chip needs no resizing; otherwise, or
when the conversion fails (one warning), :func:`member_graph` answers None and the torch path runs.
The IR is cached like the backbones' (``openvino_runtime.ir_dir``), keyed by the member's and the head's
weights; tests/unit/embedding/test_member_graph.py holds it to the torch path on real LFW chips.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facegate.components.core.locks import file_lock
from facegate.components.core.telemetry import import_openvino
from facegate.components.embedding.folding import _state_key, inference_copy, use_inference_copy, weights_fingerprint
from facegate.components.embedding.openvino_runtime import (
    LOCK_TIMEOUT_S,
    _core,
    compile_config,
    convert,
    ir_dir,
    precision_hint,
)
from facegate.components.faces.align import ARCFACE_OFFSET, ARCFACE_SIZE

GRAPH_REVISION = 1  # bumped when what the graph computes changes: older IRs are then not read
logger = logging.getLogger(__name__)
_failed: dict[int, str] = {}  # id(head) -> why its graph could not be built (tried once per head)


class _MemberEmbeddingExport(nn.Module):
    """What the graph computes: the member's features of its preprocessed chip, its head, L2-normalised."""

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features, self.head = features, head

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.head(self.features(x).float()), dim=1)


class CompiledMemberEmbedding(nn.Module):
    """The compiled graph: float32 N x 3 x S x S (0..255) in, unit embeddings out. One infer request
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


def graph_path(member: Any, head: nn.Module) -> Any:
    key = hashlib.sha256(f"{weights_fingerprint(member)}:{weights_fingerprint(head)}".encode()).hexdigest()[:16]
    return ir_dir() / f"{key}-{member.name}-embedding-r{GRAPH_REVISION}.xml"


def _build(member: Any, head: nn.Module, hint: str, threads: int) -> CompiledMemberEmbedding:
    ov = import_openvino()
    path = graph_path(member, head)
    with file_lock(path.parent, timeout=LOCK_TIMEOUT_S):
        if not (path.is_file() and path.with_suffix(".bin").is_file()):
            export = member.export_module()
            if export is None:
                raise NotImplementedError(f"backbone {member.name} has no export module")
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.xml")
            try:
                graph = convert(_MemberEmbeddingExport(export, head), member.input_size)
                ov.save_model(graph, str(tmp), compress_to_fp16=False)
                os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
                os.replace(tmp, path)  # the .xml last: its presence means the pair is whole
            finally:
                tmp.unlink(missing_ok=True)
                tmp.with_suffix(".bin").unlink(missing_ok=True)
    compiled = _core().compile_model(_core().read_model(str(path)), "CPU", compile_config(hint, threads))
    graph = CompiledMemberEmbedding(compiled, hint, threads)
    for n in (1, 3):  # batches other than the traced one: a shape baked into the graph fails here, not at the door
        graph.embed(np.zeros((n, 3, member.input_size, member.input_size), np.float32))
    return graph


def member_graph(member: Any, head: nn.Module, chip_size: int) -> CompiledMemberEmbedding | None:
    """The compiled cheap pass of ``member`` with ``head`` for chips of ``chip_size`` pixels; None where
    the torch path must run (another backend, training, autograd, a chip to resize, a failed build)."""
    if (
        getattr(member, "backend", "torch") != "openvino"
        or chip_size != member.input_size
        or member.training
        or head.training
        or not use_inference_copy(head)
        or id(head) in _failed
    ):
        return None
    hint = precision_hint(member.inference_dtype())
    threads = torch.get_num_threads()
    variant = ("graph", hint, threads, id(head), _state_key(head))  # the member's own weights: inference_copy's key
    try:
        return inference_copy(member, lambda m: _build(m, head, hint, threads), variant=variant)
    except Exception as exc:  # noqa: BLE001 - any failure means the torch path, said once
        lines = str(exc).strip().splitlines()
        _failed[id(head)] = f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"
        logger.warning("cheap-pass graph of %s not built, torch runs it: %s", member.name, _failed[id(head)])
        return None


def member_chip_size(chips: np.ndarray, geometry: str) -> int:
    """The side of the member's part of ``chips`` (paired chips hold an ArcFace chip of 112)."""
    return ARCFACE_SIZE if chips.shape[-1] == 6 and geometry == "arcface_112" else int(chips.shape[1])


def member_chips(chips: np.ndarray, geometry: str) -> np.ndarray:
    """The member's part of N x 150 x 150 x 6 paired chips (or plain N x S x S x 3 ones) as the graph's
    float32 N x 3 x S x S input."""
    if chips.shape[-1] == 6:
        if geometry == "arcface_112":
            o = ARCFACE_OFFSET
            chips = chips[:, o : o + ARCFACE_SIZE, o : o + ARCFACE_SIZE, 3:]
        else:
            chips = chips[..., :3]
    return np.ascontiguousarray(chips.transpose(0, 3, 1, 2), dtype=np.float32)
