"""The LFW benchmark driver on a small real slice: View 2 layout, plain and masked protocols."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.conftest import link_or_copy, shared_dataset

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mini_lfw(tmp_path_factory):
    """12 people x 2 images from the shared LFW, and a pairs.txt of 10 folds x (1 same + 1 different)."""
    src = shared_dataset("lfw")
    people = sorted(p.name for p in src.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= 2)[:20:2][:10]
    root = tmp_path_factory.mktemp("lfw")
    for name in people:
        for f in sorted((src / name).glob("*.jpg"))[:2]:
            link_or_copy(f, root / name / f.name)
    lines = ["10\t1"]
    for fold in range(10):
        a, b = people[fold], people[(fold + 1) % 10]
        lines += [f"{a}\t1\t2", f"{a}\t1\t{b}\t2"]
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root


def test_plain_and_masked_protocols(mini_lfw, tmp_path):
    from facegate.benchmarks.lfw import load_lfw, masked_probes, run_lfw_benchmark
    from facegate.components.core.settings import load_settings
    from facegate.components.embedding.train import TrainConfig

    settings = load_settings()
    cache = tmp_path / "cache"
    lfw = load_lfw(mini_lfw, cache, detector="yunet", geometry="arcface_112")
    assert lfw.chips.chips.shape == (20, 112, 112, 3) and len(lfw.same) == 20
    cfg = TrainConfig.from_settings(settings)
    plain = run_lfw_benchmark(
        lfw, cache, backbone="sface", mode="pretrained", flip_tta=False, cfg=cfg, pair_classifiers=False
    )
    probes = masked_probes(lfw, cache, settings.masks, seed=1)
    assert sorted(probes.rows) == sorted(set(lfw.pair_b)) and len(list(cache.glob("chips-masked-*.npy"))) == 1
    again = masked_probes(lfw, cache, settings.masks, seed=1)
    assert np.array_equal(np.asarray(again.chips), np.asarray(probes.chips))  # the same masks every run
    masked = run_lfw_benchmark(
        lfw, cache, backbone="sface", mode="pretrained", flip_tta=False, cfg=cfg, pair_classifiers=False, masked=probes
    )
    assert plain["protocol"] == "plain" and masked["protocol"] == "masked"
    assert set(plain) == set(masked)  # same JSON keys
    d_plain, d_masked = plain["_distances"], masked["_distances"]
    same = lfw.same
    # a mask moves genuine pairs apart
    assert d_masked[same].mean() > d_plain[same].mean()
    assert not np.array_equal(np.asarray(probes.chips), np.asarray(lfw.chips.chips[probes.rows]))


def test_fused_backbone_fits_weights_per_fold_and_reports_its_members(mini_lfw, tmp_path):
    from facegate.benchmarks.lfw import load_lfw, run_lfw_benchmark
    from facegate.components.core.settings import load_settings
    from facegate.components.embedding.train import TrainConfig

    cfg = TrainConfig.from_settings(load_settings())
    lfw = load_lfw(mini_lfw, tmp_path, detector="yunet", geometry="dlib_150+arcface_112")
    r = run_lfw_benchmark(
        lfw, tmp_path, backbone="dlib_resnet+sface", mode="pretrained", flip_tta=True, cfg=cfg, pair_classifiers=False
    )
    assert [f["test_folds"] for f in r["fusion_fits"]] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]  # fit on the others
    for fit in r["fusion_fits"]:
        assert abs(sum(fit["fusion_weights"]) - 1) < 1e-6 and fit["fusion_fit_genuine"] > 0
    assert set(r["members"]) == {"dlib_resnet", "sface"}
    assert set(r["members"]["sface"]) == {"flip_tta", "no_tta"}
    assert 0.5 <= r["members"]["sface"]["flip_tta"]["accuracy_mean"] <= 1.0
    assert set(r["flip_tta_on_one_member"]) == {"dlib_resnet", "sface"}


def test_pipeline_throughput_times_every_image_after_the_warm_up(mini_lfw):
    """Two workers, one torch/OpenCV thread each, real images end to end; the caller's thread counts
    come back afterwards."""
    import cv2
    import torch

    from facegate.benchmarks.lfw import pipeline_throughput
    from facegate.components.embedding.backbones import make_backbone
    from facegate.components.embedding.model import EmbeddingModel
    from facegate.components.faces.align import FaceAligner
    from facegate.components.faces.detectors import YuNetDetector
    from facegate.components.faces.pipeline import FaceFinder

    model = EmbeddingModel(make_backbone("dlib_resnet")).eval()
    finder = FaceFinder(YuNetDetector(0, score_threshold=0.6, max_side=1280), FaceAligner())
    files = sorted(mini_lfw.glob("*/*.jpg"))[:10]
    before = torch.get_num_threads(), cv2.getNumThreads()
    out = pipeline_throughput(model, finder, files, flip_tta=True, workers=2, batch=2)
    assert (torch.get_num_threads(), cv2.getNumThreads()) == before
    assert out["pipeline_images_timed"] == 10 - 2 * 2 and out["speed_workers"] == 2
    assert 0 < out["pipeline_images_per_s"] < 1000


def test_speed_reports_a_pipeline_row_per_backend(mini_lfw, tmp_path, monkeypatch):
    """``backends``: the pipeline with full (flip TTA) embeddings on torch float32, torch bfloat16 and
    OpenVINO bfloat16, each row saying what really ran."""
    from facegate.benchmarks.lfw import BACKEND_ROWS, load_lfw, measure_speed

    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "state"))  # the OpenVINO IR cache starts empty
    lfw = load_lfw(mini_lfw, tmp_path, detector="yunet", geometry="arcface_112")
    out = measure_speed(lfw, "sface", n_chips=8, n_images=8, detector="yunet", workers=2, batch=1, backend="openvino")
    assert out["speed_inference"]["backend"] == "openvino"
    rows = out["backends"]
    assert [(r["backend"], r["precision"]) for r in rows] == list(BACKEND_ROWS)
    for row in rows:
        assert row["pipeline_images_timed"] == 8 - 2 and 0 < row["pipeline_images_per_s"] < 1000
        assert row["inference"]["backend"] == row["backend"]  # openvino is installed here: no fallback
        assert row["speed_loadavg_1min"] >= 0


def test_head_mode_trains_on_the_chains_augmented_copies(mini_lfw, tmp_path):
    """``head`` reads augmented copies (synthetic masks among them) of every chip, cached like the
    chain's, and they change what the heads learn."""
    from facegate.benchmarks.lfw import LfwBenchmark, run_lfw_benchmark
    from facegate.components.core.settings import load_settings

    settings = load_settings()
    bench = LfwBenchmark.from_settings(settings, backbone="sface", mode="head", epochs=2, groups=2, speed=False)
    lfw = bench.load(mini_lfw, tmp_path)
    copies = bench.augmented_copies(lfw, tmp_path)
    assert len(copies) == settings.augment.copies and all(c.shape == (20, 49 * 128) for c in copies)  # positions x 128
    cached = sorted(p.name for p in tmp_path.glob("features-*-aug*.npy"))
    assert len(cached) == settings.augment.copies
    again = bench.augmented_copies(lfw, tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(copies, again))
    assert sorted(p.name for p in tmp_path.glob("features-*-aug*.npy")) == cached  # nothing recomputed
    cfg = dataclasses.replace(bench.cfg, p=2, k=2, margin=2.0)  # 4 identities per group; every triplet active
    run = dict(backbone="sface", mode="head", flip_tta=False, cfg=cfg, n_groups=2, pair_classifiers=False)
    bare = run_lfw_benchmark(lfw, tmp_path, **run)
    augmented = run_lfw_benchmark(lfw, tmp_path, **run, aug_feats=copies, aug_prob=1.0)
    assert not np.array_equal(bare["_distances"], augmented["_distances"])
