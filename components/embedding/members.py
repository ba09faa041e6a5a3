"""One member of a (fused) embedding model on its own: the cheap first pass of the confidence cascade.

Why: a fused model's embedding is its members' unit embeddings, each scaled by sqrt(w_m), concatenated
(fusion.py), so a member's own unit embedding is a slice of the fused one, re-normalised. The cascade's
cheap pass runs that one member once (no mirror); its gallery side needs no second enrolment: the
member's slice of every stored full (flip-averaged) embedding, re-normalised, is the member's own
flip-averaged embedding of that face, so the small index can never disagree with the full one.
A model with one backbone is its own only member (the cheap pass is then that model without mirror).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from facegate.components.core.devices import module_device
from facegate.components.embedding.base import Backbone
from facegate.components.embedding.fusion import FusedBackbone, FusedHead, member_input
from facegate.components.embedding.inference_graphs import member_chip_size, member_chips, member_graph
from facegate.components.embedding.model import EmbeddingModel, embed_chips, embed_from_features, ensure_eval


class MemberSlice(NamedTuple):
    """Where member number ``position`` sits: columns ``start:end`` of the full embedding, its feature columns.

    Not ``index``: a NamedTuple field of that name shadows ``tuple.index``."""

    position: int
    start: int
    end: int
    feature_start: int
    feature_end: int


def member_names(model: EmbeddingModel) -> list[str]:
    members = getattr(model.backbone, "members", None)
    return [model.name] if members is None else [m.name for m in members]


def member_slice(model: EmbeddingModel, member: str) -> MemberSlice:
    """Member ``member``'s place in ``model``; ValueError naming the members when it is not one."""
    names = member_names(model)
    if member not in names:
        raise ValueError(f"recognition.cascade_member {member!r} is not a member of {model.name} ({names})")
    head = model.head
    if not isinstance(head, FusedHead):
        return MemberSlice(0, 0, model.embedding_dim, 0, model.backbone.feature_dim)
    i = names.index(member)
    outs = [h.out_features for h in head.member_heads]
    if float(head.weights[i]) <= 0:
        raise ValueError(f"member {member!r} has fusion weight 0: its slice of the embedding is empty")
    return MemberSlice(i, sum(outs[:i]), sum(outs[: i + 1]), sum(head.in_dims[:i]), sum(head.in_dims[: i + 1]))


def member_backbone(model: EmbeddingModel, where: MemberSlice) -> Backbone:
    """The backbone of the member at ``where``: a fused model's member, or a plain model's own backbone."""
    backbone = model.backbone
    return backbone.member_backbones[where.position] if isinstance(backbone, FusedBackbone) else backbone


def member_of_full(full: np.ndarray, where: MemberSlice) -> np.ndarray:
    """The member's own unit embeddings out of full ones (n x D): its slice, re-normalised."""
    part = np.ascontiguousarray(np.asarray(full, np.float32)[:, where.start : where.end])
    norms = np.linalg.norm(part, axis=1, keepdims=True)
    return part / np.maximum(norms, 1e-12)


@torch.inference_mode()
def member_from_features(model: EmbeddingModel, feats: np.ndarray, where: MemberSlice) -> np.ndarray:
    """The member's unit embeddings from the fused backbone's cached (plain) features: no mirror."""
    head = model.head
    if not isinstance(head, FusedHead):
        return embed_from_features(model, feats)
    part = torch.from_numpy(np.ascontiguousarray(feats[:, where.feature_start : where.feature_end]))
    return F.normalize(head.heads[where.position](part.to(module_device(model))), dim=1).cpu().numpy()


@torch.inference_mode()
def member_embed_chips(model: EmbeddingModel, chips: np.ndarray, where: MemberSlice) -> np.ndarray:
    """Chips (the model's own chip geometry) -> the member's unit embeddings, one pass, no mirror."""
    head = model.head
    if not isinstance(head, FusedHead):
        return embed_chips(model, chips, flip_tta=False)
    backbone = model.backbone
    assert isinstance(backbone, FusedBackbone)  # a FusedHead comes only from FusedBackbone.embedding_head
    member = member_backbone(model, where)
    graph = member_graph(member, head.heads[where.position], member_chip_size(chips, member.chip_geometry))
    if graph is not None:  # the served cheap pass: one OpenVINO call, no torch op around it
        return graph.embed(member_chips(np.asarray(chips), member.chip_geometry))
    ensure_eval(model)
    batch = torch.from_numpy(np.array(chips)).to(module_device(model))
    x = member_input(backbone.preprocess(batch), member.chip_geometry)
    feats = member.features(member.preprocess(x).contiguous(memory_format=torch.channels_last))
    return F.normalize(head.heads[where.position](feats.float()), dim=1).cpu().numpy()
