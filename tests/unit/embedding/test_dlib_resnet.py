"""The torch port of dlib's face descriptor: byte-level parser checks and a comparison with dlib itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facegate.components.embedding.dlib_dat import (
    Affine,
    Con,
    DlibFormatError,
    DlibStream,
    Fc,
    Pool,
    Relu,
    TagOrSkip,
    parse_dlib_dat,
    parse_dlib_net,
)
from facegate.components.embedding.dlib_resnet import (
    DlibResNet,
    default_model_path,
    face_recognition_models_file,
    l2_normalize,
    load_dlib_resnet,
)
from tests.conftest import SHARED_DATASETS, requires_dataset

N_FACES = 50
TOLERANCE = 1e-3


# --------------------------------------------------------------------------------------------------
# Hand-made bytes, written the way dlib's serialize.h writes them.


def enc_int(v: int) -> bytes:
    mag = abs(v)
    body = mag.to_bytes(max(1, (mag.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if v < 0 else 0)]) + body


def enc_float(v: float) -> bytes:
    """float_details of a float32: 24-bit mantissa, low zero bytes shifted off, mantissa then exponent."""
    frac, exp = math.frexp(float(np.float32(v)))
    mantissa, exponent = int(frac * (1 << 24)), exp - 24
    for _ in range(8):
        if mantissa & 0xFF:
            break
        mantissa >>= 8
        exponent += 8
    return enc_int(mantissa) + enc_int(exponent)


def enc_str(s: str) -> bytes:
    return enc_int(len(s)) + s.encode()


def enc_tensor(a: np.ndarray) -> bytes:
    dims = tuple(a.shape) + (1,) * (4 - a.ndim)
    return enc_int(2) + b"".join(enc_int(d) for d in dims) + a.astype("<f4").tobytes()


def enc_alias(*dims: int) -> bytes:
    dims = dims + (1,) * (4 - len(dims))
    return enc_int(1) + b"".join(enc_int(d) for d in dims)


EMPTY = enc_tensor(np.zeros((0, 0, 0, 0), np.float32))
STATE = b"100" + EMPTY * 3  # three bools + x_grad, cached_output, params_grad/grad_final
MULTS = enc_float(1.0) * 4


def test_int_decoding_matches_dlib_pack_int() -> None:
    # 0 -> 01 00; 300 -> 02 2c 01; -5 -> 81 05; int64 max -> 08 ff..7f
    s = DlibStream(b"\x01\x00" + b"\x02\x2c\x01" + b"\x81\x05" + b"\x08" + b"\xff" * 7 + b"\x7f")
    assert s.read_int() == 0
    assert s.read_int() == 300
    assert s.read_int() == -5
    assert s.read_int() == 2**63 - 1
    assert s.at_end()
    for v in (0, 1, 255, 256, -1, -70000, 2**40):
        assert DlibStream(enc_int(v)).read_int() == v


def test_float_decoding_is_mantissa_then_exponent() -> None:
    # The loss margin 0.04 as stored in dlib_face_recognition_resnet_model_v1.dat:
    # mantissa 0xa3d70a (03 0a d7 a3), exponent -28 (81 1c).
    s = DlibStream(b"\x03\x0a\xd7\xa3\x81\x1c")
    assert s.read_float32() == float(np.float32(0.04))
    for v in (0.0, 1.0, -2.5, 122.782, 1e-30, 3.4e38):
        assert DlibStream(enc_float(v)).read_float32() == float(np.float32(v))
    special = b"\x01\x00\x02\x00\x7d" + b"\x01\x00\x02\x01\x7d" + b"\x01\x00\x02\x02\x7d"
    s = DlibStream(special)  # exponents 32000, 32001, 32002
    assert s.read_float() == math.inf
    assert s.read_float() == -math.inf
    assert math.isnan(s.read_float())


def test_bool_string_and_tensor() -> None:
    data = b"10" + enc_str("relu_") + enc_tensor(np.arange(6, dtype=np.float32).reshape(1, 2, 3))
    s = DlibStream(data)
    assert s.read_bool() is True
    assert s.read_bool() is False
    assert s.read_string() == "relu_"
    t = s.read_tensor()
    assert t.shape == (1, 2, 3, 1)
    assert t.ravel().tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("data", "offset", "fragment"),
    [
        (b"\x02\x01", 1, "unexpected end"),  # 2 bytes announced, 1 present
        (b"\x03\x01\x02\x03", 0, "more than its 2-byte type"),  # int16 exponent with 3 bytes
        (b"\x31\x01", 0, "reserved bits"),
    ],
)
def test_malformed_ints_name_source_and_offset(data: bytes, offset: int, fragment: str) -> None:
    s = DlibStream(data, source="hand.dat")
    with pytest.raises(DlibFormatError) as err:
        s.read_int(size=2)
    assert err.value.offset == offset
    assert "hand.dat" in str(err.value) and fragment in str(err.value)
    assert isinstance(err.value, ValueError)


def tiny_net_bytes(rng: np.random.Generator) -> tuple[bytes, dict[str, np.ndarray]]:
    """loss_metric< fc_no_bias<3, avg_pool_everything< relu< affine< con<4,3,3,1,1, input<8> >>>>>>."""
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    b = rng.normal(size=4).astype(np.float32)
    g = rng.normal(size=4).astype(np.float32)
    beta = rng.normal(size=4).astype(np.float32)
    fc = rng.normal(size=(4, 3)).astype(np.float32)
    con = (
        enc_str("con_4")
        + enc_tensor(np.concatenate([w.ravel(), b]).reshape(-1, 1))
        + enc_int(4)
        + enc_int(3)
        + enc_int(3)
        + enc_int(1)
        + enc_int(1)
        + enc_int(1)
        + enc_int(1)
        + enc_alias(4, 3, 3, 3)
        + enc_alias(1, 4)
        + MULTS
    )
    affine = (
        enc_str("affine_")
        + enc_tensor(np.concatenate([g, beta]).reshape(-1, 1))
        + enc_alias(1, 4)
        + enc_alias(1, 4)
        + enc_int(0)
    )
    pool = enc_str("avg_pool_2") + b"".join(enc_int(v) for v in (0, 0, 1, 1, 0, 0))
    fcl = (
        enc_str("fc_2")
        + enc_int(3)
        + enc_int(4)
        + enc_tensor(fc.reshape(-1, 1))
        + enc_alias(4, 3)
        + enc_alias(0, 0, 0, 0)
        + enc_int(1)
        + MULTS
    )
    inp = (
        enc_str("input_rgb_image_sized")
        + enc_float(122.782)
        + enc_float(117.001)
        + enc_float(104.298)
        + enc_int(8)
        + enc_int(8)
    )
    data = (
        enc_int(1)
        + enc_str("loss_metric_2")
        + enc_float(0.04)
        + enc_float(0.6)
        + enc_int(2) * 4
        + enc_int(3)  # fc, avg_pool, relu, affine; con over the input (v3)
        + inp
        + con
        + STATE
        + enc_int(1)  # sample_expansion_factor
        + affine
        + STATE
        + enc_str("relu_")
        + STATE
        + pool
        + STATE
        + fcl
        + STATE
    )
    return data, {"w": w, "b": b, "g": g, "beta": beta, "fc": fc}


def test_tiny_handmade_net_parses_and_runs() -> None:
    rng = np.random.default_rng(0)
    data, p = tiny_net_bytes(rng)
    net = parse_dlib_net(data, "tiny.dat")
    assert [type(r) for r in net.layers] == [Con, Affine, Relu, Pool, Fc]
    assert net.input.nr == 8 and net.input.avg_rgb[0] == float(np.float32(122.782))
    assert net.loss is not None and net.loss.dist_thresh == float(np.float32(0.6))
    con = net.layers[0]
    assert isinstance(con, Con) and con.padding == (1, 1) and np.array_equal(con.filters, p["w"])

    x = torch.from_numpy(rng.integers(0, 256, size=(2, 3, 8, 8)).astype(np.uint8))
    xf = (x.float() - torch.tensor(net.input.avg_rgb).view(1, 3, 1, 1)) / 256
    y = torch.nn.functional.conv2d(xf, torch.from_numpy(p["w"]), torch.from_numpy(p["b"]), padding=1)
    y = torch.relu(y * torch.from_numpy(p["g"]).view(1, 4, 1, 1) + torch.from_numpy(p["beta"]).view(1, 4, 1, 1))
    expected = y.mean(dim=(2, 3)) @ torch.from_numpy(p["fc"])
    for fuse in (True, False):
        model = DlibResNet(net, fuse_affine=fuse).eval()
        with torch.inference_mode():
            assert torch.allclose(model(x), expected, atol=1e-5)


def test_truncated_and_trailing_bytes_are_typed_errors() -> None:
    data, _ = tiny_net_bytes(np.random.default_rng(1))
    with pytest.raises(DlibFormatError, match=r"tiny\.dat: byte offset \d+: unexpected end"):
        parse_dlib_net(data[:-10], "tiny.dat")
    with pytest.raises(DlibFormatError, match="trailing bytes") as err:
        parse_dlib_net(data + b"\x00", "tiny.dat")
    assert err.value.offset == len(data)
    with pytest.raises(DlibFormatError, match="add_loss_layer version"):
        parse_dlib_net(b"\x01\x07", "x.dat")


def test_real_file_structure() -> None:
    net = parse_dlib_dat(default_model_path())
    kinds = [type(r).__name__ for r in net.layers]
    assert kinds.count("Con") == 29 and kinds.count("TagOrSkip") == 22 and kinds[-1] == "Fc"
    assert net.input.nr == net.input.nc == 150
    assert net.input.avg_rgb == tuple(float(np.float32(v)) for v in (122.782, 117.001, 104.298))
    fc = net.layers[-1]
    assert isinstance(fc, Fc) and fc.weights.shape == (256, 128) and fc.bias is None
    assert all(isinstance(r, TagOrSkip) or r.offset > 0 for r in net.layers)


# --------------------------------------------------------------------------------------------------
# Against dlib on real aligned faces


@pytest.fixture(scope="module")
def lfw_chips_and_reference() -> tuple[np.ndarray, np.ndarray]:
    lfw = SHARED_DATASETS / "lfw"
    import dlib

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(face_recognition_models_file("shape_predictor_5_face_landmarks.dat")))
    facerec = dlib.face_recognition_model_v1(str(default_model_path()))
    chips: list[np.ndarray] = []
    for path in sorted(lfw.rglob("*.jpg")):
        img = dlib.load_rgb_image(str(path))
        dets = detector(img, 1)
        if not dets:
            continue
        shape = predictor(img, dets[0])
        chips.append(dlib.get_face_chip(img, shape, size=150, padding=0.25))
        if len(chips) == N_FACES:
            break
    assert len(chips) == N_FACES, f"only {len(chips)} faces found under {lfw}"
    reference = np.stack([np.array(facerec.compute_face_descriptor(c)) for c in chips])
    return np.stack(chips), reference


@requires_dataset("lfw")
def test_torch_port_matches_dlib_on_lfw(lfw_chips_and_reference: tuple[np.ndarray, np.ndarray]) -> None:
    chips, reference = lfw_chips_and_reference
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = load_dlib_resnet()
    x = torch.from_numpy(chips).permute(0, 3, 1, 2)  # N x 3 x 150 x 150 uint8 RGB
    with torch.inference_mode():
        out = model(x).double().numpy()
        out_cl = model(x.float().contiguous(memory_format=torch.channels_last)).double().numpy()
    assert out.shape == (N_FACES, 128)
    diff = np.abs(out - reference).max()
    assert diff <= TOLERANCE, f"max abs diff {diff:.3g} vs dlib"
    assert np.abs(out_cl - reference).max() <= TOLERANCE
    # raw, like dlib: not unit length; the helper normalises separately
    assert not np.allclose(np.linalg.norm(out, axis=1), 1.0)
    unit = l2_normalize(torch.from_numpy(out))
    assert torch.allclose(unit.norm(dim=1), torch.ones(N_FACES, dtype=torch.float64))
