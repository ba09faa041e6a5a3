"""The CLI's single-item commands as an operator runs them (real processes, a sandbox repository): one
error line on stderr, no Prefect, MLflow still records the change, DVC snapshots made in the
background and coalesced; `--debug` shows the traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import mlflow
import psutil
import pytest

from facegate.components.core.paths import repo_root, use_mlflow_store
from tests.conftest import shared_dataset

pytestmark = pytest.mark.integration
TAU = 0.5


def crop(person, n=1):
    return shared_dataset("faceapi-examples") / person / f"{person}{n}.png"


def facegate(*args, timeout=120):
    """`facegate ARGS` in a fresh process; Prefect pointed at a port where nothing listens, so a
    command that needed a Prefect server would fail."""
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    return subprocess.run(
        [sys.executable, "-m", "facegate.cli.main", *map(str, args)],
        cwd=repo_root(),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def seeded(sandbox):
    seed_gallery()
    return sandbox


def seed_gallery() -> None:
    """The sandbox's gallery with amy enrolled by the model the CLI serves (tau fixed: no calibration
    data needed)."""
    from facegate.components.core.settings import load_settings
    from facegate.components.gallery import Gallery
    from facegate.components.gallery.enrolment import Photo
    from facegate.components.lifecycle.model_loading import service_recognizer
    from facegate.components.service.deployment import gallery_store
    from facegate.components.service.facade import FaceGate

    settings = load_settings()
    r = service_recognizer(settings)
    gate = FaceGate(
        settings,
        store=gallery_store(),
        recognizer=r,
        new_gallery=lambda: Gallery.new(r.embedding_dim, r.embedder_name, r.embedder_version, tau=TAU, target_far=1e-3),
    )
    gate.enrol("amy", "Amy", [Photo("amy1.png", crop("amy").read_bytes())])


def wait_gone(pid: int, timeout: float = 120) -> None:
    try:
        psutil.Process(pid).wait(timeout)
    except psutil.NoSuchProcess:
        pass


@pytest.mark.parametrize(
    "args, code",
    [
        (["enroll", "--id", "amy", "PHOTO:amy:2"], "employee_exists"),
        (["remove", "nobody"], "unknown_employee"),
        (["enroll", "--id", "group", "GROUP"], "multiple_faces"),
        (["enroll", "--id", "bad id!", "PHOTO:penny:1"], "invalid_employee"),
        (["verify", "--id", "nobody", "PHOTO:amy:2"], "unknown_employee"),
        (["identify", "MISSING"], "unreadable_image"),
    ],
    ids=["duplicate-id", "unknown-id", "two-faces", "bad-id", "verify-unknown", "missing-frame"],
)
def test_errors_are_exactly_one_line(seeded, tmp_path, args, code):
    def resolve(a):
        if a.startswith("PHOTO:"):
            _, person, n = a.split(":")
            return crop(person, int(n))
        return {"GROUP": shared_dataset("faceapi-examples") / "bbt2.jpg", "MISSING": tmp_path / "missing.jpg"}.get(a, a)

    r = facegate(*[resolve(a) for a in args])
    lines = r.stderr.splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error [{code}]: "), r.stderr
    assert r.stdout == ""


def test_debug_shows_the_traceback(seeded):
    r = facegate("--debug", "remove", "nobody")
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and lines[0].startswith("Traceback") and len(lines) > 3
    assert lines[-1].startswith("error [unknown_employee]: ")


def test_enrol_and_remove_record_mlflow_and_snapshot_in_the_background(seeded):
    from facegate.components.lifecycle import gallery_snapshots
    from facegate.components.lifecycle.data_version import read_version

    t0 = time.perf_counter()
    r = facegate("enroll", "--id", "raj", "--name", "Raj", crop("raj"))
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["employee_id"] == "raj" and out["employees"] == 2
    # the MLflow run is logged after the answer, by the detached process that makes the snapshot
    assert "background" in out["gallery_snapshot"] and "background" in out["mlflow_run"]
    pid = int(out["gallery_snapshot"].split("pid ")[1].rstrip(")"))
    wait_gone(pid)
    first = read_version(target="gallery")
    assert first and not gallery_snapshots.is_dirty()
    from facegate.components.service.gallery_changes import pending_records_dir

    assert not list(pending_records_dir().iterdir())  # logged and cleared

    r = facegate("remove", "raj")
    assert r.returncode == 0, r.stderr
    wait_gone(int(json.loads(r.stdout)["gallery_snapshot"].split("pid ")[1].rstrip(")")))
    assert read_version(target="gallery") not in (None, first) and not gallery_snapshots.is_dirty()

    use_mlflow_store()
    runs = mlflow.search_runs(experiment_names=["facegate-gallery"])
    assert sorted(runs["tags.mlflow.runName"]) == ["enrol", "remove"]
    assert set(runs["status"]) == {"FINISHED"}
    print(f"CLI enrolment end to end: {wall:.1f} s (load {os.getloadavg()[0]:.2f})")


def test_gallery_snapshot_forces_one_and_coalesces(seeded):
    from facegate.components.lifecycle import gallery_snapshots
    from facegate.components.lifecycle.data_version import read_version

    gallery_snapshots.mark_dirty()
    r = facegate("gallery", "snapshot")
    assert r.returncode == 0 and r.stdout.startswith("gallery.dvc: "), r.stderr
    assert r.stdout.split()[-1] == read_version(target="gallery") and not gallery_snapshots.is_dirty()
    # nothing pending: --pending does nothing, quietly
    r = facegate("gallery", "snapshot", "--pending")
    assert r.returncode == 0 and r.stdout == ""
    # a burst of requests, then several pending snapshotters: one snapshot is made, the rest find nothing
    for _ in range(5):
        gallery_snapshots.mark_dirty()
    pids = [gallery_snapshots.spawn_pending_snapshot() for _ in range(3)]
    for pid in pids:
        wait_gone(pid)
    log = (seeded.root / ".facegate" / "logs" / "gallery-snapshot.log").read_text()
    assert log.count("gallery.dvc: ") == 1 and not gallery_snapshots.is_dirty()


def test_one_enrolment_imports_neither_mlflow_nor_prefect(seeded):
    """The one-item enrolment's budget (issue 17: 5 s end to end on 2 cores) has no room for MLflow's
    import and store (~4 s: the champion lookup, the run) or Prefect: the gallery's own pretrained model is
    served, and the run is logged by the detached snapshot process."""
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "facegate.cli.main", "enroll", "--id", "raj", crop("raj")],
        cwd=repo_root(),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" in imported  # the measurement works
    assert not {"mlflow", "prefect"} & imported
    wait_gone(int(json.loads(r.stdout)["gallery_snapshot"].split("pid ")[1].rstrip(")")))


def test_enrolment_outside_the_repository_logs_its_run_after_answering(sandbox, tmp_path):
    """A deployment's state folder outside the repository (no DVC snapshot): the enrolment still answers
    without MLflow (issue 31); its run waits in the outbox until the detached flusher has logged it."""
    home = tmp_path / "deployment"
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api", "FACEGATE_HOME": str(home)}
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "facegate.cli.main", "enroll", "--id", "raj", crop("raj")],
        cwd=repo_root(),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" in imported and not {"mlflow", "prefect", "scipy"} & imported
    out = json.loads(r.stdout)
    assert out["employees"] == 1 and out["gallery_snapshot"].startswith("none: ")
    wait_gone(int(out["mlflow_run"].split("pid ")[1].rstrip(")")))
    assert not list((home / "pending-records").iterdir())
    use_mlflow_store(f"sqlite:///{home / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["facegate-gallery"])
    assert list(runs["tags.mlflow.runName"]) == ["enrol"] and list(runs["status"]) == ["FINISHED"]
    assert list(runs["params.photos"]) == ["1"] and list(runs["metrics.employees"]) == [1.0]
