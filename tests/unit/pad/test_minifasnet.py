"""The MiniFASNet port: strict loading of the shipped state dicts, the typed weights error, the source's
crop geometry and input convention, and the source's example frames through the product's detector."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from facegate.components.core.errors import WeightFileError
from facegate.components.core.images import load_image
from facegate.components.core.paths import weights_root
from facegate.components.core.settings import load_settings
from facegate.components.core.weights import ROOT_WEIGHTS, root_weight_path, sha256_file
from facegate.components.faces.detectors import detector_from_settings
from facegate.components.faces.types import FaceBox
from facegate.components.pad.minifasnet import (
    LIVE_CLASS,
    V1SE_SPEC,
    V2_SPEC,
    MiniFASNet,
    PadNet,
    crop_face,
    load_minifasnet,
    load_pad_net,
    source_box,
    source_crop_box,
    to_input_tensor,
)
from facegate.components.pad.models import make_pad_model

MINIFAS = weights_root() / "minifasnet"
needs_weights = pytest.mark.skipif(
    not (MINIFAS / "2.7_80x80_MiniFASNetV2.pth").is_file(),
    reason=f"MiniFASNet weights not under {MINIFAS} (set FACEGATE_WEIGHTS)",
)


# --- weights --------------------------------------------------------------------------------------------


@needs_weights
@pytest.mark.parametrize("spec", [V2_SPEC, V1SE_SPEC], ids=lambda s: s.name)
def test_state_dict_loads_strict_and_keys_match_file(spec) -> None:
    model = load_minifasnet(spec)  # strict=True inside: any missing or unexpected key raises
    raw = torch.load(root_weight_path(spec.weights), map_location="cpu", weights_only=True)
    assert all(k.startswith("module.") for k in raw)  # the weights README's fact about the files
    assert {k.removeprefix("module.") for k in raw} == set(model.state_dict())
    assert not model.training
    with torch.inference_mode():
        assert model(torch.zeros(2, 3, *spec.input_hw)).shape == (2, 3)


@needs_weights
def test_state_dict_without_module_prefix_also_loads(tmp_path: Path) -> None:
    raw = torch.load(root_weight_path("minifasnet_v2"), map_location="cpu", weights_only=True)
    path = tmp_path / "plain.pth"
    torch.save({k.removeprefix("module."): v for k, v in raw.items()}, path)
    load_minifasnet(V2_SPEC, path, expected_sha256=sha256_file(path))


@needs_weights
def test_corrupted_weights_are_one_typed_error_naming_file_and_sha(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "weights"
    (root / "minifasnet").mkdir(parents=True)
    bad = root / ROOT_WEIGHTS["minifasnet_v2"].relpath
    shutil.copyfile(MINIFAS / "2.7_80x80_MiniFASNetV2.pth", bad)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    monkeypatch.setenv("FACEGATE_WEIGHTS", str(root))
    with pytest.raises(WeightFileError) as info:
        load_minifasnet(V2_SPEC)
    err = info.value
    assert err.path == str(bad) and err.expected_sha256 == V2_SPEC.sha256
    assert err.actual_sha256 and err.actual_sha256 != V2_SPEC.sha256
    assert V2_SPEC.sha256 in err.message and str(bad) in err.message and err.code == "bad_weights_file"


def test_missing_weights_are_the_same_typed_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FACEGATE_WEIGHTS", str(tmp_path))
    for name in ("minifasnet_pair", "minifasnet_v1se"):
        with pytest.raises(WeightFileError) as info:
            make_pad_model(name)
        assert info.value.actual_sha256 is None and "missing" in info.value.message
        assert info.value.path.startswith(str(tmp_path)) and info.value.expected_sha256 in info.value.message


# --- crop geometry (expected boxes worked out by hand from the source's rules) ----------------------------


@pytest.mark.parametrize(
    "wh, bbox, scale, expected",
    [
        ((640, 480), (300, 200, 100, 120), 2.7, (215, 98, 485, 422)),  # inside: 270x324 about (350, 260)
        ((640, 480), (10, 20, 100, 100), 4.0, (0, 0, 400, 400)),  # off the top-left: shifted, size kept
        ((601, 401), (500, 250, 160, 160), 4.0, (200, 0, 600, 400)),  # scale capped at 400/160 = 2.5
        ((640, 480), (101, 57, 83, 97), 2.7, (30, 0, 254, 261)),  # fractional: truncated corners
    ],
)
def test_source_crop_box(wh, bbox, scale, expected) -> None:
    assert source_crop_box(wh, bbox, scale) == expected


def test_crop_is_the_inclusive_slice_in_bgr_0_255_whatever_the_frame_order() -> None:
    h, w = 480, 640
    yy, xx = np.mgrid[0:h, 0:w]
    bgr = np.dstack([(xx % 256), (yy % 256), ((xx + yy) % 256)]).astype(np.uint8)
    spec = dataclasses.replace(V2_SPEC, input_hw=(325, 271))  # the crop's own size: no resampling
    patch = crop_face(bgr, (300, 200, 100, 120), spec)
    np.testing.assert_array_equal(patch, bgr[98:423, 215:486])
    np.testing.assert_array_equal(crop_face(bgr[..., ::-1].copy(), (300, 200, 100, 120), spec, rgb=True), patch)
    x = to_input_tensor(patch)
    assert x.dtype == torch.float32 and x.shape == (1, 3, 325, 271)
    assert x[0, 0, 0, 0].item() == 215.0 and x[0, 1, 0, 0].item() == 98.0  # channel 0 is B; not divided by 255
    assert crop_face(bgr, (300, 200, 100, 120), V2_SPEC).shape == (80, 80, 3)


def test_facebox_to_the_source_box_convention() -> None:
    assert source_box(FaceBox(10, 20, 110, 141)) == (10, 20, 101, 122)  # w = right - left + 1


def test_squeeze_excite_only_where_trained() -> None:
    v2, v1se = MiniFASNet(V2_SPEC), MiniFASNet(V1SE_SPEC)
    assert not any("se_module" in k for k in v2.state_dict())
    se_blocks = sorted({k.split(".se_module")[0] for k in v1se.state_dict() if "se_module" in k})
    assert se_blocks == ["conv_3.model.3", "conv_4.model.5", "conv_5.model.1"]


def test_trunk_then_the_rest_is_the_whole_network() -> None:
    torch.manual_seed(0)
    net = MiniFASNet(V1SE_SPEC).eval()
    x = torch.rand(2, 3, 80, 80) * 255
    with torch.inference_mode():
        for stop in (0, 5, 7, 8):
            torch.testing.assert_close(net.forward_from(net.trunk(x, stop), stop), net(x))


def test_pair_fuses_by_averaging_the_members_softmax() -> None:
    torch.manual_seed(0)
    pair = PadNet((V2_SPEC, V1SE_SPEC)).eval()
    xs = [torch.rand(3, 3, 80, 80) * 255 for _ in range(2)]
    with torch.inference_mode():
        expected = sum(torch.softmax(m(x), 1) for m, x in zip(pair.members, xs)) / 2
        torch.testing.assert_close(pair(*xs), expected)


# --- the source's example frames, through the product's detector ---------------------------------------


@needs_weights
@pytest.mark.parametrize("name, live", [("image_T1.jpg", True), ("image_F1.jpg", False), ("image_F2.jpg", False)])
def test_example_frames(name: str, live: bool) -> None:
    frame = load_image(MINIFAS / "samples" / name)
    boxes = detector_from_settings(load_settings().faces, "yunet").detect(frame)
    assert boxes
    net = load_pad_net((V2_SPEC, V1SE_SPEC))
    box = source_box(boxes[0])
    crops = [to_input_tensor(crop_face(frame, box, s, rgb=True)) for s in net.specs]
    with torch.inference_mode():
        probs = net(*crops)[0].numpy()
    assert np.isclose(probs.sum(), 1.0)
    assert (int(np.argmax(probs)) == LIVE_CLASS) == live  # the source's own decision rule
    assert probs[LIVE_CLASS] > 0.99 if live else probs[LIVE_CLASS] < 0.3
