"""The deployment feeds the loop, for real on small slices (Prefect, the MLflow registry on SQLite, a DVC
remote, Great Expectations, FAISS, the access log and capture store on SQLite): employees captured at
the door, their captures reviewed (labelled), templates updated, the confirmed captures of consenting
employees exported, ingested and validated as the dataset ``captures``, the chain training on LFW plus
their training split and gating on their held-out employees (``val_deploy_*``), and an erasure that
leaves nothing of the employee behind, the DVC cache and remote included.

Scenarios build on each other (module-scoped fixtures, as in test_retrain_flow.py): a chain before any
capture is confirmed (the chain as it was: no ``val_deploy_*``), then one after the review."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest

from facegate.components.core.images import load_image
from facegate.components.core.paths import (
    data_dir,
    dvc_default_remote,
    repo_root,
    use_mlflow_store,
)
from facegate.components.core.settings import load_settings
from facegate.components.lifecycle import data_version, registry
from facegate.components.service.capture_export import consent_store, set_training_consent
from facegate.components.service.facade import FaceGate
from facegate.components.service.gallery_changes import read_photo
from facegate.components.service.templates import update_templates
from tests.conftest import requires_dataset, shared_dataset
from tests.integration.test_retrain_flow import set_params
from tests.integration.test_train_flow import lfw_slice

pytestmark = [pytest.mark.integration, pytest.mark.slow, requires_dataset("lfw", "faceapi-examples")]
PEOPLE = ("amy", "bernadette", "howard", "leonard", "penny", "raj", "sheldon", "stuart")
CONSENTING = ("amy", "howard", "leonard", "penny", "raj", "sheldon")  # bernadette and stuart never consent
HELD_OUT = {"amy", "howard", "penny"}  # the seeded identity split (seed 1234, val_fraction 0.4) of CONSENTING
DEPLOY_GUARD = ("val_deploy_accuracy", "val_deploy_tar_at_far_1e-3")


def parent_run(result):
    use_mlflow_store()
    return mlflow.get_run(result["run_id"])


def child_runs(result) -> dict:
    run = parent_run(result)
    children = mlflow.MlflowClient().search_runs(
        [run.info.experiment_id], filter_string=f"tags.parent_run_id = '{result['run_id']}'"
    )
    return {c.info.run_name: c for c in children}


@pytest.fixture(scope="module")
def door(module_sandbox, prefect_server):
    """An LFW slice, eight employees enrolled from one photo each, four captures of each at door-1."""
    lfw_slice(module_sandbox)
    module_sandbox.add_dataset("captures", "captures", "exports/captures")
    set_params(module_sandbox, capture={"enabled": True, "entrances": ["door-1"]}, augment={"copies": 1})
    gate = FaceGate(load_settings())
    faces = shared_dataset("faceapi-examples")
    for p in PEOPLE:
        gate.enrol(p, p.title(), [read_photo(faces / p / f"{p}1.png")], force=True)
    who: dict[int, str] = {}
    for p in PEOPLE:
        for n in (2, 3, 4, 5):
            before = {r["id"] for r in gate.captures.rows()}
            gate.identify(load_image(faces / p / f"{p}{n}.png"), entrance="door-1")
            who.update({r["id"]: p for r in gate.captures.rows() if r["id"] not in before})
    return SimpleNamespace(sandbox=module_sandbox, who=who)


@pytest.fixture(scope="module")
def unreviewed_chain(door):
    """Chain 0: captures kept at the door, none confirmed: the captures dataset is empty."""
    from facegate.flows.retrain import retrain_flow

    result = retrain_flow()
    return SimpleNamespace(
        result=result, manifest=pd.read_parquet(data_dir() / "captures" / "manifest.parquet"), run=parent_run(result)
    )


@pytest.fixture(scope="module")
def reviewed_chain(door, unreviewed_chain):
    """The operator labels every capture, six employees consent, templates update; chain 1."""
    from facegate.flows.retrain import retrain_flow

    gate = FaceGate(load_settings())  # the champion the chain made is in service now
    for cid, person in door.who.items():
        gate.captures.label(cid, "employee", person, "operator1")
    for p in CONSENTING:
        set_training_consent(gate, p, True, actor="operator1", note=f"form {p}")
    templates = update_templates(gate, actor="operator1")
    result = retrain_flow()
    return SimpleNamespace(
        result=result,
        templates=templates,
        manifest=pd.read_parquet(data_dir() / "captures" / "manifest.parquet"),
        run=parent_run(result),
        children=child_runs(result),
    )


def test_every_face_at_the_door_was_captured(door):
    assert sorted(door.who.values()) == sorted(p for p in PEOPLE for _ in range(4))


def test_without_confirmed_captures_the_chain_is_as_it_was(unreviewed_chain):
    chain = unreviewed_chain
    assert chain.manifest.empty and chain.result["champion_version"] is not None
    assert not any(k.startswith("val_deploy_") for k in chain.result["challenger_metrics"])
    assert not any("val_deploy" in k for k in chain.run.data.metrics)
    assert chain.run.data.tags["gate_deploy_guard"].startswith("none")


def test_confirmed_consenting_captures_are_a_validated_dataset(reviewed_chain, door):
    m = reviewed_chain.manifest
    assert set(m["identity"]) == set(CONSENTING) and len(m) == 4 * len(CONSENTING)
    assert set(m.loc[m["split"] == "val", "identity"]) == HELD_OUT
    assert m["consent"].all() and m["capture_id"].isin(list(door.who)).all()
    validate = reviewed_chain.children["validate"]
    assert validate.data.metrics["captures.validation_success"] == 1.0
    version = data_version.read_version()
    assert reviewed_chain.run.data.tags["data_version"] == version == reviewed_chain.result["data_version"]
    assert reviewed_chain.templates["employees"]  # confirmed captures became gallery templates


def test_the_chain_trains_on_the_captures_and_gates_on_the_held_out_employees(reviewed_chain):
    result, run = reviewed_chain.result, reviewed_chain.run
    augment = reviewed_chain.children["augment"].data.metrics
    assert augment["deploy_train_captures"] == 12 and augment["deploy_heldout_employees"] == len(HELD_OUT)
    challenger, incumbent = result["challenger_metrics"], result["incumbent_metrics"]
    for m in (*DEPLOY_GUARD, "val_deploy_auc"):
        assert 0.0 <= challenger[m] <= 1.0 and 0.0 <= incumbent[m] <= 1.0
        assert run.data.metrics[m] == challenger[m] and run.data.metrics[f"incumbent_{m}"] == incumbent[m]
    assert {"val_accuracy", "val_masked_accuracy"} <= set(challenger)  # beside the public held-out metrics
    assert run.data.tags["gate_deploy_guard"] == ",".join(DEPLOY_GUARD)
    g = load_settings().registry
    expected = registry.gate(
        challenger,
        incumbent,
        g.gate_metric,
        g.min_improvement,
        result["incumbent"],
        guard_metric=g.guard_metric,
        max_regression=g.max_regression,
        deploy_metrics=g.deploy_guard_metrics,
        deploy_max_regression=g.deploy_max_regression,
    )
    assert result["promoted"] == expected.promote and run.data.tags["gate_reason"] == expected.reason
    if expected.promote:  # a promoted challenger held the deployment's own figures
        assert all(challenger[m] >= incumbent[m] - g.deploy_max_regression for m in DEPLOY_GUARD)
        assert "val_deploy_accuracy within" in run.data.tags["gate_reason"]
    version = registry.get_version(result["model"], result["challenger_version"])
    assert "val_deploy_accuracy" in version.tags  # `facegate models list` shows it


def test_a_removed_employee_leaves_no_capture_template_or_training_image(reviewed_chain):
    gate = FaceGate(load_settings())
    files = [p for p in data_dir().rglob("*") if p.is_file() and "/leonard/" in p.as_posix()]
    md5s = {hashlib.md5(p.read_bytes(), usedforsecurity=False).hexdigest() for p in files}
    assert len(md5s) == 4  # the export and the ingested copy share their bytes
    out = gate.remove_employee("leonard", actor="operator1")
    assert out["captures_erased"] == 4 and out["capture_images_erased"] == len(files)
    assert out["dvc_objects_purged"] >= 4  # the local cache, and the remote the chain pushed to
    assert gate.captures.count("leonard") == 0 and consent_store(gate).history("leonard") == []
    assert "leonard" not in set(gate.snapshot().sidecar.employee_id)
    assert not any("leonard" in p.relative_to(data_dir()).as_posix() for p in data_dir().rglob("*"))
    assert "leonard" not in set(pd.read_parquet(data_dir() / "captures" / "manifest.parquet")["identity"])
    stored = [
        p.parent.name + p.name
        for root in (repo_root() / ".dvc" / "cache", dvc_default_remote())
        for p in root.rglob("*")
        if p.is_file()
    ]
    assert not md5s & set(stored)

    from facegate.flows.data import validate_flow

    (report,) = validate_flow(datasets=["captures"])  # what is left still passes its suite
    assert report["success"] and report["tables"] == {"captures_images": 4 * (len(CONSENTING) - 1)}
