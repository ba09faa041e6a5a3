"""train-pad for real on a small slice of nuaa-dev: fine-tune (Prefect, MLflow), gate against the
zero-shot pair on held-out subjects, register with its threshold and plots, then serve it as
``minifasnet_pair_finetuned``. The frames are linked from the datasets root (never committed)."""

from __future__ import annotations

import mlflow
import pytest
import yaml

from facegate.components.core.paths import use_mlflow_store, weights_root
from tests.conftest import link_or_copy, requires_dataset, shared_dataset

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    requires_dataset("nuaa-dev"),
    pytest.mark.skipif(
        not (weights_root() / "minifasnet").is_dir(),
        reason=f"MiniFASNet weights not under {weights_root()} (set FACEGATE_WEIGHTS)",
    ),
]
WEIGHTS = weights_root()  # read before the sandbox moves the repository root


def nuaa_slice(sandbox, subjects=("0001", "0002", "0003"), frames: int = 8) -> None:
    src = shared_dataset("nuaa-dev")
    for folder in ("live", "print"):
        for subject in subjects:
            for f in sorted((src / folder / subject).glob("*.jpg"))[:frames]:
                link_or_copy(f, sandbox.datasets_root / "nuaa-dev" / folder / subject / f.name)
    params = yaml.safe_load((sandbox.root / "params.yaml").read_text())
    params["pad"].update({"heldout_subjects": 1, "epochs": 1, "crop_copies": 1})
    (sandbox.root / "params.yaml").write_text(yaml.safe_dump(params))
    sandbox.commit()


def test_train_pad_registers_gates_and_serves(sandbox, prefect_server, monkeypatch):
    from facegate.components.core.images import load_image
    from facegate.components.core.settings import load_settings
    from facegate.components.lifecycle.registry import champion
    from facegate.components.pad.models import pad_model_from_settings
    from facegate.flows.pad import pad_train_flow

    monkeypatch.setenv("FACEGATE_WEIGHTS", str(WEIGHTS))
    nuaa_slice(sandbox)
    result = pad_train_flow()
    assert result["version"] == "1" and len(result["heldout_subjects"]) == 1
    assert result["promoted"] == (result["fine_tuned"]["bpcer100"] <= result["zero_shot"]["bpcer100"])
    use_mlflow_store()
    run = mlflow.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["pad.finetune_stages"] == "1"
    assert {"val_bpcer100", "val_bpcer20", "val_apcer", "val_bpcer", "zero_shot_bpcer100"} <= set(run.data.metrics)
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/det.png", "plots/roc.png"}
    augmentation = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/augmentation.json")
    assert augmentation["colour_shifts"].startswith("none")
    if not result["promoted"]:
        pytest.skip(f"the gate kept the zero-shot pair on this slice: {result['gate']}")
    settings = load_settings()
    assert champion(settings.pad.registered_model).version == "1"
    model = pad_model_from_settings(settings.pad, "minifasnet_pair_finetuned")
    assert model.fingerprint == f"{settings.pad.registered_model}/1"
    assert model.calibration.threshold(settings.pad.target_apcer) == pytest.approx(result["fine_tuned"]["threshold"])
    frame = load_image(WEIGHTS / "minifasnet" / "samples" / "image_T1.jpg")
    from facegate.components.faces.detectors import detector_from_settings

    box = detector_from_settings(settings.faces).detect(frame)[0]
    assert 0.0 <= model.score(frame, box) <= 1.0
