"""The embedding model on both backbones, and head training that really learns."""

import numpy as np
import pytest
import torch

from facegate.components.core.settings import load_settings
from facegate.components.embedding.backbones import BACKBONES, make_backbone
from facegate.components.embedding.model import EmbeddingModel, chip_features, embed_chips, embed_from_features
from facegate.components.embedding.train import TrainConfig, train_head


@pytest.fixture(scope="module")
def dlib_model():
    return EmbeddingModel(make_backbone("dlib_resnet"))


def test_registry():
    assert set(BACKBONES) == {"dlib_resnet", "mobilenet_v2", "sface"}
    with pytest.raises(ValueError, match="unknown backbone"):
        make_backbone("resnet9000")


def test_dlib_head_starts_as_dlibs_own_descriptor(dlib_model):
    chips = np.random.default_rng(0).integers(0, 256, (3, 150, 150, 3), dtype=np.uint8)
    emb = embed_chips(dlib_model, chips)
    with torch.inference_mode():
        raw = dlib_model.backbone.net(torch.from_numpy(chips).permute(0, 3, 1, 2).float())
    expected = torch.nn.functional.normalize(raw, dim=1).numpy()
    np.testing.assert_allclose(emb, expected, atol=1e-5)
    assert emb.shape == (3, 128)


def test_flip_tta_is_mean_of_both_views(dlib_model):
    chips = np.random.default_rng(1).integers(0, 256, (2, 150, 150, 3), dtype=np.uint8)
    plain = embed_chips(dlib_model, chips)
    mirrored = embed_chips(dlib_model, chips[:, :, ::-1].copy())
    tta = embed_chips(dlib_model, chips, flip_tta=True)
    expected = plain + mirrored
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(tta, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(tta, axis=1), 1.0, atol=1e-5)


def test_mobilenet_backbone_features_and_finetune_freezing():
    backbone = make_backbone("mobilenet_v2")
    chips = np.zeros((2, 150, 150, 3), np.uint8)
    assert chip_features(backbone, chips).shape == (2, 1280)
    backbone.freeze_all_but_last(2)
    trainable = {
        n.split(".")[2] for n, p in backbone.named_parameters() if p.requires_grad and n.startswith("net.features")
    }
    assert trainable == {str(i) for i in range(7, 19)}


def test_head_training_separates_identities():
    """Features of 12 identities in a space where identity is a weak direction: training must raise
    the gap between genuine and impostor distances."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(12), 6)
    centres = rng.normal(size=(12, 256)).astype(np.float32)
    feats = (0.6 * centres[labels] + rng.normal(size=(len(labels), 256))).astype(np.float32)
    model = EmbeddingModel(make_backbone("dlib_resnet"))

    def gap():
        e = embed_from_features(model, feats)
        d = np.linalg.norm(e[:, None] - e[None], axis=2)
        same = labels[:, None] == labels[None]
        off = ~np.eye(len(labels), dtype=bool)
        return d[~same].mean() - d[same & off].mean()

    before = gap()
    cfg = TrainConfig.from_settings(load_settings(), miner="batch_hard", p=6, k=4, epochs=15, lr=3e-3, seed=1)
    hist = train_head(model, feats, None, labels, cfg)
    assert len(hist) == 15 and {"loss", "active_fraction", "mean_d_ap", "mean_d_an"} <= set(hist[0])
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert gap() > before + 0.1
    assert all(not p.requires_grad for p in model.backbone.parameters())


def test_pretrained_decay_keeps_the_head_near_its_start():
    """L2-SP: decay toward the pretrained head (train.pretrained_decay) bounds how far training moves it;
    without it the same run drifts further (same data, seed and steps)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(12), 6)
    centres = rng.normal(size=(12, 256)).astype(np.float32)
    feats = (0.6 * centres[labels] + rng.normal(size=(len(labels), 256))).astype(np.float32)
    drift = {}
    for decay in (0.0, 50.0):
        model = EmbeddingModel(make_backbone("dlib_resnet"))
        w0 = model.head.weight.detach().clone()
        cfg = TrainConfig.from_settings(
            load_settings(),
            miner="batch_hard",
            p=6,
            k=4,
            epochs=10,
            lr=3e-3,
            seed=1,
            weight_decay=0.0,
            pretrained_decay=decay,
        )
        train_head(model, feats, None, labels, cfg)
        drift[decay] = float((model.head.weight.detach() - w0).norm())
    assert drift[0.0] > 0 and drift[50.0] < 0.5 * drift[0.0]
