"""DVC remotes chosen by environment (components/lifecycle/data_version.py): an S3 URL and its endpoint go to the
uncommitted config.local, keys never do; the gallery can have a remote of its own; a store that cannot
be reached is named in the error."""

from __future__ import annotations

import socket
import subprocess

import pytest
from configobj import ConfigObj

from facegate.components.core.errors import DataVersionError
from facegate.components.lifecycle import data_version


@pytest.fixture
def repo(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    monkeypatch.setenv("FACEGATE_REPO", str(root))
    monkeypatch.setenv("FACEGATE_HOME", str(root / ".facegate"))
    for var in ("FACEGATE_DVC_REMOTE", "FACEGATE_DVC_GALLERY_REMOTE", "AWS_ENDPOINT_URL", "FACEGATE_S3_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    return root


def test_s3_remotes_and_endpoint_by_environment(repo, monkeypatch):
    monkeypatch.setenv("FACEGATE_DVC_REMOTE", "s3://bucket/data")
    monkeypatch.setenv("FACEGATE_DVC_GALLERY_REMOTE", "s3://private/gallery")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-write-me")
    data_version.ensure_repo(repo)
    local = ConfigObj(str(repo / ".dvc" / "config.local"))
    assert local['remote "local"'] == {"url": "s3://bucket/data", "endpointurl": "http://127.0.0.1:9"}
    assert local['remote "gallery"']["url"] == "s3://private/gallery"
    assert "do-not-write-me" not in (repo / ".dvc" / "config.local").read_text()
    assert data_version.remote_for("gallery") == "gallery" and data_version.remote_for("data") == "local"
    assert data_version.remote_url(repo, "gallery") == "s3://private/gallery"

    monkeypatch.delenv("FACEGATE_DVC_GALLERY_REMOTE")  # switched back: the gallery follows the data remote
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # AWS itself: no endpoint
    data_version.ensure_repo(repo)
    local = ConfigObj(str(repo / ".dvc" / "config.local"))
    assert 'remote "gallery"' not in local and "endpointurl" not in local['remote "local"']
    assert data_version.remote_for("gallery") == "local"


def test_an_unreachable_store_is_named(repo, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("FACEGATE_DVC_REMOTE", "s3://bucket/data")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    (repo / "data").mkdir()
    (repo / "data" / "a.txt").write_text("a")
    data_version.add_data(repo)
    with pytest.raises(
        DataVersionError,
        match=rf"^object store s3://bucket/data \(endpoint http://127.0.0.1:{port}\): "
        r"dvc push of data failed: ERROR",
    ):
        data_version.push(repo)
