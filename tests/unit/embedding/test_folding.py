"""Inference copies (BN folded, channels-last weights, 1x1 convs as GEMMs, flip TTA in one batch) compute
what the training-time modules compute, leave the weights' fingerprint alone, and follow weight changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from facegate.components.embedding.folding import fold_bn_linear, fold_conv_bn, inference_copy, use_inference_copy
from facegate.components.embedding.sface import SFaceInference, SFaceNet
from tests.conftest import requires_dataset, shared_dataset


def _bn(n: int, seed: int) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(n, eps=1e-3)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(n, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(n, generator=g))
        bn.running_mean.copy_(torch.randn(n, generator=g))
        bn.running_var.copy_(torch.rand(n, generator=g) + 0.1)
    return bn.eval()


def test_folded_layers_compute_conv_then_bn_and_bn_then_linear():
    torch.manual_seed(0)
    x = torch.randn(3, 8, 7, 7)
    for groups, bias in ((1, False), (8, False), (1, True)):
        conv, bn = nn.Conv2d(8, 8, 3, 2, 1, groups=groups, bias=bias).eval(), _bn(8, groups)
        with torch.no_grad():
            torch.testing.assert_close(fold_conv_bn(conv, bn)(x), bn(conv(x)), atol=1e-5, rtol=1e-5)
    bn, fc = _bn(8, 3), nn.Linear(8 * 49, 5)
    with torch.no_grad():
        torch.testing.assert_close(fold_bn_linear(bn, fc)(x.flatten(1)), fc(bn(x).flatten(1)), atol=1e-5, rtol=1e-5)


def test_sface_inference_copy_matches_training_graph_and_keeps_state_dict():
    from facegate.components.recognition.recognizer import model_fingerprint

    torch.manual_seed(0)
    net = SFaceNet().eval()
    for m in net.modules():  # BN statistics away from the identity, or folding proves nothing
        if isinstance(m, nn.BatchNorm2d):
            m.load_state_dict(_bn(m.num_features, m.num_features).state_dict())
    keys = list(net.state_dict())
    x = torch.randn(2, 3, 112, 112)
    with torch.inference_mode():
        ref, fast = net.reference_forward(x), net(x)
    assert isinstance(inference_copy(net, SFaceInference.from_net), SFaceInference)
    assert (ref - fast).abs().max() <= 1e-5 * ref.abs().max()
    assert list(net.state_dict()) == keys  # the copy lives beside the module, not in it
    with torch.no_grad():  # a weight change (an optimiser step, load_state_dict) rebuilds the copy
        net.blocks[3].pw.bn.running_mean.add_(0.5)
    with torch.inference_mode():
        ref2, fast2 = net.reference_forward(x), net(x)
    assert (ref2 - ref).abs().max() > 1e-3 and (ref2 - fast2).abs().max() <= 1e-5 * ref2.abs().max()
    net.train()  # training never sees the copy: BN in batch mode, gradients reach every parameter
    assert not use_inference_copy(net)
    net(x).sum().backward()
    assert net.blocks[0].bn.weight.grad is not None
    before = model_fingerprint(net)  # the content hash of the state_dict: inference leaves it alone
    with torch.inference_mode():
        net.eval()(x)
    assert model_fingerprint(net) == before


@pytest.fixture(scope="module")
def paired_lfw_chips() -> np.ndarray:
    from facegate.components.core.images import load_image
    from facegate.components.faces.align import PAIRED_GEOMETRY, FaceAligner
    from facegate.components.faces.detectors import YuNetDetector
    from facegate.components.faces.pipeline import FaceFinder

    lfw = shared_dataset("lfw")
    finder = FaceFinder(YuNetDetector(0, score_threshold=0.6, max_side=1280), FaceAligner(geometry=PAIRED_GEOMETRY))
    files = [
        sorted((lfw / n).glob("*.jpg"))[0] for n in ("George_W_Bush", "Serena_Williams", "Colin_Powell", "AJ_Cook")
    ]
    return np.stack([finder.centre_face(load_image(f)).chip for f in files])


@requires_dataset("lfw")
def test_fused_serving_path_matches_the_training_graph_on_real_chips(paired_lfw_chips):
    """embed_chips (inference copies, flip TTA as one batch) against the graph as trained (BN separate,
    NCHW weights, plain and mirrored chips in two batches): unit embeddings within 1e-5."""
    import torch.nn.functional as F

    from facegate.components.embedding.backbones import make_backbone
    from facegate.components.embedding.model import EmbeddingModel, embed_chips

    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = EmbeddingModel(make_backbone("dlib_resnet+sface")).eval()
    chips = paired_lfw_chips
    with torch.enable_grad():  # autograd on: every member runs its training-time graph
        views = [torch.from_numpy(np.ascontiguousarray(c)) for c in (chips, chips[:, :, ::-1])]
        feats = [model.backbone.features(model.backbone.preprocess(v)).detach() for v in views]
    with torch.inference_mode():
        ref = F.normalize(model.embed_features(feats[0]) + model.embed_features(feats[1]), dim=1).numpy()
    fast = embed_chips(model, chips, flip_tta=True)
    assert np.abs(fast - ref).max() < 1e-5
    assert np.abs(embed_chips(model, chips[:1], flip_tta=True) - ref[:1]).max() < 1e-5  # batch of one face
