"""``embedding.backend: openvino`` (facegate.components.embedding.openvino_runtime): embeddings of real LFW
chips within a hair of torch float32 ones, the IR converted once per weights and reused, torch with one
warning when OpenVINO cannot take a backbone, and nothing sent by OpenVINO's telemetry."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from facegate.components.core.paths import repo_root
from facegate.components.embedding import openvino_runtime as rt
from facegate.components.embedding.backbones import make_backbone
from facegate.components.embedding.members import member_embed_chips, member_slice
from facegate.components.embedding.model import EmbeddingModel, embed_chips
from facegate.components.embedding.precision import native_bfloat16, set_precision
from tests.conftest import requires_openvino, shared_dataset

# Measured on 200 LFW chips (2026-12-07): smallest cosine to torch float32 of OpenVINO bf16 0.99987 (SFace
# alone), 0.99999 (dlib), 0.99995 (fused, flip TTA); torch bf16 0.99978 / 0.99997 / 0.99993; OpenVINO
# f32 1.000000 on all three (6 decimals).
BF16_MIN_COSINE = 0.9995
F32_MIN_COSINE = 0.99999
OPENVINO_IMPORT = re.compile(r"^\s*(?:import|from)\s+openvino(?:[\s.]|$)", re.M)


@pytest.fixture
def state_home(tmp_path, monkeypatch):
    """A state folder of the test's own: the IR cache starts empty."""
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("FACEGATE_IR_CACHE", raising=False)  # the state folder's own cache
    monkeypatch.setattr(rt, "_warned", set())
    return tmp_path / "state"


@pytest.fixture
def conversions(monkeypatch):
    """Counts the conversions (``convert`` calls), still converting."""
    calls: list[str] = []
    real = rt.convert

    def counting(export, input_size):
        calls.append(type(export).__name__)
        return real(export, input_size)

    monkeypatch.setattr(rt, "convert", counting)
    return calls


def random_sface():
    """SFace's architecture with seeded random weights (no ONNX parsing: fast), in eval mode."""
    torch.manual_seed(0)
    return make_backbone("sface", pretrained=False).eval()


def features(backbone, x):
    with torch.inference_mode():
        return backbone.features(x)


# ------------------------------------------------------------------------------ settings and config


def test_backend_setting_is_checked():
    from facegate.components.core.errors import SettingsError
    from facegate.components.core.settings import load_settings

    assert load_settings().embedding.backend in rt.BACKENDS
    with pytest.raises(SettingsError, match="embedding.backend"):
        load_settings(overrides={"embedding": {"backend": "onnxruntime"}})
    with pytest.raises(ValueError, match="embedding.backend"):
        rt.set_backend(random_sface(), "tensorrt")


def test_compile_config_follows_torch_threads_and_precision(monkeypatch):
    monkeypatch.setattr(rt, "cpu_cores", lambda: 2)
    # a CLI command: one stream on both cores; the API (1 thread per inference slot): a stream per slot
    assert rt.compile_config("bf16", 2) == {
        "INFERENCE_PRECISION_HINT": "bf16",
        "NUM_STREAMS": 1,
        "INFERENCE_NUM_THREADS": 2,
    }
    assert rt.compile_config("f32", 1) == {
        "INFERENCE_PRECISION_HINT": "f32",
        "NUM_STREAMS": 2,
        "INFERENCE_NUM_THREADS": 2,
    }
    assert rt.precision_hint(torch.float32) == "f32"
    monkeypatch.setattr(rt, "native_bfloat16", lambda: False)
    assert rt.precision_hint(torch.bfloat16) == "f32"  # OpenVINO does not emulate bf16: f32 where it is not native
    monkeypatch.setattr(rt, "native_bfloat16", lambda: True)
    assert rt.precision_hint(torch.bfloat16) == "bf16"


# ------------------------------------------------------------------------------------ the IR cache


@requires_openvino
def test_ir_is_converted_once_per_weights_and_reused(state_home, conversions):
    a = rt.set_backend(random_sface(), "openvino")
    assert conversions == ["SFaceExport"]
    (ir,) = sorted(rt.ir_dir().glob("*.xml"))
    assert ir.is_relative_to(state_home / "cache" / "openvino") and ir.with_suffix(".bin").is_file()
    x = torch.rand(3, 3, 112, 112) * 255
    fa = features(a, x)

    b = random_sface()  # the same weights in a new module (as in another process): the IR is read back
    b.load_state_dict(a.state_dict())
    rt.set_backend(b, "openvino")
    assert conversions == ["SFaceExport"] and rt.inference_summary(b)["backend"] == "openvino"
    assert torch.equal(features(b, x), fa)

    with torch.no_grad():  # changed weights: a new fingerprint, a new conversion, the old IR kept
        b.net.bn1.bias.add_(0.5)  # shifts every position's share
    fb = features(b, x)
    assert conversions == ["SFaceExport", "SFaceExport"]
    assert len(list(rt.ir_dir().glob("*.xml"))) == 2 and not list(rt.ir_dir().glob(".*.xml"))  # no temporaries
    assert not torch.allclose(fb, fa, rtol=1e-2, atol=0)
    rt.set_backend(b, "torch")
    assert torch.allclose(features(b, x), fb, rtol=0, atol=1e-4 * fb.abs().max().item())  # these weights' features


@requires_openvino
def test_compiled_features_serve_concurrent_callers(state_home):
    b = rt.set_backend(random_sface(), "openvino")
    xs = [torch.rand(2, 3, 112, 112) * 255 for _ in range(4)]
    want = [features(b, x) for x in xs]
    got: dict[int, torch.Tensor] = {}

    def run(i: int) -> None:
        got[i] = features(b, xs[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(got[i], want[i]) for i in range(4))
    assert features(b, xs[0][:0]).shape == (0, b.feature_dim)


# ----------------------------------------------------------------------------------------- fallback


def _unavailable(*args, **kwargs):
    raise ImportError("No module named 'openvino'")


def _conversion_fails(*args, **kwargs):
    raise RuntimeError("Check 'is_conversion_successful' failed: the frontend met an unknown op")


@pytest.mark.parametrize(
    ("target", "stub", "said"),
    [("import_openvino", _unavailable, "No module named"), ("convert", _conversion_fails, "unknown op")],
)
def test_torch_with_one_warning_when_openvino_cannot_take_a_backbone(
    state_home, monkeypatch, caplog, target, stub, said
):
    monkeypatch.setattr(rt, target, stub)
    net = random_sface()
    x = torch.rand(2, 3, 112, 112) * 255
    want = features(net, x)  # torch
    with caplog.at_level(logging.WARNING, logger=rt.logger.name):
        rt.set_backend(net, "openvino")
        got = [features(net, x) for _ in range(3)]
    assert all(torch.equal(g, want) for g in got)  # the same model on torch, not another one
    warnings = [r for r in caplog.records if r.name == rt.logger.name]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "sface" in warnings[0].getMessage() and said in warnings[0].getMessage()
    summary = rt.inference_summary(net)
    assert summary["backend"] == "torch" and summary["requested"] == "openvino"
    assert said in summary["members"]["sface"]["fallback"]
    assert not list(rt.ir_dir().glob("*.xml"))


def test_training_and_autograd_stay_on_torch(state_home, conversions):
    net = rt.set_backend(random_sface(), "openvino", prepare=False).train()
    x = torch.rand(2, 3, 112, 112) * 255
    net.features(x).sum().backward()  # the training graph: no compiled copy is asked for
    assert conversions == [] and net.net.fc.weight.grad is not None


# ------------------------------------------------------------------------------------------ telemetry


@requires_openvino
def test_openvino_telemetry_sends_nothing(tmp_path):
    """Imported and converting through facegate, OpenVINO binds its no-op telemetry stub: no client id or
    consent file appears under HOME (its telemetry writes one before it sends anything)."""
    code = (
        "import torch\n"
        "from facegate.components.core.telemetry import import_openvino\n"
        "ov = import_openvino()\n"
        "import openvino.tools.ovc.telemetry_utils as t, openvino.tools.ovc.convert_impl as c\n"
        "assert t.tm.__name__.endswith('telemetry_stub') and c.tm.__name__.endswith('telemetry_stub'), t.tm\n"
        "ov.convert_model(torch.nn.Conv2d(3, 4, 3).eval(), example_input=torch.rand(1, 3, 8, 8))\n"
        "import openvino_telemetry\n"  # still importable by anyone else: only hidden during the import
    )
    env = {**os.environ, "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=repo_root(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (tmp_path / "intel").exists()


def test_every_import_of_openvino_hides_its_telemetry():
    """A module that imports openvino does it the way core/telemetry.py's import_openvino does (the others
    call that): with ``openvino_telemetry`` hidden for the import."""
    root = repo_root()
    importing = [
        path.relative_to(root).as_posix()
        for folder in ("components", "flows", "benchmarks", "facegate/cli")
        for path in sorted((root / folder).rglob("*.py"))
        if OPENVINO_IMPORT.search(path.read_text())
    ]
    assert "components/core/telemetry.py" in importing
    assert [p for p in importing if "openvino_telemetry" not in (root / p).read_text()] == []


# ------------------------------------------------------------------------------ real LFW faces


@pytest.fixture(scope="module")
def fused_and_chips(tmp_path_factory):
    from facegate.components.core.images import load_image
    from facegate.components.faces.align import PAIRED_GEOMETRY, FaceAligner
    from facegate.components.faces.detectors import YuNetDetector
    from facegate.components.faces.pipeline import FaceFinder

    lfw = shared_dataset("lfw")
    finder = FaceFinder(YuNetDetector(0, score_threshold=0.6, max_side=1280), FaceAligner(geometry=PAIRED_GEOMETRY))
    people = ("George_W_Bush", "Colin_Powell", "Serena_Williams", "Tony_Blair")
    files = [sorted((lfw / n).glob("*.jpg"))[i] for n in people for i in (0, 1)]
    chips = np.stack([finder.centre_face(load_image(f)).chip for f in files])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEGATE_HOME", str(tmp_path_factory.mktemp("state")))
        yield EmbeddingModel(make_backbone("dlib_resnet+sface")).eval(), chips


def _embeddings(model, chips, backend, precision):
    set_precision(model, precision)
    rt.set_backend(model, backend)
    out = {
        "fused": embed_chips(model, chips, flip_tta=True),
        **{m: member_embed_chips(model, chips, member_slice(model, m)) for m in ("sface", "dlib_resnet")},
    }
    summary = rt.inference_summary(model)
    rt.set_backend(model, "torch")
    set_precision(model, "float32")
    return out, summary


@requires_openvino
@pytest.mark.parametrize("precision", ["float32", "auto"])
def test_openvino_embeddings_of_real_faces_match_torch_float32(fused_and_chips, precision):
    model, chips = fused_and_chips
    ref, _ = _embeddings(model, chips, "torch", "float32")
    got, summary = _embeddings(model, chips, "openvino", precision)
    bf16 = precision == "auto" and native_bfloat16()
    assert summary["backend"] == "openvino"  # it did run OpenVINO, in the precision asked for
    assert {m["precision"] for m in summary["members"].values()} == {"bfloat16" if bf16 else "float32"}
    bound = BF16_MIN_COSINE if bf16 else F32_MIN_COSINE
    for name in ("fused", "sface", "dlib_resnet"):
        cos = np.sum(ref[name] * got[name], axis=1)
        assert cos.min() >= bound, (name, cos)
    sims = got["fused"] @ got["fused"].T
    assert np.abs(sims - ref["fused"] @ ref["fused"].T).max() < 2e-3  # scores the thresholds see
    assert sims[0, 1] > sims[0, 2] and sims[2, 3] > sims[1, 3]  # the same person still closer


def test_ir_cache_lives_under_the_state_folder(state_home):
    assert (
        rt.ir_path("0123456789abcdef", "sface")
        == Path(os.environ["FACEGATE_HOME"]).resolve()
        / "cache"
        / "openvino"
        / f"0123456789abcdef-sface-r{rt.IR_REVISION}.xml"
    )
