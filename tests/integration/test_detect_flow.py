"""The detector for real on a small slice of the face-mask set: train (Prefect, MLflow, registry), detect,
benchmark against pycocotools and dlib HOG, and serve as a face detector."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from facegate.components.core.paths import use_mlflow_store
from tests.conftest import link_or_copy, requires_dataset, shared_dataset

pytestmark = [pytest.mark.integration, requires_dataset("facemask")]


def facemask_slice(sandbox, images: int = 14) -> None:
    src = shared_dataset("facemask")
    for img in sorted((src / "images").glob("*.jpg"))[:images]:
        link_or_copy(img, sandbox.datasets_root / "facemask" / "images" / img.name)
        xml = src / "annotations" / f"{img.stem}.xml"
        link_or_copy(xml, sandbox.datasets_root / "facemask" / "annotations" / xml.name)
    sandbox.add_dataset("facemask", "voc", "facemask")
    params = yaml.safe_load((sandbox.root / "params.yaml").read_text())
    params["ingest"]["val_fraction"] = 0.3
    params["detection"].update(
        {
            "input_size": 192,
            "batch_size": 4,
            "frozen_epochs": 1,
            "frozen_copies": 2,
            "finetune_epochs": 1,
            "eval_every": 1,
            "eval_score_threshold": 0.0,
            "score_threshold": 0.0,
            "max_detections": 20,
            "variant": "yolo",
        }
    )
    params["detection"]["two_stage"].update(
        {
            "crop_size": 32,
            "proposal_scale": 1.0,
            "frozen_epochs": 2,
            "frozen_copies": 1,
            "finetune_epochs": 1,
            "batch_size": 16,
        }
    )
    (sandbox.root / "params.yaml").write_text(yaml.safe_dump(params))
    sandbox.commit()


def test_train_detect_bench_and_face_detector(sandbox, prefect_server, tmp_path):
    from facegate.cli.main import app
    from facegate.components.core.images import load_image
    from facegate.components.faces.detectors import make_detector
    from facegate.components.lifecycle.registry import champion
    from facegate.flows.data import ingest_flow
    from facegate.flows.detect import detect_bench_flow, detect_train_flow

    facemask_slice(sandbox)
    version = ingest_flow(datasets=["facemask"])["data_version"]
    result = detect_train_flow(log_sample_images=True)

    use_mlflow_store()
    run = mlflow.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["data_version"] == version and run.data.tags["git_commit"] == sandbox.head()
    assert run.data.params["detection.input_size"] == "192"
    from facegate.components.core.devices import describe, resolve_torch_device

    assert run.data.tags["device"] == describe(resolve_torch_device("auto"))  # detection.device: auto
    client = mlflow.tracking.MlflowClient()
    losses = client.get_metric_history(run.info.run_id, "train_loss_total")
    assert [m.step for m in losses] == [1, 2]  # one frozen epoch, one fine-tuning epoch
    for part in ("box", "obj", "noobj", "cls"):
        assert len(client.get_metric_history(run.info.run_id, f"train_loss_{part}")) == 2
    assert len(client.get_metric_history(run.info.run_id, "epoch_val_map50")) == 2
    m = run.data.metrics
    assert 0.0 <= m["val_map50"] <= 1.0 and 0.0 <= m["val_map50_95"] <= m["val_coco_map50"] + 1e-9
    assert m["val_pycocotools_abs_diff"] < 1e-3
    assert {"val_ap50_with_mask", "train_minutes", "anchor_mean_iou"} <= set(m)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"augmentation.json", "detector.json", "plots", "samples"} <= artifacts
    assert "plots/pr_curves.png" in {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    # the registered version's unit grids (explain.log_to_mlflow), over the letterboxed training images
    assert "explain/units.json" in {a.path for a in client.list_artifacts(run.info.run_id, "explain")}
    assert m["explain_seconds"] > 0
    assert mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/augmentation.json")["transform"]["bbox_params"]

    best = champion("facegate-detector")
    assert best is not None and best.version == result["version"] == "1" and result["promoted"]
    model = mlflow.pytorch.load_model(best.uri)
    assert model.class_names == ("with_mask", "without_mask", "mask_weared_incorrect")

    # facegate detect draws boxes into an output image
    image = next((sandbox.root / "data" / "facemask" / "images").glob("*.jpg"))
    out = tmp_path / "detected.jpg"
    r = CliRunner().invoke(app, ["detect", str(image), "--out", str(out)])
    assert r.exit_code == 0, r.output
    answer = json.loads(r.output)
    assert out.is_file() and load_image(out).shape == load_image(image).shape
    assert answer["detections"] and {"box", "label", "score"} <= set(answer["detections"][0])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    r = CliRunner().invoke(app, ["detect", str(bad)])
    assert r.exit_code == 2 and "unreadable_image" in r.output and "bad.jpg" in r.output

    # the benchmark: project metrics beside pycocotools on the same detections, HOG beside it
    bench = detect_bench_flow(timed_images=3)
    assert abs(bench["map50_95"] - bench["pycocotools_map50_95"]) < 1e-3
    assert bench["images_per_s"] > 0 and 0.0 <= bench["face_ap50"] <= 1.0 and 0.0 <= bench["hog_face_ap50"] <= 1.0
    assert bench["training_minutes"] == pytest.approx(m["train_minutes"])
    assert bench["per_class_ap50"] == bench["ap50_per_class"] and bench["variant"] == "yolo"

    # the face-detector registry entry: every class is a face
    faces = make_detector("yolo_facemask", upsample=0).detect(load_image(image))
    assert faces and all(f.right > f.left and f.bottom > f.top for f in faces)
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    assert np.isfinite([f.score for f in faces]).all()

    # the two-stage variant (RetinaFace proposals + crop classifier): a second version, gated against the first
    second = detect_train_flow(variant="two_stage")
    assert second["variant"] == "two_stage" and second["version"] == "2"
    run2 = mlflow.get_run(second["run_id"])
    assert run2.data.tags["variant"] == "two_stage" and run2.data.params["run.variant"] == "two_stage"
    assert {"val_map50", "val_ap50_with_mask", "val_pycocotools_map50", "train_minutes"} <= set(run2.data.metrics)
    assert client.get_model_version("facegate-detector", "2").tags["variant"] == "two_stage"
    explained = mlflow.artifacts.load_dict(f"runs:/{second['run_id']}/explain/units.json")
    assert explained["version"] == "facegate-detector/2" and "face crops of 32 px" in explained["images"]
    assert champion("facegate-detector").version == ("2" if second["promoted"] else "1")
    bench2 = detect_bench_flow(model_uri=second["model_uri"], hog=False, timed_images=2)
    assert bench2["variant"] == "two_stage" and set(bench2["per_class_ap50"]) == set(model.class_names)
    assert abs(bench2["map50_95"] - bench2["pycocotools_map50_95"]) < 1e-3
    from facegate.components.lifecycle.detector_models import YoloFaceMaskDetector

    two = YoloFaceMaskDetector(0, model_uri=second["model_uri"]).detect(load_image(image))
    assert all(f.right > f.left and f.bottom > f.top for f in two)


@pytest.mark.slow
def test_bench_detect_seeds_trains_and_scores_each_seed(sandbox, prefect_server, tmp_path):
    """`facegate bench detect --seeds 2`: two two-stage trainings (params' seed and the next), per seed
    and mean / spread in the JSON, no registered model needed or made."""
    from facegate.cli.main import app
    from facegate.components.core.settings import load_settings
    from facegate.components.lifecycle.registry import champion
    from facegate.flows.data import ingest_flow

    facemask_slice(sandbox)
    ingest_flow(datasets=["facemask"])
    out = tmp_path / "seeds.json"
    r = CliRunner().invoke(app, ["bench", "detect", "--seeds", "2", "--json", str(out)])
    assert r.exit_code == 0, r.output
    result = json.loads(out.read_text())
    seed = load_settings().seed
    assert result["seeds"] == [seed, seed + 1] and len(result["per_seed"]) == 2
    for row in result["per_seed"]:
        assert 0 <= row["map50"] <= 1 and 0 <= row["pycocotools_map50"] <= 1 and row["train_minutes"] > 0
        assert "ap50_mask_weared_incorrect" in row and row["load_1min"] >= 0
    assert {"map50", "pycocotools_map50", "train_minutes"} <= set(result["summary"])
    assert result["benchmark"] == "detect" and result["commit"]
    assert champion("facegate-detector") is None
