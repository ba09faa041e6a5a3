"""`facegate explain units` as an engineer runs it, on real LFW: the model in service (here the pretrained
fused dlib_resnet+sface: a fresh state folder has no champion), 40 training-identity images, a grid per
layer and a JSON whose receptive fields grow with depth; and a registered version's grids logged into its
MLflow run, as the retraining chain does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from facegate.components.calibration.face_sets import lfw_set
from facegate.components.core.paths import repo_root
from facegate.components.core.settings import load_settings
from facegate.components.embedding.backbones import make_backbone
from facegate.components.embedding.model import EmbeddingModel
from facegate.components.faces.chips import ChipSet
from facegate.components.lifecycle.tracking import tracked_run
from facegate.components.lifecycle.training_data import TrainingData
from facegate.components.lifecycle.unit_grids import log_embedder_grids
from tests.conftest import shared_dataset

pytestmark = pytest.mark.integration


def facegate(*args, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "facegate.cli.main", *map(str, args)],
        cwd=repo_root(),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_explain_units_of_the_embedder_on_lfw(tmp_path):
    lfw = shared_dataset("lfw")
    env = {**os.environ, "FACEGATE_HOME": str(tmp_path / "state"), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = tmp_path / "units"
    done = facegate("explain", "units", "--model", "embedder", "--images", 40, "--out", out, env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    doc = json.loads((out / "units.json").read_text())
    settings = load_settings()
    assert doc["version"].startswith("pretrained") and doc["n_images"] == 40
    assert set(doc["networks"]) == set(settings.embedding.backbone.split("+"))
    for net, sub in doc["networks"].items():
        assert list(sub["layers"]) == list(settings.explain.layers[net])  # params' layers, early -> deep
        rfs = [v["receptive_field_px"] for v in sub["layers"].values()]
        assert rfs == sorted(rfs) and len(set(rfs)) == len(rfs), (net, rfs)  # strictly growing with depth
        for layer, v in sub["layers"].items():
            assert len(v["units"]) == settings.explain.units_per_layer
            assert all(len(u["top"]) == settings.explain.top_k for u in v["units"])
            acts = [t["activation"] for t in v["units"][0]["top"]]
            assert acts == sorted(acts, reverse=True)
            x0, y0, x1, y1 = v["units"][0]["top"][0]["box_input_xyxy"]
            assert x1 - x0 == y1 - y0 == v["receptive_field_px"]
            grid = Image.open(out / v["grid"])
            assert grid.width > settings.explain.top_k * settings.explain.patch_px, layer
    assert summary["receptive_fields_px"] == doc["receptive_fields_px"] and len(summary["grids"]) == 10
    # only LFW's training identities: the ingest's identity split, read from the source folder
    face_set = lfw_set(
        lfw, settings.seed, settings.ingest.val_fraction, settings.validate_.min_images_per_train_identity
    )
    train = {str(p.relative_to(lfw)) for p, s in zip(face_set.paths, face_set.split) if s == "train"}
    shown = {
        t["image"]
        for sub in doc["networks"].values()
        for v in sub["layers"].values()
        for u in v["units"]
        for t in u["top"]
    }
    assert shown and shown <= train
    assert np.mean([len(json.dumps(v)) for v in doc["networks"].values()]) < 200_000


def test_unknown_layer_is_one_error_line(tmp_path):
    env = {**os.environ, "FACEGATE_HOME": str(tmp_path / "state")}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = facegate(
        "explain", "units", "--model", "embedder", "--layers", "sface:blocks.99", "--out", tmp_path, env=env
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error [unknown_layer]: unknown layer 'blocks.99' in sface. Did you mean: blocks.9")
    assert not (tmp_path / "units.json").exists()


def test_a_registered_versions_grids_go_to_its_run(tmp_path, monkeypatch):
    """What the retraining chain does after registering a version: the grids and units.json into the run
    its model was logged in, under explain/, with the seconds it took; nothing when params turn it off."""
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = load_settings().replace({"explain": {"mlflow_images": 12, "mlflow_units_per_layer": 2}})
    rng = np.random.default_rng(0)
    chips = rng.integers(0, 256, (16, 150, 150, 6), dtype=np.uint8)  # paired chips: dlib's and SFace's
    data = TrainingData(
        "lfw",
        ChipSet(chips, pd.DataFrame({"path": [f"lfw/p{i}.jpg" for i in range(16)]}), "k"),
        np.arange(14),
        np.arange(14, 16),
        np.zeros(14, int),
        np.zeros(2, int),
    )
    model = EmbeddingModel(make_backbone("dlib_resnet+sface"))
    with tracked_run("explain-test", "train") as run:
        pass
    warnings: list[str] = []
    seconds = log_embedder_grids(model, "facegate-embedder/1", data, run.info.run_id, settings, warnings.append)
    assert seconds is not None and seconds > 0 and not warnings
    client = mlflow.MlflowClient()
    logged = sorted(a.path for a in client.list_artifacts(run.info.run_id, "explain"))
    assert "explain/units.json" in logged and "explain/dlib_resnet_blocks.3.png" in logged
    assert len([p for p in logged if p.endswith(".png")]) == 10
    assert client.get_run(run.info.run_id).data.metrics["explain_seconds"] == pytest.approx(seconds)
    doc = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/explain/units.json"))
    assert doc["version"] == "facegate-embedder/1" and doc["n_images"] == 12
    assert all(
        t["image"] in {f"lfw/p{i}.jpg" for i in range(14)}  # training rows only
        for sub in doc["networks"].values()
        for v in sub["layers"].values()
        for u in v["units"]
        for t in u["top"]
    )
    off = settings.replace({"explain": {"log_to_mlflow": False}})
    assert log_embedder_grids(model, "x", data, run.info.run_id, off) is None
