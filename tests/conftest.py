"""Shared test set-up: quiet environment, the datasets root, a sandbox repository for real flow runs."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components.paths import QUIET_ENV, datasets_root, repo_root

for _k, _v in QUIET_ENV.items():
    os.environ.setdefault(_k, _v)


SHARED_DATASETS = datasets_root()  # read before any test points FACEGATE_DATASETS at a sandbox


def shared_dataset(name: str) -> Path:
    path = SHARED_DATASETS / name
    if not path.exists():
        pytest.skip(f"dataset {name!r} not found under {SHARED_DATASETS} (set FACEGATE_DATASETS)")
    return path


def link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


@pytest.fixture(scope="session")
def prefect_server():
    """A real, temporary Prefect server for the whole session (its own SQLite database)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A fresh git repository with facegate's params and a small datasets root, isolated from the real
    one: its own data/, data.dvc, DVC remote and MLflow store."""
    repo = tmp_path / "repo"
    repo.mkdir()
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    params = yaml.safe_load((repo_root() / "params.yaml").read_text())
    params["ingest"]["datasets"] = []
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    (repo / ".gitignore").write_text("/.facegate/\n/data/\n")
    monkeypatch.setenv("FACEGATE_REPO", str(repo))
    monkeypatch.setenv("FACEGATE_HOME", str(repo / ".facegate"))
    monkeypatch.setenv("FACEGATE_DATASETS", str(datasets))
    monkeypatch.setenv("FACEGATE_PARAMS", str(repo / "params.yaml"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FACEGATE_DVC_REMOTE", raising=False)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], cwd=repo, check=True)
    from components.data_version import ensure_repo

    ensure_repo(repo)  # as in the real repository, where .dvc/ is committed
    subprocess.run(git + ["add", "."], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "sandbox"], cwd=repo, check=True)

    class Sandbox:
        root = repo
        datasets_root = datasets

        @staticmethod
        def add_dataset(name: str, kind: str, path: str) -> None:
            p = yaml.safe_load((repo / "params.yaml").read_text())
            p["ingest"]["datasets"].append({"name": name, "kind": kind, "path": path})
            (repo / "params.yaml").write_text(yaml.safe_dump(p))

        @staticmethod
        def commit() -> None:
            subprocess.run(git + ["add", "."], cwd=repo, check=True)
            subprocess.run(git + ["commit", "-qm", "change"], cwd=repo, check=True)

        @staticmethod
        def head() -> str:
            return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                                  text=True, check=True).stdout.strip()

    return Sandbox
