"""Local copies of registered models (lifecycle/model_copies.py): a gallery made by a registered version
is served from the copy without MLflow, and a copy that is not exactly what was kept is never used."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from facegate.components.embedding.backbones import make_backbone
from facegate.components.embedding.model import EmbeddingModel
from facegate.components.lifecycle import model_copies
from facegate.components.recognition.recognizer import model_fingerprint

NAME = "facegate-embedder"


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "state"


@pytest.fixture(scope="module")
def trained() -> EmbeddingModel:
    """dlib's ResNet with a head moved off its pretrained weights, as a trained version would be."""
    model = EmbeddingModel(make_backbone("dlib_resnet"))
    with torch.no_grad():
        model.head.weight.add_(0.01 * torch.randn(model.head.weight.shape, generator=torch.Generator().manual_seed(0)))
    return model.eval()


def test_a_kept_copy_loads_the_same_weights_and_only_for_its_store_and_version(state, trained, monkeypatch):
    assert model_copies.load_copy(NAME, "3") is None  # nothing kept yet
    path = model_copies.save_copy(trained, NAME, "3")
    assert path.is_file() and path.parent == state / "models" and not list(path.parent.glob(".*tmp"))
    back = model_copies.load_copy(NAME, "3")
    assert back is not None and model_fingerprint(back) == model_fingerprint(trained) and not back.training
    assert model_copies.load_copy(NAME, "4") is None
    assert model_copies.load_copy("other-model", "3") is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")  # another registry's version 3
    assert model_copies.load_copy(NAME, "3") is None


def test_a_fused_copy_is_rebuilt_without_the_pretrained_files_and_embeds_the_same(state):
    """A copy loads into the bare architecture (SFace's ONNX file is not parsed): every weight comes from
    the copy, so its embeddings are the original's."""
    original = EmbeddingModel(make_backbone("dlib_resnet+sface")).eval()
    with torch.no_grad():
        original.head.heads[1].gate_position.fill_(-0.5)  # a trained SFace head
    bare = make_backbone("sface", pretrained=False)
    assert not torch.equal(bare.net.fc.weight, original.backbone.members[1].net.fc.weight)  # no weights read
    model_copies.save_copy(original, NAME, "5")
    back = model_copies.load_copy(NAME, "5")
    assert back is not None and model_fingerprint(back) == model_fingerprint(original)
    chips = np.random.default_rng(0).integers(0, 256, (2, 150, 150, 6), dtype=np.uint8)
    from facegate.components.embedding.model import embed_chips

    assert np.array_equal(embed_chips(back, chips), embed_chips(original, chips))


def test_a_changed_or_damaged_copy_is_a_miss(state, trained):
    path = model_copies.save_copy(trained, NAME, "3")
    kept = torch.load(path, weights_only=True)
    kept["state_dict"]["head.weight"] = kept["state_dict"]["head.weight"] + 1.0  # weights no longer the fingerprint's
    torch.save(kept, path)
    assert model_copies.load_copy(NAME, "3") is None
    path.write_bytes(b"not a torch file")
    assert model_copies.load_copy(NAME, "3") is None


def test_gallery_made_by_a_registered_version_is_served_from_its_copy_without_mlflow(state, trained, monkeypatch):
    from facegate.components.core.settings import load_settings
    from facegate.components.gallery import Gallery
    from facegate.components.gallery.enrolment import EnrolmentStore
    from facegate.components.lifecycle.model_loading import embedder_version_label, gallery_recognizer

    settings = load_settings()
    store = EnrolmentStore(state / "gallery")
    label = embedder_version_label(settings.registry.embedder_model, "3")
    Gallery.new(128, "dlib_resnet", label, tau=0.5).save(store.index_dir)
    assert gallery_recognizer(settings, store) is None  # no copy kept: the caller asks MLflow
    model_copies.save_copy(trained, settings.registry.embedder_model, "3")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # importing MLflow now fails
    recognizer = gallery_recognizer(settings, store)
    assert recognizer is not None and recognizer.embedder_version == label
    feats = np.random.default_rng(0).normal(size=(2, 256)).astype(np.float32)
    with torch.inference_mode():
        got = recognizer.model.embed_features(torch.from_numpy(feats)).numpy()
        want = trained.embed_features(torch.from_numpy(feats)).numpy()
    assert np.array_equal(got, want)
