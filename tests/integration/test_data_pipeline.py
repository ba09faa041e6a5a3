"""Real flow runs (Prefect server, MLflow on SQLite, DVC with a local remote, GX) on small real slices."""

from __future__ import annotations

import hashlib
import shutil

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from facegate.components.core.errors import ValidationFailed
from facegate.components.core.paths import state_dir, use_mlflow_store
from facegate.components.lifecycle import data_version
from tests import images_factory as f
from tests.conftest import link_or_copy, requires_dataset, shared_dataset

pytestmark = [pytest.mark.integration, requires_dataset("lfw", "facemask")]
LFW_PEOPLE = 25
MASK_IMAGES = 25


def build_slices(sandbox) -> None:
    """LFW: the first people (sorted) + pairs.txt; facemask: the first images + their XML; a folder of
    bad and odd files."""
    lfw, masks, root = shared_dataset("lfw"), shared_dataset("facemask"), sandbox.datasets_root
    for person in sorted(p for p in lfw.iterdir() if p.is_dir())[:LFW_PEOPLE]:
        for img in person.iterdir():
            link_or_copy(img, root / "lfw" / person.name / img.name)
    link_or_copy(lfw / "pairs.txt", root / "lfw" / "pairs.txt")
    for img in sorted((masks / "images").iterdir())[:MASK_IMAGES]:
        link_or_copy(img, root / "facemask" / "images" / img.name)
        link_or_copy(masks / "annotations" / f"{img.stem}.xml", root / "facemask" / "annotations" / f"{img.stem}.xml")
    odd = root / "odd"
    for i in range(2):
        f.write_jpeg(odd / "alice" / f"{i}.jpg", seed=i)
    for name, (writer, _) in f.BAD_FILES.items():
        writer((odd / "alice").joinpath(name))
    for name, writer in f.ODD_BUT_GOOD.items():
        (odd / "bob").mkdir(parents=True, exist_ok=True)
        writer(odd / "bob" / name)
    sandbox.add_dataset("lfw", "lfw", "lfw")
    sandbox.add_dataset("facemask", "voc", "facemask")
    sandbox.add_dataset("odd", "image_folder", "odd")
    sandbox.commit()


def gx_folders() -> list:
    """Validation's temporary GX projects left in the state folder (each run removes its own)."""
    return sorted(state_dir().glob("gx-*"))


def runs_of(experiment: str) -> pd.DataFrame:
    use_mlflow_store()
    return mlflow.search_runs(experiment_names=[experiment])


def test_data_pipeline_end_to_end(sandbox, prefect_server):
    from facegate.flows.data import data_pipeline_flow, validate_flow

    build_slices(sandbox)
    result = data_pipeline_flow()

    # DVC: data.dvc names the version the flow reports, and the remote restores it into an empty data/
    version = result["data_version"]
    assert version and version == data_version.read_version(sandbox.root)
    by_name = {s["dataset"]: s for s in result["ingest"]}
    assert by_name["facemask"]["images"] == MASK_IMAGES and by_name["facemask"]["boxes"] > MASK_IMAGES
    assert by_name["lfw"]["identities"] == LFW_PEOPLE
    quarantined = {q["path"]: q["code"] for q in by_name["odd"]["quarantine"]}
    assert quarantined == {f"odd/_quarantine/alice/{n}": c for n, (_, c) in f.BAD_FILES.items()}
    assert by_name["odd"]["images"] == 2 + len(f.ODD_BUT_GOOD)  # every odd file normalised, none lost
    assert all(r["success"] for r in result["validation"])
    assert gx_folders() == []

    data = sandbox.root / "data"
    before = pd.read_parquet(data / "lfw" / "manifest.parquet")
    shutil.rmtree(data)
    data_version.pull(sandbox.root)
    after = pd.read_parquet(data / "lfw" / "manifest.parquet")
    pd.testing.assert_frame_equal(before, after)
    for p, h in zip(after["path"], after["sha256"]):
        assert hashlib.sha256((data / p).read_bytes()).hexdigest() == h
    assert (data / "odd" / "_quarantine" / "alice" / "truncated.jpg").is_file()

    # MLflow: one parent run and nested ingest/validate runs, each with commit, data version, params, duration
    runs = runs_of("facegate-data")
    assert sorted(runs["tags.mlflow.runName"]) == ["data-pipeline", "ingest", "validate"]
    assert set(runs["tags.git_commit"]) == {sandbox.head()}
    assert set(runs["tags.data_version"]) == {version}
    assert set(runs["status"]) == {"FINISHED"}
    assert runs["params.ingest.val_fraction"].notna().all()
    assert (runs["metrics.duration_s"] > 0).all()

    # A defect: one LFW identity in both splits. The flow stops, names the rows, the run is FAILED.
    m = pd.read_parquet(data / "lfw" / "manifest.parquet")
    person = m.groupby("identity").size().idxmax()
    first = m.index[m["identity"] == person][0]
    m.loc[first, "split"] = "val" if m.loc[first, "split"] == "train" else "train"
    m.to_parquet(data / "lfw" / "manifest.parquet", index=False)
    with pytest.raises(ValidationFailed) as exc:
        validate_flow(datasets=["lfw"])
    assert "identity_split_count" in exc.value.message and m.loc[first, "path"] in exc.value.message
    failed = runs_of("facegate-data").sort_values("start_time").iloc[-1]
    assert failed["status"] == "FAILED" and failed["tags.mlflow.runName"] == "validate"
    assert gx_folders() == []  # removed on the failing path too
    artifacts = mlflow.artifacts.download_artifacts(run_id=failed["run_id"], artifact_path="data_docs")
    assert any(p.name == "index.html" for p in __import__("pathlib").Path(artifacts).rglob("*.html"))

    # The CLI renders the same failure as one clear line, no traceback
    from facegate.cli.main import app

    out = CliRunner().invoke(app, ["validate", "-d", "lfw"])
    assert out.exit_code == 2
    assert "error [validation_failed]" in out.output and "Traceback" not in out.output


def test_unknown_dataset_is_named(sandbox, prefect_server):
    from facegate.cli.main import app

    out = CliRunner().invoke(app, ["ingest", "-d", "nope"])
    assert out.exit_code == 2 and "nope" in out.output
