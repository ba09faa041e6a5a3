"""A fused model's member on its own (the cascade's cheap pass) is exactly its slice of the full embedding."""

from __future__ import annotations

import numpy as np
import pytest

from facegate.components.embedding.backbones import make_backbone
from facegate.components.embedding.members import (
    member_embed_chips,
    member_from_features,
    member_names,
    member_of_full,
    member_slice,
)
from facegate.components.embedding.model import EmbeddingModel, chip_features, embed_chips
from facegate.components.embedding.precision import set_precision


@pytest.fixture(scope="module")
def fused() -> EmbeddingModel:
    return set_precision(EmbeddingModel(make_backbone("dlib_resnet+sface")).eval(), "float32")


def test_member_pass_is_the_slice_of_the_full_embedding(fused) -> None:
    chips = np.random.default_rng(0).integers(0, 256, (3, 150, 150, 6), dtype=np.uint8)
    where = member_slice(fused, "sface")
    assert member_names(fused) == ["dlib_resnet", "sface"] and where.end - where.start == 128
    cheap = member_embed_chips(fused, chips, where)
    sliced = member_of_full(embed_chips(fused, chips, flip_tta=False), where)
    assert np.allclose(cheap, sliced, atol=1e-4)
    from_feats = member_from_features(fused, chip_features(fused.backbone, chips), where)
    assert np.allclose(from_feats, cheap, atol=1e-4)
    assert np.allclose(np.linalg.norm(cheap, axis=1), 1.0, atol=1e-5)


def test_a_model_without_the_member_is_refused(fused) -> None:
    with pytest.raises(ValueError, match="not a member"):
        member_slice(fused, "mobilenet_v2")
