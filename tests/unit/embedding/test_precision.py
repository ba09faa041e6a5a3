"""Inference precision (facegate.components.embedding.precision): which dtype each setting means where, bfloat16
embeddings of real faces within a hair of float32 ones, float32 untouched, and training never cast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facegate.components.embedding import precision as prec
from tests.conftest import requires_dataset, shared_dataset


def test_settings_mean_one_dtype_each(monkeypatch):
    assert prec.inference_dtype("float32") == torch.float32
    assert prec.inference_dtype("bfloat16") == torch.bfloat16  # asked for: honoured even where emulated
    assert prec.inference_dtype("bfloat16", "cuda") == torch.float32  # GPU paths stay float32
    monkeypatch.setattr(prec, "native_bfloat16", lambda: False)
    assert prec.inference_dtype("auto") == torch.float32
    monkeypatch.setattr(prec, "native_bfloat16", lambda: True)
    assert prec.inference_dtype("auto") == torch.bfloat16
    assert prec.inference_dtype("auto", torch.device("cuda", 0)) == torch.float32
    with pytest.raises(ValueError, match="embedding.precision"):
        prec.inference_dtype("float16")


def test_settings_refuse_an_unknown_precision():
    from facegate.components.core.errors import SettingsError
    from facegate.components.core.settings import load_settings

    assert load_settings().embedding.precision in prec.PRECISIONS
    with pytest.raises(SettingsError, match="embedding.precision"):
        load_settings(overrides={"embedding": {"precision": "int8"}})


@pytest.fixture(scope="module")
def fused_and_chips():
    from facegate.components.core.images import load_image
    from facegate.components.embedding.backbones import make_backbone
    from facegate.components.embedding.model import EmbeddingModel
    from facegate.components.faces.align import PAIRED_GEOMETRY, FaceAligner
    from facegate.components.faces.detectors import YuNetDetector
    from facegate.components.faces.pipeline import FaceFinder

    lfw = shared_dataset("lfw")
    finder = FaceFinder(YuNetDetector(0, score_threshold=0.6, max_side=1280), FaceAligner(geometry=PAIRED_GEOMETRY))
    files = [sorted((lfw / n).glob("*.jpg"))[i] for n in ("George_W_Bush", "Colin_Powell") for i in (0, 1)]
    chips = np.stack([finder.centre_face(load_image(f)).chip for f in files])
    return EmbeddingModel(make_backbone("dlib_resnet+sface")).eval(), chips


@requires_dataset("lfw")
def test_bfloat16_embeddings_of_real_faces_stay_within_a_hair_of_float32(fused_and_chips):
    from facegate.components.embedding.model import embed_chips
    from facegate.components.recognition.recognizer import model_fingerprint

    model, chips = fused_and_chips
    before = model_fingerprint(model)
    f32 = embed_chips(prec.set_precision(model, "float32"), chips, flip_tta=True)
    bf16 = embed_chips(prec.set_precision(model, "bfloat16"), chips, flip_tta=True)
    cos = np.sum(f32 * bf16, axis=1)
    assert cos.min() > 0.999, (
        cos
    )  # raw features measured 0.9996 (SFace): bfloat16 keeps 8 bits of mantissa, sums in float32
    assert np.abs(f32 - bf16).max() > 1e-6  # it did compute in bfloat16
    sim32, sim16 = f32 @ f32.T, bf16 @ bf16.T
    assert np.abs(sim32 - sim16).max() < 2e-3  # scores the threshold sees move by less than 0.002
    assert sim16[0, 1] > sim16[0, 2] and sim16[2, 3] > sim16[1, 3]  # same person still closer
    # float32 again: the first copy is cached beside the bfloat16 one and gives the same bits
    assert np.array_equal(embed_chips(prec.set_precision(model, "float32"), chips, flip_tta=True), f32)
    assert model_fingerprint(model) == before  # parameters and buffers stay float32, untouched
    assert all(p.dtype == torch.float32 for p in model.parameters())


@requires_dataset("lfw")
def test_training_graph_ignores_precision(fused_and_chips):
    model, chips = fused_and_chips
    prec.set_precision(model, "bfloat16")
    x = model.backbone.preprocess(torch.from_numpy(chips[:2].copy()))
    model.train()
    try:
        out = model(x)
        assert out.dtype == torch.float32
        out.sum().backward()  # gradients through the float32 graph, not a detached bfloat16 copy
        assert model.head.heads[0].weight.grad is not None
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
        prec.set_precision(model, "float32")


def test_feature_cache_keys_bfloat16_apart(tmp_path):
    from facegate.components.embedding.model import cached_features

    chips = np.random.default_rng(0).integers(0, 255, (2, 150, 150, 3), dtype=np.uint8)
    f32, _ = cached_features(chips, "k", "dlib_resnet", tmp_path, precision="float32")
    bf16, _ = cached_features(chips, "k", "dlib_resnet", tmp_path, precision="bfloat16")
    names = sorted(p.name for p in tmp_path.glob("*.npy"))
    assert names == [
        "features-k-dlib_resnet-bf16-flip.npy",
        "features-k-dlib_resnet-bf16-plain.npy",
        "features-k-dlib_resnet-flip.npy",
        "features-k-dlib_resnet-plain.npy",
    ]
    assert not np.array_equal(f32, bf16) and np.allclose(f32, bf16, atol=0.05 * np.abs(f32).max())
