"""The one DVC helper: initialise, version ``data/`` (-> ``data.dvc``), push and pull.

DVC runs as a subprocess of the same interpreter (``python -m dvc``), so whatever the virtual
environment pins is what versions the data. The default remote is a folder in the state dir; a URL in
FACEGATE_DVC_REMOTE (``s3://bucket/prefix``, dvc-s3 is pinned) replaces it for the data and the gallery;
FACEGATE_DVC_GALLERY_REMOTE gives the gallery (enrolment photos: biometric data) a remote of its own.
An S3-compatible store that is not AWS is named by AWS_ENDPOINT_URL (written to DVC's uncommitted
``config.local`` as ``endpointurl``); the keys stay in the environment (AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY), never in a config file. A push or pull that cannot reach the store fails with
a ``DataVersionError`` that names it. An erasure purges a removed employee's objects from the cache
and the folder remotes (``purge_objects``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import yaml

from facegate.components.core.errors import DataVersionError
from facegate.components.core.paths import dvc_default_remote, repo_root

REMOTE_NAME = "local"
GALLERY_REMOTE_NAME = "gallery"  # only when FACEGATE_DVC_GALLERY_REMOTE is set
DATA_TARGET = "data"
CLOUD_SCHEMES = ("s3://", "gs://", "azure://", "ssh://", "http://", "https://")


def _dvc(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_NO_UPDATE_CHECK": "1"}
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
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
    remotes = {REMOTE_NAME: remote_url}
    if os.environ.get("FACEGATE_DVC_GALLERY_REMOTE"):
        remotes[GALLERY_REMOTE_NAME] = os.environ["FACEGATE_DVC_GALLERY_REMOTE"]
    if remote_url != str((root / ".facegate" / "dvc-remote").resolve()) or local_cfg.exists():
        _write_local_remotes(local_cfg, remotes)
    for url in remotes.values():
        if not url.startswith(CLOUD_SCHEMES):
            Path(url).mkdir(parents=True, exist_ok=True)
    return root


def _write_local_remotes(path: Path, remotes: dict[str, str]) -> None:
    """Each remote's url (and, for S3, the endpoint of a non-AWS store) in ``.dvc/config.local``; written
    only when something changed. A remote no longer asked for (the gallery's) is dropped."""
    from configobj import ConfigObj  # optional: only this path needs it

    cfg = ConfigObj(str(path)) if path.is_file() else ConfigObj()
    cfg.filename = str(path)
    before = cfg.dict()
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("FACEGATE_S3_ENDPOINT_URL")
    for section in [s for s in cfg if s.startswith('remote "')]:
        if section[len('remote "') : -1] not in remotes:
            del cfg[section]
    for name, url in remotes.items():
        section = cfg.setdefault(f'remote "{name}"', {})
        section["url"] = url
        if url.startswith("s3://") and endpoint:
            section["endpointurl"] = endpoint
        else:
            section.pop("endpointurl", None)
    if cfg.dict() != before or not path.is_file():
        cfg.write()


def remote_for(target: str) -> str:
    """The DVC remote ``target`` goes to: the gallery's own remote when one is configured, else the default."""
    if target != DATA_TARGET and os.environ.get("FACEGATE_DVC_GALLERY_REMOTE"):
        return GALLERY_REMOTE_NAME
    return REMOTE_NAME


def remote_url(root: Path, name: str) -> str:
    """The URL remote ``name`` resolves to (config.local over config), '' when unknown."""
    from configobj import ConfigObj  # optional: only this path needs it

    url = ""
    for cfg in (root / ".dvc" / "config", root / ".dvc" / "config.local"):
        if cfg.is_file():
            url = ConfigObj(str(cfg)).get(f'remote "{name}"', {}).get("url", url)
    return url


def _transfer(verb: str, root: Path, target: str) -> None:
    """``dvc push|pull -r REMOTE target.dvc``; a store that does not answer is named in the error."""
    remote = remote_for(target)
    try:
        _dvc([verb, "-r", remote, f"{target}.dvc"], root)  # not -q: it would hide DVC's ERROR line
    except DataVersionError as exc:
        url = remote_url(root, remote)
        if not url.startswith(CLOUD_SCHEMES):
            raise
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("FACEGATE_S3_ENDPOINT_URL") or "AWS"
        raise DataVersionError(
            f"object store {url} (endpoint {endpoint}): dvc {verb} of {target} failed: {_dvc_reason(exc.message)}"
        ) from None


def add_data(root: Path | None = None, target: str = "data") -> str:
    """``dvc add data``; returns the new data version (the md5 recorded in ``data.dvc``)."""
    root = ensure_repo(root)
    _dvc(["add", target], root)
    version = read_version(root, target)
    if version is None:
        raise DataVersionError(f"dvc add {target} wrote no {target}.dvc in {root}")
    return version


def _dvc_reason(message: str) -> str:
    """DVC's ERROR line(s) from a ``_dvc`` failure message, else its last words."""
    parts = [p.strip() for p in message.split(" | ")]
    errors = [p[p.index("ERROR") :] for p in parts if "ERROR" in p]
    return " | ".join(errors) if errors else parts[-1]


def push(root: Path | None = None, target: str = "data") -> None:
    root = ensure_repo(root)
    _transfer("push", root, target)


def pull(root: Path | None = None, target: str = "data") -> None:
    root = ensure_repo(root)
    _transfer("pull", root, target)


def purge_objects(md5s: Iterable[str], root: Path | None = None) -> dict:
    """Delete content-addressed objects (``files/md5/ab/cdef...``) from the DVC cache and from every folder
    remote: an erasure, so that a removed employee's images cannot be restored from an older data
    version (an older version that held them then misses those files, as it should). A cloud remote
    (``s3://``...) is named in ``remotes_not_purged``, not touched: its own lifecycle rules or
    ``dvc gc --cloud`` must remove them there."""
    root = Path(root or repo_root())
    if not (root / ".dvc" / "config").is_file():
        return {"objects_purged": 0, "remotes_not_purged": []}
    places, cloud = [root / ".dvc" / "cache"], []
    for name in (REMOTE_NAME, GALLERY_REMOTE_NAME):
        url = remote_url(root, name)
        if url.startswith(CLOUD_SCHEMES):
            cloud.append(url)
        elif url:
            places.append((root / ".dvc" / url).resolve() if not Path(url).is_absolute() else Path(url))
    purged = 0
    for h in set(md5s):
        for base in places:
            obj = base / "files" / "md5" / h[:2] / h[2:]
            if obj.is_file():
                obj.unlink()
                purged += 1
    return {"objects_purged": purged, "remotes_not_purged": sorted(set(cloud))}


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
