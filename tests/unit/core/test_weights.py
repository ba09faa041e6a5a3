import dataclasses

import pytest

from facegate.components.core import weights
from facegate.components.core.errors import WeightsError


def test_every_weight_file_found_and_verified():
    paths = weights.verify_all()
    assert set(paths) == set(weights.WEIGHTS) | set(weights.EMBEDDED)


def test_embedded_bytes_are_checked(monkeypatch, tmp_path):
    onnx_bytes = weights.embedded_bytes("retinaface_mnet025")
    assert onnx_bytes[:2] == b"\x08\x06"  # an ONNX ModelProto (ir_version 6)
    fake = tmp_path / "weights.py"
    fake.write_text("WEIGHTS = b'not the model'\n")
    monkeypatch.setattr(weights, "_package_dir", lambda package: tmp_path)
    monkeypatch.setitem(
        weights.WEIGHTS, "fake_py", weights.WeightFile("x", "weights.py", weights.sha256_file(fake), "x")
    )
    monkeypatch.setitem(weights.EMBEDDED, "fake", ("fake_py", "WEIGHTS", "0" * 64))
    with pytest.raises(WeightsError, match="bytes sha256 .* does not match"):
        weights.embedded_bytes("fake")


def test_sha_mismatch_is_refused(monkeypatch):
    spec = weights.WEIGHTS["mtcnn_pnet"]
    monkeypatch.setitem(weights.WEIGHTS, "tampered", dataclasses.replace(spec, sha256="0" * 64))
    with pytest.raises(WeightsError, match="does not match"):
        weights.weight_path("tampered")


def test_unknown_name_and_package(monkeypatch):
    with pytest.raises(WeightsError, match="unknown weight file"):
        weights.weight_path("nope")
    monkeypatch.setitem(weights.WEIGHTS, "ghost", weights.WeightFile("no_such_pkg_xyz", "a", "0", "x"))
    with pytest.raises(WeightsError, match="not installed"):
        weights.weight_path("ghost")
