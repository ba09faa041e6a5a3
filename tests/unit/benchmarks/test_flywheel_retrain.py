"""The flywheel's retraining sandbox (benchmarks/flywheel_retrain.py), without the chain: the sandbox's
repository and params, the environment it points the process at (and restores), and the day's row
made from a chain's result (a stand-in chain here; the real one: tests/integration/test_flywheel_bench.py)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from facegate.benchmarks.flywheel_retrain import (
    LFW_IDENTITIES,
    TRAIN,
    Sandbox,
    run_chain,
    training_identities,
)
from facegate.components.service.access_log import ENV_URL


def fake_lfw(root: Path, people: dict[str, int]) -> dict[str, list[Path]]:
    photos = {}
    for name, n in people.items():
        (root / name).mkdir(parents=True)
        photos[name] = []
        for i in range(n):
            p = root / name / f"{name}_{i:04d}.jpg"
            p.write_bytes(b"jpg")
            photos[name].append(p)
    (root / "pairs.txt").write_text("1\t0\n")
    return photos


def test_training_identities_come_from_the_training_split_with_4_to_8_photos(tmp_path):
    photos = fake_lfw(tmp_path / "lfw", {"a": 4, "b": 8, "c": 3, "d": 9, "e": 5, "held": 6})
    chosen = training_identities(photos, {"a", "b", "c", "d", "e"}, seed=1)
    assert set(chosen) == {"a", "b", "e"}  # "held" is not in the training split; c and d have 3 and 9 photos
    assert chosen == training_identities(photos, {"a", "b", "c", "d", "e"}, seed=1)  # seeded
    assert len(training_identities(photos, set(photos), seed=1, n=2)) == 2 and LFW_IDENTITIES >= 14


def test_the_chain_runs_in_the_sandbox_and_its_result_is_reported(tmp_path):
    lfw = tmp_path / "lfw"
    photos = fake_lfw(lfw, {"a": 4, "b": 5})
    box = Sandbox(tmp_path / "chain", lfw, photos, {"capture": {"enabled": True, "entrances": ["door-1"]}})
    params = yaml.safe_load((box.repo / "params.yaml").read_text())
    assert [d["kind"] for d in params["ingest"]["datasets"]] == ["lfw", "captures"]
    assert params["capture"]["enabled"] and all(params["train"][k] == v for k, v in TRAIN.items())
    assert (box.datasets / "lfw" / "a" / "a_0000.jpg").is_file() and (box.repo / ".dvc").is_dir()
    before = dict(os.environ)
    seen = {}

    def chain() -> dict:
        seen.update({k: os.environ.get(k) for k in ("FACEGATE_REPO", "FACEGATE_HOME", ENV_URL)})
        return {
            "challenger_metrics": {"val_deploy_accuracy": 0.9, "val_deploy_tar_at_far_1e-3": 0.5, "val_auc": 0.99},
            "incumbent_metrics": {"val_deploy_accuracy": 0.8, "val_deploy_tar_at_far_1e-3": 0.6, "val_auc": 0.98},
            "incumbent": "pretrained (no champion yet)",
            "promoted": False,
            "gate_reason": "val_deploy_tar_at_far_1e-3 regressed",
            "gate_metric": "val_masked_tar_at_far_1e-3",
            "challenger_version": "1",
            "champion_version": "2",
            "gallery_version": "abc.dir",
        }

    row = run_chain(chain, box, "sqlite:///access.db", "pretrained@sha", log=lambda m: None)
    assert seen == {
        "FACEGATE_REPO": str(box.repo),
        "FACEGATE_HOME": str(box.repo / ".facegate"),
        ENV_URL: "sqlite:///access.db",
    }
    assert dict(os.environ) == before  # restored
    assert row["val_deploy"] == {
        "accuracy": {"challenger": 0.9, "champion": 0.8},
        "tar_at_far_1e-3": {"challenger": 0.5, "champion": 0.6},
    }
    assert row["gate_decision"] == "keep champion" and row["gate_reason"] == "val_deploy_tar_at_far_1e-3 regressed"
    assert row["champion_before"] == "pretrained@sha" and not row["champion_changed"]
