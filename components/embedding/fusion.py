"""Score fusion of several face embedders (dlib's ResNet + SFace) inside one embedding model.

Each member embeds the face in its own chip geometry and its own unit-length space; the fused
embedding is the members' unit embeddings, each scaled by sqrt(w_m), concatenated. Its cosine
similarity is then exactly the weighted sum of the members' cosine similarities (sum_m w_m cos_m, with
sum w = 1): score-level fusion with per-model normalisation, carried by an ordinary embedding, so the
gallery, calibration, identification threshold and API need nothing new (the embedding is 128 x M-d
and a gallery built by any other model is still refused by name and version).

The weights are fitted on training identities only (:func:`fit_fusion_weights`), so a benchmark fold
or held-out split never chooses its own weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facegate.components.embedding.base import FUSION_SEPARATOR, Backbone, to_nchw
from facegate.components.embedding.position_gate import PositionGatedHead
from facegate.components.faces.align import ARCFACE_OFFSET, ARCFACE_SIZE, PAIRED_GEOMETRY

WEIGHT_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)  # candidate weights of the last member (two members)


def fused_geometry(geometries: Sequence[str]) -> str:
    """The chip a fused model reads: the members' common geometry, or both stacked (paired chips)."""
    kinds = set(geometries)
    if len(kinds) == 1:
        return kinds.pop()
    if kinds == {"dlib_150", "arcface_112"}:
        return PAIRED_GEOMETRY
    raise ValueError(f"no chip geometry holds all of {sorted(kinds)}")


def member_input(x: Tensor, geometry: str) -> Tensor:
    """The member's own chip out of a fused model's N x C x 150 x 150 input, as NHWC for its preprocess."""
    if x.shape[1] == 6:
        if geometry == "arcface_112":
            o = ARCFACE_OFFSET
            x = x[:, 3:, o : o + ARCFACE_SIZE, o : o + ARCFACE_SIZE]
        else:
            x = x[:, :3]
    return x.permute(0, 2, 3, 1)


class FusedHead(nn.Module):
    """Per-member linear heads; each output L2-normalised and scaled by sqrt(weight), concatenated."""

    weights: Tensor  # a buffer (register_buffer in __init__)

    def __init__(self, heads: Sequence[nn.Module], in_dims: Sequence[int], weights: Sequence[float]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)
        self.in_dims = list(in_dims)
        self.register_buffer("weights", torch.tensor(normalised_weights(weights), dtype=torch.float32))

    @property
    def member_heads(self) -> list[nn.Linear | PositionGatedHead]:
        """``heads`` as what they are (torch's ModuleList is not generic): linear heads, or a backbone's
        own (:meth:`Backbone.embedding_head`: SFace's gated one)."""
        return cast("list[nn.Linear | PositionGatedHead]", list(self.heads))

    @property
    def out_features(self) -> int:
        return sum(h.out_features for h in self.member_heads)

    def set_weights(self, weights: Sequence[float]) -> None:
        self.weights.copy_(torch.tensor(normalised_weights(weights), dtype=torch.float32))

    def member_embeddings(self, feats: Tensor) -> list[Tensor]:
        parts = torch.split(feats, self.in_dims, dim=1)
        return [F.normalize(h(p), dim=1) for h, p in zip(self.heads, parts)]

    def bare_penalty(self, feats: Tensor) -> Tensor | None:
        """The gated members' penalties (facegate.components.embedding.position_gate), summed; None: no gates."""
        parts = torch.split(feats, self.in_dims, dim=1)
        found = [h.bare_penalty(p) for h, p in zip(self.member_heads, parts) if isinstance(h, PositionGatedHead)]
        return torch.stack(found).sum() if found else None

    def forward(self, feats: Tensor) -> Tensor:
        return torch.cat([e * w.sqrt() for e, w in zip(self.member_embeddings(feats), self.weights)], dim=1)


class FusedBackbone(Backbone):
    """Several backbones side by side: features are theirs concatenated; the head is a FusedHead."""

    input_size = 150

    def __init__(self, members: Sequence[Backbone], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.name = FUSION_SEPARATOR.join(m.name for m in members)  # an instance's: the registry key
        self.feature_dim = sum(m.feature_dim for m in members)
        self.chip_geometry = fused_geometry([m.chip_geometry for m in members])
        self.initial_weights = list(weights or [1.0] * len(members))

    @property
    def member_backbones(self) -> list[Backbone]:
        """``members`` as backbones (torch's ModuleList is not generic)."""
        return cast("list[Backbone]", list(self.members))

    def preprocess(self, chips: Tensor) -> Tensor:
        return to_nchw(chips)  # 0..255; each member applies its own preprocessing in features()

    def features(self, x: Tensor) -> Tensor:
        return torch.cat([m.features(m.preprocess(member_input(x, m.chip_geometry))) for m in self.member_backbones], 1)

    def stages(self) -> list[nn.Module]:
        return [s for m in self.member_backbones for s in m.stages()]

    def freeze_all_but_last(self, n_stages: int) -> None:
        """The deepest ``n_stages`` stages of every member (each member's own depth)."""
        for m in self.member_backbones:
            m.freeze_all_but_last(min(n_stages, len(m.stages())))

    def train(self, mode: bool = True):
        nn.Module.train(self, mode)
        for m in self.members:
            m.train(mode)
        return self

    def embedding_head(self, dim: int) -> FusedHead:
        heads: list[nn.Module] = []
        for m in self.member_backbones:
            own = m.embedding_head(dim)
            if own is not None:  # the member's own kind of head (SFace's gated one)
                heads.append(own)
                continue
            head = nn.Linear(m.feature_dim, dim, bias=False)
            pretrained = m.pretrained_head()
            with torch.no_grad():
                if pretrained is not None and pretrained.weight.shape == head.weight.shape:
                    head.weight.copy_(pretrained.weight)
                else:
                    nn.init.xavier_uniform_(head.weight)
            heads.append(head)
        return FusedHead(heads, [m.feature_dim for m in self.member_backbones], self.initial_weights)


def normalised_weights(weights: Sequence[float]) -> list[float]:
    w = np.asarray(weights, np.float64)
    if w.ndim != 1 or len(w) == 0 or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"fusion weights must be >= 0 with a positive sum, got {list(weights)}")
    return (w / w.sum()).tolist()


@torch.inference_mode()
def member_similarities(
    head: FusedHead, feats: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 8192
) -> np.ndarray:
    """M x n cosine similarities of the members for n pairs (rows ``a``, ``b`` of ``feats``): each row
    embedded once (220,000 pairs of 6,528-value features would be 11 GB gathered)."""
    parts = [
        head.member_embeddings(torch.from_numpy(np.ascontiguousarray(feats[i : i + chunk])))
        for i in range(0, len(feats), chunk)
    ]
    members = [np.concatenate([p[m].numpy() for p in parts]) for m in range(len(head.heads))]
    return np.stack([(e[a] * e[b]).sum(1) for e in members])


def tar_at_far(sim_genuine: np.ndarray, sim_impostor: np.ndarray, far: float) -> float:
    """Share of genuine pairs above the similarity that lets in ``far`` of the impostors."""
    k = max(int(np.floor(far * len(sim_impostor))), 1)
    threshold = np.partition(sim_impostor, -k)[-k]
    return float((sim_genuine > threshold).mean())


def training_pairs(
    labels: np.ndarray, rng: np.random.Generator, max_genuine: int = 20000, impostor_per_genuine: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row a, row b, same) over labelled rows: all genuine pairs up to a cap, random impostor pairs."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    ends = np.r_[starts[1:], len(labels)]
    ga_parts, gb_parts = [], []
    for s, e in zip(starts, ends):
        rows = order[s:e]
        if len(rows) > 1:
            i, j = np.triu_indices(len(rows), 1)
            ga_parts.append(rows[i])
            gb_parts.append(rows[j])
    ga = np.concatenate(ga_parts) if ga_parts else np.zeros(0, int)
    gb = np.concatenate(gb_parts) if gb_parts else np.zeros(0, int)
    if len(ga) > max_genuine:
        keep = rng.choice(len(ga), max_genuine, replace=False)
        ga, gb = ga[keep], gb[keep]
    n_imp = max(len(ga) * impostor_per_genuine, 1000)
    ia, ib = rng.integers(len(labels), size=(2, n_imp * 2))
    diff = labels[ia] != labels[ib]
    ia, ib = ia[diff][:n_imp], ib[diff][:n_imp]
    a, b = np.r_[ga, ia], np.r_[gb, ib]
    return a, b, np.r_[np.ones(len(ga), bool), np.zeros(len(ia), bool)]


def fit_fusion_weights(
    head: FusedHead,
    feats: np.ndarray,
    labels: np.ndarray,
    *,
    far: float = 1e-4,
    seed: int = 0,
    flip_feats: np.ndarray | None = None,
) -> dict:
    """Choose the members' weights on labelled training faces (identities the evaluation never sees):
    the grid point with the highest TAR at ``far`` (ties: the larger d', the genuine-impostor gap in
    pooled standard deviations). Training identities are easy at FAR 1e-3 (every weight scores ~0.999
    there), so the fit looks further into the impostor tail. Sets them on ``head``; returns what was
    measured."""
    if len(head.heads) != 2:
        raise ValueError("weights are fitted for two members (a grid over the second member's weight)")
    a, b, same = training_pairs(np.asarray(labels), np.random.default_rng(seed))
    sims = member_similarities(head, feats, a, b)
    if flip_feats is not None:  # the same TTA the model will serve with
        sims = (sims + member_similarities(head, flip_feats, a, b)) / 2
    best: tuple[tuple[float, float], float] | None = None
    for w in WEIGHT_GRID:
        s = (1 - w) * sims[0] + w * sims[1]
        genuine, impostor = s[same], s[~same]
        d_prime = (genuine.mean() - impostor.mean()) / np.sqrt((genuine.var() + impostor.var()) / 2 + 1e-12)
        score = (tar_at_far(genuine, impostor, far), float(d_prime))
        if best is None or score > best[0]:
            best = (score, w)
    assert best is not None  # WEIGHT_GRID is not empty
    (tar, _), w = best
    head.set_weights([1 - w, w])
    return {
        "fusion_weights": [round(1 - float(w), 4), round(float(w), 4)],
        "fusion_fit_tar": tar,
        "fusion_fit_pairs": int(len(same)),
        "fusion_fit_genuine": int(same.sum()),
    }
