"""Where the gallery lives: beside gallery.dvc in the repository, or with a state folder placed
outside it (FACEGATE_HOME), or wherever FACEGATE_GALLERY says; DVC snapshots only inside the repository."""

from __future__ import annotations

from facegate.components.core.paths import gallery_dir
from facegate.components.lifecycle import gallery_snapshots


def test_gallery_follows_the_state_folder_out_of_the_repository(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.setenv("FACEGATE_REPO", str(repo))
    monkeypatch.delenv("FACEGATE_GALLERY", raising=False)
    monkeypatch.delenv("FACEGATE_HOME", raising=False)
    assert gallery_dir() == repo / "gallery" and gallery_snapshots.dvc_target() == "gallery"
    monkeypatch.setenv("FACEGATE_HOME", str(repo / "state"))  # a state folder inside the repository
    assert gallery_dir() == repo / "gallery"
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "srv"))  # a deployment's state folder elsewhere
    assert gallery_dir() == tmp_path / "srv" / "gallery" and gallery_snapshots.dvc_target() is None
    monkeypatch.setenv("FACEGATE_GALLERY", str(repo / "people"))
    assert gallery_dir() == repo / "people" and gallery_snapshots.dvc_target() == "people"


def test_the_service_store_is_the_gallery_dir(tmp_path, monkeypatch):
    from facegate.components.service.deployment import gallery_store

    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "srv"))
    monkeypatch.delenv("FACEGATE_GALLERY", raising=False)
    assert gallery_store().root == tmp_path / "srv" / "gallery"
