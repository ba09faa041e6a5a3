"""The training flow for real (Prefect, MLflow, DVC data) on a small slice of LFW."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import yaml

from facegate.components.core.devices import describe, resolve_torch_device
from facegate.components.core.paths import use_mlflow_store
from facegate.components.embedding.model import embed_chips
from tests.conftest import link_or_copy, requires_dataset, shared_dataset

pytestmark = [pytest.mark.integration, requires_dataset("lfw")]


def lfw_slice(sandbox, people: int = 14) -> None:
    lfw = shared_dataset("lfw")
    chosen = [p for p in sorted(lfw.iterdir()) if p.is_dir() and 4 <= len(list(p.iterdir())) <= 8][:people]
    for person in chosen:
        for img in person.iterdir():
            link_or_copy(img, sandbox.datasets_root / "lfw" / person.name / img.name)
    link_or_copy(lfw / "pairs.txt", sandbox.datasets_root / "lfw" / "pairs.txt")
    sandbox.add_dataset("lfw", "lfw", "lfw")
    params = yaml.safe_load((sandbox.root / "params.yaml").read_text())
    params["ingest"]["val_fraction"] = 0.4
    params["train"].update({"p": 4, "k": 2, "epochs": 2, "lr": 1e-4, "miner": "batch_hard"})
    (sandbox.root / "params.yaml").write_text(yaml.safe_dump(params))
    sandbox.commit()


@pytest.mark.parametrize("backbone,mode", [("dlib_resnet", "head"), ("mobilenet_v2", "finetune")])
def test_train_flow_logs_a_usable_model(sandbox, prefect_server, backbone, mode):
    from facegate.flows.data import ingest_flow
    from facegate.flows.train import train_flow

    lfw_slice(sandbox)
    version = ingest_flow(datasets=["lfw"])["data_version"]
    result = train_flow(dataset="lfw", backbone=backbone, mode=mode)

    use_mlflow_store()
    run = mlflow.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["data_version"] == version and run.data.tags["git_commit"] == sandbox.head()
    assert run.data.params["run.mode"] == mode and run.data.params["train.miner"] == "batch_hard"
    device = resolve_torch_device("auto")  # params' embedding.device: where training ran, as a tag and a param
    assert run.data.tags["device"] == describe(device) and run.data.params["run.train.device"] == str(device)
    assert 0.5 <= run.data.metrics["val_accuracy"] <= 1.0
    client = mlflow.tracking.MlflowClient()
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"augmentation.json", "plots", "training_history.json"} <= artifacts
    logged = mlflow.get_logged_model(result["model_id"])
    assert logged.source_run_id == run.info.run_id  # the logged model belongs to this run
    assert "torch==2.13.0" in mlflow.artifacts.load_text(f"{logged.artifact_location}/requirements.txt")
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} == {
        "plots/roc.png",
        "plots/distances.png",
        "plots/training_curves.png",
    }
    model = mlflow.pytorch.load_model(result["model_uri"])
    emb = embed_chips(model, np.zeros((2, 150, 150, 3), np.uint8))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
