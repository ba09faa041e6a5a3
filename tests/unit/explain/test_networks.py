"""The served models' backbone networks: layer names, receptive fields worked by hand on the real graphs,
each member's own chip out of a fused model's paired chip, and the seeded samples of training images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facegate.components.core.errors import ExplainUnavailable, UnknownLayer
from facegate.components.embedding.backbones import make_backbone
from facegate.components.embedding.model import EmbeddingModel
from facegate.components.explain.images import chip_images, detection_images, seeded_sample
from facegate.components.explain.networks import (
    DetectorInput,
    detector_network,
    embedder_networks,
    pad_networks,
    resolve_layers,
)
from facegate.components.explain.receptive_field import trace_geometry
from facegate.components.faces.align import ARCFACE_OFFSET, ARCFACE_SIZE, CHIP_SIZE
from facegate.components.networks.mobilenet_v2 import MobileNetV2
from facegate.components.pad.minifasnet import V1SE_SPEC, V2_SPEC, PadNet


@pytest.fixture(scope="module")
def fused():
    torch.set_num_threads(1)
    return embedder_networks(EmbeddingModel(make_backbone("dlib_resnet+sface")).eval())


def test_fused_embedder_has_one_network_per_member_each_seeing_its_own_chip(fused):
    dlib, sface = fused
    assert (dlib.name, sface.name) == ("dlib_resnet", "sface")
    paired = np.zeros((CHIP_SIZE, CHIP_SIZE, 6), np.uint8)
    paired[..., :3] = 10
    paired[..., 3:] = 200
    assert dlib.image(paired).shape == (150, 150, 3) and dlib.image(paired).max() == 10
    assert sface.image(paired).shape == (ARCFACE_SIZE, ARCFACE_SIZE, 3) and sface.image(paired).min() == 200
    assert ARCFACE_OFFSET == (150 - 112) // 2
    assert dlib.to_input(dlib.image(paired)).shape == (3, 150, 150)
    assert sface.to_input(sface.image(paired)).shape == (3, 112, 112)


def test_receptive_fields_of_the_real_backbones_by_hand(fused):
    dlib, sface = fused
    # dlib: conv 7x7/2 -> rf 7, jump 2; max pool 3x3/2 -> 7 + 2*2 = 11, jump 4; a residual block's two
    # 3x3 convs add 2 x 2 x 4 = 16 (blocks.0: 27, blocks.1: 43); blocks.3 goes down: 3x3/2 + 3x3 at jump 4
    # then 8: 59 + 2*4 + 2*8 = 83, jump 8
    x = dlib.to_input(np.zeros((150, 150, 3), np.uint8))
    geos = trace_geometry(dlib.module, x, ["stem.2", "blocks.0", "blocks.1", "blocks.3"], forward=dlib.forward)
    assert [geos[k][0].rf[0] for k in ("stem.2", "blocks.0", "blocks.1", "blocks.3")] == [11, 27, 43, 83]
    assert [geos[k][0].jump[0] for k in ("stem.2", "blocks.3")] == [4, 8]
    # SFace: conv 3x3 -> 3; blocks.1 (depthwise 3x3 + pointwise) -> 5; blocks.2 (3x3/2) -> 7, jump 2
    x = sface.to_input(np.zeros((112, 112, 3), np.uint8))
    geos = trace_geometry(sface.module, x, ["blocks.0", "blocks.1", "blocks.2"], forward=sface.forward)
    assert [geos[k][0].rf[0] for k in ("blocks.0", "blocks.1", "blocks.2")] == [3, 5, 7]
    assert geos["blocks.2"][0].jump[0] == 2


def test_layer_names_are_qualified_by_network_and_checked_before_any_image(fused):
    defaults = {"dlib_resnet": ["stem.2"], "sface": ["blocks.1"]}
    assert resolve_layers(fused, None, defaults) == {"dlib_resnet": ["stem.2"], "sface": ["blocks.1"]}
    assert resolve_layers(fused, ["sface:blocks.3", "dlib_resnet:blocks.1"], defaults) == {
        "dlib_resnet": ["blocks.1"],
        "sface": ["blocks.3"],
    }
    with pytest.raises(UnknownLayer, match="blocks.99' in sface"):
        resolve_layers(fused, ["sface:blocks.99"], defaults)
    with pytest.raises(UnknownLayer, match="'blocks.1' in dlib_resnet\\+sface"):  # two networks: say which
        resolve_layers(fused, ["blocks.1"], defaults)
    with pytest.raises(UnknownLayer, match="dlib_resnet:"):
        resolve_layers(fused, ["resnet50:layer1"], defaults)


def test_detector_network():
    net = detector_network(None, lambda: MobileNetV2().eval())  # no trained detector: ImageNet's network
    assert net.name == "mobilenet_v2" and net.to_input(np.zeros((96, 96, 3), np.uint8)).shape == (3, 96, 96)
    assert resolve_layers([net], ["features.3"], {}) == {"mobilenet_v2": ["features.3"]}  # one network: bare names
    with pytest.raises(ExplainUnavailable) as e:
        detector_network(torch.nn.Linear(2, 2), lambda: MobileNetV2())
    assert e.value.code == "explain_unavailable" and e.value.http_status == 501


def test_pad_networks_each_see_their_own_crop_in_bgr():
    v2, v1se = pad_networks(PadNet((V2_SPEC, V1SE_SPEC)).eval())
    assert (v2.name, v1se.name) == ("minifasnet_v2", "minifasnet_v1se")
    item = np.zeros((80, 80, 6), np.uint8)
    item[..., 0] = 200  # member 0's crop is red (RGB)
    item[..., 5] = 100  # member 1's crop is blue
    assert v2.image(item)[..., 0].max() == 200 and v1se.image(item)[..., 2].max() == 100
    x = v2.to_input(v2.image(item))
    assert x.shape == (3, 80, 80) and x[2].max() == 200 and x[0].max() == 0  # BGR 0..255, as the source trains
    geos = trace_geometry(v2.module, x, ["conv1", "conv2_dw", "conv_23"], forward=v2.forward)
    # conv 3x3/2 -> 3, jump 2; depthwise 3x3 -> 3 + 2*2 = 7; the stride-2 bottleneck's 3x3/2 -> 7 + 2*2 = 11
    assert [geos[k][0].rf[0] for k in ("conv1", "conv2_dw", "conv_23")] == [3, 7, 11]
    with pytest.raises(ExplainUnavailable):
        pad_networks(None)


def test_samples_are_seeded_and_lazy():
    a, b = seeded_sample(100, 10, 7), seeded_sample(100, 10, 7)
    assert (a == b).all() and (np.diff(a) > 0).all() and len(seeded_sample(5, 10, 7)) == 5
    chips = np.arange(20 * 4 * 4 * 3, dtype=np.uint8).reshape(20, 4, 4, 3) % 251
    rows = np.arange(0, 20, 2)  # the training rows
    images = chip_images(chips, [f"p{i}" for i in range(20)], rows, 4, seed=1, description="d")
    assert len(images) == 4 and all(int(n[1:]) % 2 == 0 for n in images.names)
    assert (images.item(0) == chips[int(images.names[0][1:])]).all()


def test_detector_crops_every_face_of_the_sampled_images():
    reads = []

    def load(j):
        reads.append(j)
        return np.full((100, 200, 3), j * 40, np.uint8)

    boxes = [[{"xmin": 10, "ymin": 10, "xmax": 30, "ymax": 40}], [[50, 20, 80, 60], [100, 10, 120, 30]], []]
    crops = detection_images(load, ["a.jpg", "b.jpg", "c.jpg"], boxes, DetectorInput("crops", 32, 1.3), None, 0, "d")
    assert len(crops) == 3 and crops.names[1].startswith("b.jpg#50,20,80,60")
    assert [crops.item(i).shape for i in range(3)] == [(32, 32, 3)] * 3 and crops.item(2).mean() == 40
    assert reads == [0, 1]  # faces sorted by image: each image read once
    boxed = detection_images(load, ["a.jpg", "b.jpg", "c.jpg"], boxes, DetectorInput("letterbox", 64), 2, 0, "d")
    assert len(boxed) == 2 and boxed.item(0).shape == (64, 64, 3)
