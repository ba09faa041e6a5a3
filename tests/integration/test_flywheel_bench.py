"""`facegate bench flywheel --quick` end to end: a tiny entrance (6 held-out LFW employees, 3 days, masks
from day 3) through the real service, capture store, review, template update and drift; the JSON keys the
issue asks for, and templates learnt from the operator's labels. The figures mean little on so few
passes: the 10-day run does that (benchmarks/results/flywheel-*.json)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from facegate.cli.app import app as cli_app
from tests.conftest import shared_dataset

pytestmark = [pytest.mark.integration]
KEYS = {
    "days",
    "fnir_first_day",
    "fnir_last_day",
    "fpir_over_target_last_day",
    "mask_onset_day",
    "drift_alarm_days",
    "skipped_run_seconds",
}
DAY_KEYS = {
    "day",
    "fnir",
    "fpir",
    "captures_reviewed",
    "templates_added",
    "drift_score",
    "drift_alarm",
    "retraining",
    "champion",
}


def test_flywheel_quick(tmp_path):
    shared_dataset("lfw")
    out = tmp_path / "flywheel.json"
    r = CliRunner().invoke(cli_app, ["bench", "flywheel", "--quick", "--json", str(out)])
    assert r.exit_code == 0, r.output
    result = json.loads(out.read_text())
    assert KEYS <= set(result) and result["mask_onset_day"] == 3
    assert [d["day"] for d in result["days"]] == [1, 2, 3]
    assert all(DAY_KEYS <= set(d) for d in result["days"])
    assert sum(d["templates_added"] for d in result["days"]) > 0
    assert all(0 < d["captures_reviewed"] <= 8 for d in result["days"])
    assert all(0 <= d["fnir"] <= 1 and 0 <= d["fpir"] <= 1 for d in result["days"])
    assert isinstance(result["drift_alarm_days"], list) and 0 < result["skipped_run_seconds"] < 60


@pytest.mark.slow
def test_flywheel_quick_runs_the_triggered_retraining(tmp_path, monkeypatch, prefect_server):
    """``--retrain run``: the first trigger (params lowered to 5 confirmed captures, so day 1 triggers) runs
    the real chain once in its sandbox; the day's row and the top level carry the challenger's and the
    champion's val_deploy_* side by side and the gate's decision; the next days are served by the model the
    chain put in service (minutes: the chain embeds its LFW slice)."""
    import os
    from pathlib import Path

    import yaml

    shared_dataset("lfw")
    params = yaml.safe_load(Path(os.environ["FACEGATE_PARAMS"]).read_text())
    params["retrain"]["trigger_confirmed"] = 5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("FACEGATE_PARAMS", str(tmp_path / "params.yaml"))
    out = tmp_path / "flywheel.json"
    r = CliRunner().invoke(cli_app, ["bench", "flywheel", "--quick", "--retrain", "run", "--json", str(out)])
    assert r.exit_code == 0, r.output
    result = json.loads(out.read_text())
    retrain = result["retrain"]
    day = retrain["day"]  # the first trigger: day 1 or 2, as the first reviews confirm enough captures
    assert result["retraining_mode"] == "run" and retrain["status"] == "run"
    assert day == min(result["retraining_triggered_days"]) and day < len(result["days"])
    assert result["days"][day - 1]["retraining"] == "run" and result["days"][day - 1]["retrain"] == retrain
    assert retrain["captures_exported"] > 0 and retrain["gate_reason"]
    assert {"accuracy", "tar_at_far_1e-3"} <= set(retrain["val_deploy"])
    assert all(v["champion"] is not None for v in retrain["val_deploy"].values())
    assert retrain["gate_decision"] == ("promote" if retrain["champion_changed"] else "keep champion")
    assert result["days"][day]["champion"] == retrain.get("champion_after", retrain["champion_before"])
