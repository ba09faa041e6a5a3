"""The torch port of SFace against OpenCV's ``FaceRecognizerSF`` on real ArcFace chips, and the backbone
built on it (preprocessing, head, stages, chip geometry)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from facegate.components.core.images import load_image
from facegate.components.core.paths import datasets_root
from facegate.components.core.weights import weight_path
from facegate.components.embedding.backbones import SFaceBackbone, chip_geometry
from facegate.components.embedding.model import EmbeddingModel, embed_chips
from facegate.components.embedding.sface import SFaceFormatError, SFaceNet, check_graph, load_sface
from facegate.components.faces.align import arcface_chip
from facegate.components.faces.detectors import YuNetDetector

TOLERANCE = 1e-4  # max abs difference, raw 128-d outputs (norms ~11-14)
PEOPLE = {"George_W_Bush": 3, "Colin_Powell": 2, "Serena_Williams": 2, "AJ_Cook": 1}  # name -> images


@pytest.fixture(scope="module")
def chips_and_names() -> tuple[np.ndarray, list[str]]:
    lfw = datasets_root() / "lfw"
    if not lfw.is_dir():
        pytest.skip(f"LFW not found at {lfw} (set FACEGATE_DATASETS to the datasets root)")
    detector = YuNetDetector(0, score_threshold=0.6, max_side=1280)
    chips, names = [], []
    for name, n in PEOPLE.items():
        for f in sorted((lfw / name).glob("*.jpg"))[:n]:
            image = load_image(f)
            faces = detector.detect(image)
            if faces:
                face = min(faces, key=lambda b: (b.centre[0] - 125) ** 2 + (b.centre[1] - 125) ** 2)
                chips.append(arcface_chip(image, face.landmarks))
                names.append(name)
    if len(chips) < 6:
        pytest.skip(f"only {len(chips)} faces found among {PEOPLE} under {lfw}")
    return np.stack(chips), names


@pytest.fixture(scope="module")
def opencv_features(chips_and_names) -> np.ndarray:
    recognizer = cv2.FaceRecognizerSF.create(str(weight_path("sface_2021dec")), "")
    # FaceRecognizerSF takes BGR chips (alignCrop's output) and swaps them to RGB itself
    return np.stack([recognizer.feature(np.ascontiguousarray(c[..., ::-1]))[0] for c in chips_and_names[0]])


@pytest.fixture(scope="module")
def sface_model() -> EmbeddingModel:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return EmbeddingModel(SFaceBackbone()).eval()


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_port_matches_opencv_raw_outputs(chips_and_names, opencv_features):
    net = load_sface(weight_path("sface_2021dec"))
    x = torch.from_numpy(chips_and_names[0]).permute(0, 3, 1, 2).float()  # RGB 0..255
    with torch.inference_mode():
        raw = net.embed(x).numpy()
    assert raw.shape == opencv_features.shape == (len(x), 128)
    diff = np.abs(raw - opencv_features).max()
    assert diff < TOLERANCE, f"max abs diff {diff:.3g} vs OpenCV (raw)"
    assert np.linalg.norm(raw, axis=1).min() > 5  # raw like OpenCV's feature(): not unit length
    # the graph's own input normalisation, read from its initialisers
    assert float(net.input_mean) == 127.5 and float(net.input_scale) == 1 / 128
    with torch.inference_mode():  # channel order matters: BGR input is a different face to the network
        bgr = net.embed(x[:2].flip(1)).numpy()
    assert np.abs(_unit(bgr) - _unit(opencv_features[:2])).max() > 100 * TOLERANCE


def test_embedding_model_on_sface_matches_opencv_normalised(chips_and_names, opencv_features, sface_model):
    emb = embed_chips(sface_model, chips_and_names[0])
    diff = np.abs(emb - _unit(opencv_features)).max()
    assert diff < TOLERANCE, f"max abs diff {diff:.3g} vs OpenCV (L2-normalised)"
    # same person closer than different people (cosine on unit vectors)
    names = np.array(chips_and_names[1])
    sim = emb @ emb.T
    same = (names[:, None] == names[None, :]) & ~np.eye(len(names), dtype=bool)
    assert sim[same].min() > sim[names[:, None] != names[None, :]].max()


def test_backbone_interface(sface_model):
    backbone = sface_model.backbone
    assert backbone.chip_geometry == chip_geometry("sface") == "arcface_112"
    assert chip_geometry("dlib_resnet") == "dlib_150"
    assert backbone.feature_dim == 49 * 128 and backbone.input_size == 112  # the 7x7 positions' shares
    # the head sums the shares with SFace's bias, gates at 1 and the identity after: SFace's own embedding
    torch.testing.assert_close(sface_model.head.bias, backbone.net.fc.bias)
    torch.testing.assert_close(sface_model.head.linear.weight, torch.eye(128))
    shares = torch.randn(3, 49 * 128)
    assert torch.equal(sface_model.head.gates(shares), torch.ones(3, 49))
    stages = backbone.stages()
    assert len(stages) == 14
    backbone.freeze_all_but_last(2)
    trainable = {n.split(".")[2] for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable == {"12", "13", "weight", "bias"}  # net.blocks.12, net.blocks.13, net.bn1.weight/bias
    assert all(p.requires_grad for p in backbone.net.bn1.parameters())
    assert not any(p.requires_grad for p in backbone.net.blocks[11].parameters())
    backbone.train()
    assert not backbone.net.blocks[0].training and backbone.net.blocks[13].training
    backbone.freeze_all_but_last(len(stages))
    backbone.eval()
    # 150x150 chips are resized to the network's 112
    x = backbone.preprocess(torch.zeros(2, 150, 150, 3, dtype=torch.uint8))
    assert x.shape == (2, 3, 112, 112)


def test_a_different_graph_is_refused():
    import onnx

    path = weight_path("sface_2021dec")
    model = onnx.load(str(path))
    check_graph(model.graph, path)  # the shipped file passes
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and n.input[1] == "conv_4_dw_conv2d_weight")
    next(a for a in conv.attribute if a.name == "strides").ints[:] = [2, 2]
    with pytest.raises(SFaceFormatError, match="conv_4_dw"):
        check_graph(model.graph, path)
    assert isinstance(SFaceNet().blocks[3].dw.conv, torch.nn.Conv2d)
