"""The one DVC helper: initialise, version ``data/`` (-> ``data.dvc``), push and pull.

DVC runs as a subprocess of the same interpreter (``python -m dvc``), so whatever the virtual
environment pins is what versions the data. The default remote is a folder in the state dir; a URL in
FACEGATE_DVC_REMOTE (``s3://bucket/prefix`` with the dvc-s3 extra installed) replaces it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from components.errors import DataVersionError
from components.paths import dvc_default_remote, repo_root

REMOTE_NAME = "local"


def _dvc(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_NO_UPDATE_CHECK": "1"}
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        msg = (proc.stderr + "\n" + proc.stdout).strip().splitlines()
        raise DataVersionError(f"dvc {' '.join(args)} failed in {cwd}: {' | '.join(msg[-5:])}")
    return proc


def ensure_repo(root: Path | None = None) -> Path:
    """Make ``root`` a DVC repository with linking cache and a remote; idempotent and cheap."""
    root = Path(root or repo_root())
    if not (root / ".dvc" / "config").is_file():
        scm = (root / ".git").exists()
        _dvc(["init", "-q"] if scm else ["init", "-q", "--no-scm"], root)
    cfg = root / ".dvc" / "config"
    text = cfg.read_text()
    if "[cache]" not in text:
        _dvc(["config", "cache.type", "reflink,hardlink,copy"], root)
    if f'remote "{REMOTE_NAME}"' not in text:
        # DVC stores the path relative to .dvc/: the repository's .facegate/dvc-remote.
        _dvc(["remote", "add", "-d", REMOTE_NAME, ".facegate/dvc-remote"], root)
    # A state dir or a remote URL chosen by environment lives in the uncommitted config.local.
    remote_url = os.environ.get("FACEGATE_DVC_REMOTE") or str(dvc_default_remote())
    local_cfg = root / ".dvc" / "config.local"
    if remote_url != str((root / ".facegate" / "dvc-remote").resolve()) or local_cfg.exists():
        _dvc(["remote", "modify", "--local", REMOTE_NAME, "url", remote_url], root)
    if not remote_url.startswith(("s3://", "gs://", "azure://", "ssh://", "http")):
        Path(remote_url).mkdir(parents=True, exist_ok=True)
    return root


def add_data(root: Path | None = None, target: str = "data") -> str:
    """``dvc add data``; returns the new data version (the md5 recorded in ``data.dvc``)."""
    root = ensure_repo(root)
    _dvc(["add", target], root)
    return read_version(root, target)


def push(root: Path | None = None, target: str = "data") -> None:
    root = ensure_repo(root)
    _dvc(["push", "-q", f"{target}.dvc"], root)


def pull(root: Path | None = None, target: str = "data") -> None:
    root = ensure_repo(root)
    _dvc(["pull", "-q", f"{target}.dvc"], root)


def read_version(root: Path | None = None, target: str = "data") -> str | None:
    """The md5 of the directory in ``<target>.dvc``, or None before the first ``dvc add``."""
    path = Path(root or repo_root()) / f"{target}.dvc"
    if not path.is_file():
        return None
    try:
        outs = yaml.safe_load(path.read_text())["outs"]
        return str(outs[0]["md5"])
    except (KeyError, IndexError, TypeError, yaml.YAMLError):
        raise DataVersionError(f"{path}: not a DVC pointer file") from None
