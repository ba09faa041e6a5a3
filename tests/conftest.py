"""Shared test set-up: quiet environment, the datasets root, a sandbox repository for real flow runs."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from facegate.components.core.paths import QUIET_ENV, datasets_root, repo_root

for _k, _v in QUIET_ENV.items():
    os.environ.setdefault(_k, _v)


# One OpenVINO IR cache for the session's sandboxes (each has its own state folder): the backbones and
# the served graphs are converted once per weights, not once per test (seconds each).
os.environ.setdefault("FACEGATE_IR_CACHE", tempfile.mkdtemp(prefix="facegate-test-ir-"))

SHARED_DATASETS = datasets_root()  # read before any test points FACEGATE_DATASETS at a sandbox


def without_pad(params_text: str) -> str:
    """params.yaml's text with ``pad.mode: "off"``. The suite's photos (TV stills, news photos) are
    recaptures to a presentation-attack detector, which ``enforce`` (the product's default) rightly
    refuses; tests about recognition run without PAD, PAD's own tests set the mode they test."""
    return re.sub(r"(\npad:[^\n]*\n(?:[ #][^\n]*\n)*?  mode: )\S+", r'\1"off"', params_text, count=1)


if "FACEGATE_PARAMS" not in os.environ:  # a run pointed at its own params keeps them
    _NO_PAD = Path(tempfile.mkdtemp(prefix="facegate-test-params-")) / "params.yaml"
    _NO_PAD.write_text(without_pad((repo_root() / "params.yaml").read_text()))
    os.environ["FACEGATE_PARAMS"] = str(_NO_PAD)


def _missing_dataset(name: str) -> str:
    return f"dataset {name!r} not found under {SHARED_DATASETS} (set FACEGATE_DATASETS)"


def requires_dataset(*names: str) -> pytest.MarkDecorator:
    """Skip (with the reason) a test or module whose shared datasets are not under the datasets root."""
    missing = [n for n in names if not (SHARED_DATASETS / n).exists()]
    return pytest.mark.skipif(bool(missing), reason="; ".join(_missing_dataset(n) for n in missing))


# OpenVINO is a pinned dependency; a machine without it runs the torch paths, and these tests skip there.
requires_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")


def _gpu_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


requires_gpu = pytest.mark.skipif(not _gpu_available(), reason="no CUDA GPU on this machine")


def shared_dataset(name: str) -> Path:
    """The shared dataset's folder (the test is skipped, with the reason, when it is missing)."""
    path = SHARED_DATASETS / name
    if not path.exists():
        pytest.skip(_missing_dataset(name))
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
    return make_sandbox(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def module_sandbox(tmp_path_factory):
    """``sandbox`` shared by one test module (a chain of scenarios that build on each other)."""
    with pytest.MonkeyPatch.context() as mp:
        yield make_sandbox(tmp_path_factory.mktemp("sandbox"), mp)


def make_sandbox(base: Path, monkeypatch: pytest.MonkeyPatch):
    repo = base / "repo"
    repo.mkdir()
    datasets = base / "datasets"
    datasets.mkdir()
    params = yaml.safe_load(without_pad((repo_root() / "params.yaml").read_text()))
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
    from facegate.components.lifecycle.data_version import ensure_repo

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
            return subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
            ).stdout.strip()

    return Sandbox
