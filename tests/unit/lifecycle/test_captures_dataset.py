"""The deployment's captures as a dataset (kind ``captures``) on tiny generated chips: listing, ingest,
the GX suite's consent / enrolment / duplicate expectations, the training data (chips read as they are,
in the backbone's geometry) and the gate's no-regression rule on the deployment's held-out captures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from facegate.components.core.datasets import CAPTURES_TABLE, list_captures
from facegate.components.core.errors import DatasetError
from facegate.components.core.settings import load_settings
from facegate.components.faces.align import PAIRED_GEOMETRY, paired_chip
from facegate.components.faces.chip_png import encode_chip
from facegate.components.faces.chips import ChipSet
from facegate.components.lifecycle import registry
from facegate.components.lifecycle.data_version import purge_objects
from facegate.components.lifecycle.ingest import ingest_source
from facegate.components.lifecycle.training_data import DeployData, TrainingData, convert_chip
from facegate.components.lifecycle.validation import CaptureReference, validate_manifest

CFG = load_settings()
COMMON = dict(val_fraction=0.4, seed=3, max_pixels=10**8, min_side=32)
EMPLOYEES = ["e1", "e2", "e3", "e4", "e5", "e6"]
ALL_IN = CaptureReference(frozenset(EMPLOYEES), frozenset(EMPLOYEES))


def chip(seed: int, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (150, 150, channels), dtype=np.uint8)


def write_export(root, per_employee: int = 3, consent: str = "true", duplicate: bool = False) -> pd.DataFrame:
    """An export as `facegate data export-captures` writes it: <employee>/<capture>.png and captures.csv."""
    rows, cid = [], 0
    for e, eid in enumerate(EMPLOYEES):
        for i in range(per_employee):
            cid += 1
            png = encode_chip(chip(0 if duplicate and cid <= 2 else e * 10 + i))
            (root / eid).mkdir(parents=True, exist_ok=True)
            (root / eid / f"{cid}.png").write_bytes(png)
            rows.append(
                {
                    "path": f"{eid}/{cid}.png",
                    "employee_id": eid,
                    "capture_id": cid,
                    "entrance": "north",
                    "captured_at": "2025-01-02T08:00:00",
                    "consent": consent,
                    "consent_at": "2025-01-01T09:00:00",
                    "chip_geometry": "dlib_150",
                    "model": "m@1",
                }
            )
    table = pd.DataFrame(rows)
    table.to_csv(root / CAPTURES_TABLE, index=False)
    return table


@pytest.fixture
def ingested(tmp_path):
    write_export(tmp_path / "data" / "exports" / "captures")
    res = ingest_source("captures", "captures", tmp_path / "data" / "exports" / "captures", tmp_path / "data", **COMMON)
    return tmp_path / "data", res.manifest


def test_no_export_yet_is_an_empty_source_but_a_folder_without_its_table_is_an_error(tmp_path):
    assert list_captures(tmp_path / "nothing") == ([], [])
    (tmp_path / "odd" / "e1").mkdir(parents=True)
    with pytest.raises(DatasetError, match="captures.csv"):
        list_captures(tmp_path / "odd")
    res = ingest_source("captures", "captures", tmp_path / "nothing", tmp_path / "data", **COMMON)
    assert res.manifest.empty and "consent" in res.manifest.columns


def test_ingest_keeps_capture_columns_and_splits_by_employee(ingested):
    data, m = ingested
    assert len(m) == 18 and set(m["identity"]) == set(EMPLOYEES)
    assert {"capture_id", "entrance", "captured_at", "consent", "consent_at", "chip_geometry"} <= set(m.columns)
    assert bool(m["consent"].all()) and m["path"].iloc[0].startswith("captures/e")
    assert (m.groupby("identity")["split"].nunique() == 1).all()  # identity-disjoint splits
    assert set(m["split"]) == {"train", "val"}
    assert (data / m["path"].iloc[0]).is_file()


def test_captures_suite_passes_clean_and_names_each_defect(ingested, tmp_path):
    data, m = ingested
    quarantine = pd.DataFrame(columns=["path", "source", "code", "reason"])
    ok = validate_manifest("captures", "captures", m, quarantine, data, CFG, tmp_path / "gx", ALL_IN)
    assert ok.success, ok.describe()
    bad = m.copy()
    bad.loc[0, "consent"] = False  # exported without consent
    bad.loc[3, "sha256"] = bad.loc[4, "sha256"]  # the same image twice (and its file no longer matches)
    removed = m["identity"].iloc[-1]  # removed since the export; e2 withdrew consent
    ref = CaptureReference(frozenset(EMPLOYEES) - {removed}, frozenset(EMPLOYEES) - {"e2"})
    report = validate_manifest("captures", "captures", bad, quarantine, data, CFG, tmp_path / "gx2", ref)
    assert not report.success
    failed = {(f.expectation, f.kwargs.get("column")): f for f in report.failures}
    # rows are named by capture id: an employee id never reaches the report that goes to MLflow
    assert failed[("expect_column_values_to_be_in_set", "consent")].rows == [str(m["capture_id"].iloc[0])]
    assert failed[("expect_column_values_to_be_in_set", "enrolled_now")].unexpected_count == 3
    withdrawn = {str(c) for c in m.loc[m["identity"] == "e2", "capture_id"]}
    assert set(failed[("expect_column_values_to_be_in_set", "consent_now")].rows) == withdrawn
    assert failed[("expect_column_values_to_be_unique", "sha256")].unexpected_count == 2


def test_empty_captures_pass_without_a_suite_but_need_the_reference(tmp_path):
    empty = ingest_source("captures", "captures", tmp_path / "none", tmp_path / "data", **COMMON).manifest
    q = pd.DataFrame(columns=["path", "source", "code", "reason"])
    report = validate_manifest("captures", "captures", empty, q, tmp_path / "data", CFG, tmp_path / "gx", ALL_IN)
    assert report.success and report.expectations == 0
    with pytest.raises(DatasetError, match="consent"):
        validate_manifest("captures", "captures", empty, q, tmp_path / "data", CFG, tmp_path / "gx")


def test_chips_are_read_in_the_backbones_geometry():
    dlib, arcface = chip(1), chip(2)[:112, :112]
    paired = paired_chip(dlib, arcface)
    assert convert_chip(dlib, "dlib_150", "dlib_150") is dlib
    np.testing.assert_array_equal(convert_chip(paired, PAIRED_GEOMETRY, "dlib_150"), dlib)
    np.testing.assert_array_equal(convert_chip(paired, PAIRED_GEOMETRY, "arcface_112"), arcface)
    assert convert_chip(dlib, "dlib_150", PAIRED_GEOMETRY) is None  # one geometry never becomes two


def training_data(deploy_train: int, deploy_val: int) -> TrainingData:
    chips = ChipSet(np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3), pd.DataFrame(), key="lfw")
    n = deploy_train + deploy_val
    deploy = DeployData(
        "captures",
        np.full((n, 2, 2, 3), 200, np.uint8),
        "captures-x",
        np.array([f"e{i // 2}" for i in range(n)]),
        np.arange(deploy_train),
        np.arange(deploy_train, n),
    )
    return TrainingData("lfw", chips, np.array([0, 1, 2]), np.array([3]), np.array([0, 0, 1]), np.array([0]), deploy)


def test_training_samples_are_the_datasets_then_the_captures():
    plain = training_data(0, 4)
    assert not plain.deploy_trains and plain.all_train_chips().shape[0] == 3
    no_captures = TrainingData("lfw", plain.chips, plain.train_rows, plain.val_rows, plain.labels, plain.val_labels)
    assert plain.train_key == no_captures.train_key  # caches made before captures stay valid
    data = training_data(4, 4)
    assert data.deploy_trains and data.train_key != plain.train_key
    chips = data.all_train_chips()
    assert chips.shape == (7, 2, 2, 3) and (chips[3:] == 200).all()
    np.testing.assert_array_equal(chips[:3], data.chips.chips[:3])
    np.testing.assert_array_equal(data.all_train_labels(), [0, 0, 1, 2, 2, 3, 3])  # employees after LFW's
    feats, deploy_feats = np.arange(4.0)[:, None], 10 + np.arange(8.0)[:, None]
    assert data.all_train_features(feats, deploy_feats)[:, 0].tolist() == [0, 1, 2, 10, 11, 12, 13]
    assert data.deploy.evaluable() and data.deploy.summary()["deploy_heldout_employees"] == 2
    assert "captures" in str(data.cache_dir) and "captures" not in str(plain.cache_dir)


def test_gate_refuses_a_challenger_that_regresses_on_the_deployments_captures():
    args = ("val_tar", 0.002, "champion v1")
    deploy = ("val_deploy_accuracy", "val_deploy_tar_at_far_1e-3")
    champ = {"val_tar": 0.90, "val_deploy_accuracy": 0.97, "val_deploy_tar_at_far_1e-3": 0.80}
    better = {"val_tar": 0.95, "val_deploy_accuracy": 0.965, "val_deploy_tar_at_far_1e-3": 0.81}
    ok = registry.gate(better, champ, *args, deploy_metrics=deploy, deploy_max_regression=0.01)
    assert ok.promote and "val_deploy_accuracy within 0.01" in ok.reason and "val_deploy_tar_at_far_1e-3" in ok.reason
    worse = {**better, "val_deploy_tar_at_far_1e-3": 0.75}
    no = registry.gate(worse, champ, *args, deploy_metrics=deploy, deploy_max_regression=0.01)
    assert not no.promote and "val_deploy_tar_at_far_1e-3 0.7500 loses 0.0500" in no.reason
    no_captures = {"val_tar": 0.95}  # neither side has held-out captures: the rule does not apply
    assert registry.gate(
        no_captures, {"val_tar": 0.90}, *args, deploy_metrics=deploy, deploy_max_regression=0.0
    ).promote
    assert registry.gate(worse, champ, *args).promote  # without the rule only the gate metric counts


def test_erasure_purges_objects_from_the_dvc_cache_and_folder_remotes_not_cloud_ones(tmp_path):
    dvc = tmp_path / ".dvc"
    dvc.mkdir()
    (dvc / "config").write_text(
        "['remote \"local\"']\n    url = ../remote\n['remote \"gallery\"']\n    url = s3://b/g\n"
    )
    h, other = "ab" + "c" * 30, "cd" + "e" * 30
    for base in (dvc / "cache", tmp_path / "remote"):
        for x in (h, other):
            (base / "files" / "md5" / x[:2]).mkdir(parents=True, exist_ok=True)
            (base / "files" / "md5" / x[:2] / x[2:]).write_bytes(b"face")
    out = purge_objects({h}, tmp_path)
    assert out == {"objects_purged": 2, "remotes_not_purged": ["s3://b/g"]}
    assert not (tmp_path / "remote" / "files" / "md5" / "ab" / h[2:]).exists()
    assert (dvc / "cache" / "files" / "md5" / "cd" / other[2:]).is_file()  # nobody else's object
