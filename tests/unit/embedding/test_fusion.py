"""Score fusion: the fused cosine is the weighted sum of the members' cosines; weights fitted on
training identities pick the informative member; paired chips carry both geometries through a flip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from facegate.components.embedding.backbones import chip_geometry, make_backbone
from facegate.components.embedding.fusion import FusedHead, fit_fusion_weights, fused_geometry, member_input, tar_at_far
from facegate.components.faces.align import ARCFACE_OFFSET, PAIRED_GEOMETRY, paired_chip, split_paired


def _head(dims=(8, 6), out=4, weights=(0.3, 0.7), seed=0):
    torch.manual_seed(seed)
    return FusedHead([nn.Linear(d, out, bias=False) for d in dims], list(dims), weights)


def test_fused_cosine_is_the_weighted_sum_of_member_cosines():
    head = _head()
    a, b = torch.randn(5, 14), torch.randn(5, 14)
    ea, eb = head(a), head(b)
    fused_cos = (ea * eb).sum(1) / (ea.norm(dim=1) * eb.norm(dim=1))
    ma, mb = head.member_embeddings(a), head.member_embeddings(b)
    expected = 0.3 * (ma[0] * mb[0]).sum(1) + 0.7 * (ma[1] * mb[1]).sum(1)
    torch.testing.assert_close(fused_cos, expected)
    assert head.out_features == 8
    assert abs(ea.norm(dim=1) - 1).max() < 1e-5  # weights sum to 1: already unit length


def test_weights_fitted_on_training_faces_favour_the_member_that_separates_them():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(40), 4)
    centres = rng.normal(size=(40, 6))
    informative = centres[labels] + 0.05 * rng.normal(size=(len(labels), 6))
    noise = rng.normal(size=(len(labels), 8))
    head = FusedHead([nn.Identity(), nn.Identity()], [8, 6], [0.5, 0.5])
    for h, d in zip(head.heads, (8, 6)):
        h.out_features = d  # identity heads for the test
    fit = fit_fusion_weights(head, np.hstack([noise, informative]).astype(np.float32), labels, seed=1)
    assert fit["fusion_weights"][1] >= 0.8 and fit["fusion_fit_tar"] > 0.9
    assert head.weights[1].item() == pytest.approx(fit["fusion_weights"][1], abs=1e-4)


def test_tar_at_far_counts_genuine_pairs_above_the_impostor_quantile():
    impostor = np.arange(1000) / 1000.0  # the top 1 in 1000 is 0.999
    genuine = np.array([0.5, 0.9995, 1.0, 0.2])
    assert tar_at_far(genuine, impostor, 1e-3) == 0.5


def test_geometries_of_fused_backbones():
    assert chip_geometry("dlib_resnet+sface") == PAIRED_GEOMETRY
    assert fused_geometry(["dlib_150", "dlib_150"]) == "dlib_150"
    for bad in ("dlib_resnet+nope", "sface+sface"):
        with pytest.raises(ValueError, match="unknown backbone"):
            chip_geometry(bad)


def test_paired_chips_split_and_flip_together():
    rng = np.random.default_rng(0)
    dlib_chip = rng.integers(0, 255, (150, 150, 3), dtype=np.uint8)
    arc = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
    paired = paired_chip(dlib_chip, arc)
    d, a = split_paired(paired[None])
    assert np.array_equal(d[0], dlib_chip) and np.array_equal(a[0], arc)
    flipped = paired[:, ::-1]
    fd, fa = split_paired(flipped[None])
    assert np.array_equal(fd[0], dlib_chip[:, ::-1]) and np.array_equal(fa[0], arc[:, ::-1])
    x = torch.from_numpy(paired[None]).permute(0, 3, 1, 2).float()
    assert torch.equal(member_input(x, "arcface_112")[0], torch.from_numpy(arc).float())
    assert torch.equal(member_input(x, "dlib_150")[0], torch.from_numpy(dlib_chip).float())
    assert ARCFACE_OFFSET == 19


def test_fused_model_embeds_as_its_members_would():
    from facegate.components.embedding.model import EmbeddingModel, embed_chips

    rng = np.random.default_rng(1)
    dlib_chips = rng.integers(0, 255, (2, 150, 150, 3), dtype=np.uint8)
    arc = rng.integers(0, 255, (2, 112, 112, 3), dtype=np.uint8)
    paired = np.stack([paired_chip(d, a) for d, a in zip(dlib_chips, arc)])
    fused = EmbeddingModel(make_backbone("dlib_resnet+sface"))
    assert fused.name == "dlib_resnet+sface" and fused.head.out_features == 256
    e = embed_chips(fused, paired)
    d = embed_chips(EmbeddingModel(make_backbone("dlib_resnet")), dlib_chips)
    s = embed_chips(EmbeddingModel(make_backbone("sface")), arc)
    np.testing.assert_allclose(e[:, :128] * np.sqrt(2), d, atol=1e-5)
    np.testing.assert_allclose(e[:, 128:] * np.sqrt(2), s, atol=1e-5)


def test_member_mirror_only_takes_one_members_columns_from_the_mirror_features():
    """The benchmark's "flip TTA on one member": that member's mirror features, every other's plain."""
    from types import SimpleNamespace

    from facegate.benchmarks.lfw import member_mirror_only

    head = SimpleNamespace(in_dims=[2, 3])
    plain, mirror = np.zeros((4, 5), np.float32), np.ones((4, 5), np.float32)
    np.testing.assert_array_equal(member_mirror_only(head, plain, mirror, 1)[0], [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(member_mirror_only(head, plain, mirror, 0)[0], [1, 1, 0, 0, 0])
    assert not plain.any()  # the caller's arrays are not written
