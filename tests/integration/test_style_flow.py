"""The style-transfer flow for real on a tiny pair: Prefect run, MLflow metrics per iteration, the cost plot,
and no image in MLflow unless asked (a face photo as content is biometric data)."""

from __future__ import annotations

import mlflow
import pytest
import yaml

from facegate.components.core.images import load_image
from facegate.components.core.paths import use_mlflow_store
from tests.images_factory import write_jpeg

pytestmark = pytest.mark.integration

ITERATIONS = 3


def all_artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for a in client.list_artifacts(run_id, path):
        out |= all_artifacts(client, run_id, a.path) if a.is_dir else {a.path}
    return out


def test_stylize_flow_logs_costs_and_keeps_images_out_by_default(sandbox, prefect_server, tmp_path):
    from facegate.flows.style import stylize_flow

    params = yaml.safe_load((sandbox.root / "params.yaml").read_text())
    params["style"]["image_size"] = 64
    (sandbox.root / "params.yaml").write_text(yaml.safe_dump(params))
    sandbox.commit()
    content = write_jpeg(tmp_path / "content.jpg", 64, 64, seed=1)
    style = write_jpeg(tmp_path / "style.jpg", 64, 64, seed=2)
    out = tmp_path / "out" / "g.jpg"

    result = stylize_flow(str(content), str(style), str(out), iterations=ITERATIONS)

    assert load_image(out).shape == (64, 64, 3) and result["out"] == str(out)
    assert result["loss_end"] < result["loss_start"] and result["images_logged"] is False
    use_mlflow_store()
    client = mlflow.tracking.MlflowClient()
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["git_commit"] == sandbox.head()
    assert run.data.params["run.iterations"] == str(ITERATIONS) and run.data.params["style.optimizer"] == "adam"
    assert run.data.params["run.log_images"] == "False"
    assert not any("content.jpg" in v or "style.jpg" in v for v in run.data.params.values())  # hashes, not names
    for name in ("content_cost", "style_cost", "total_cost"):
        history = client.get_metric_history(run.info.run_id, name)
        assert sorted(m.step for m in history) == list(range(ITERATIONS + 1))  # every iteration, then the output
    m = run.data.metrics
    assert {"loss_start", "loss_end", "loss_reduction", "style_cost_output", "style_cost_content", "duration_s"} <= set(
        m
    )
    assert m["loss_reduction"] == pytest.approx(result["loss_reduction"])
    artifacts = all_artifacts(client, run.info.run_id)
    assert {"plots/cost_curve.png", "cost_curve.json"} <= artifacts
    assert not [a for a in artifacts if a.lower().endswith((".jpg", ".jpeg"))], artifacts

    # asked for explicitly, the inputs and the output go to MLflow
    result = stylize_flow(str(content), str(style), str(out), iterations=1, log_images=True)
    artifacts = all_artifacts(client, result["run_id"])
    assert {"images/content.jpg", "images/style.jpg", "images/output.jpg"} <= artifacts
