"""The versioned gallery store: round trips, pruning, failed and killed saves, named corruption, the lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from facegate.components.core.paths import repo_root
from facegate.components.gallery import (
    CURRENT_FILE,
    Gallery,
    GalleryCorrupt,
    GalleryError,
    GalleryLocked,
    GalleryManifest,
    GalleryNotFound,
    current_version,
    gallery_lock,
    list_versions,
    purge_old_versions,
)
from tests.unit.gallery.synthetic import Population


def test_round_trip_flat(tmp_path: Path, gallery: Gallery, pop: Population) -> None:
    gallery.manifest.data_version = "abc123"
    gallery.remove("e002")
    path = gallery.save(tmp_path / "g")
    assert path.name == "v000001" and current_version(tmp_path / "g") == "v000001"
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["n_vectors"] == 33 and manifest["n_employees"] == 11 and manifest["format_version"] == 1
    assert GalleryManifest.from_dict(manifest) == gallery.manifest
    g = Gallery.load(tmp_path / "g")
    assert g.manifest == gallery.manifest
    pd.testing.assert_frame_equal(g.sidecar, gallery.sidecar, check_dtype=False)
    assert g.sidecar["vector_id"].dtype == np.int64
    assert g.identify(pop.probe(9))[0] == "e009" and "e002" not in g
    assert g.add("new", "New", pop.probe(1)).tolist() == [36]  # next id survives the round trip


def test_versions_are_pruned_to_keep(tmp_path: Path, gallery: Gallery) -> None:
    d = tmp_path / "g"
    for _ in range(5):
        gallery.save(d, keep=3)
    assert list_versions(d) == ["v000003", "v000004", "v000005"]
    assert current_version(d) == "v000005"
    assert purge_old_versions(d) == ["v000003", "v000004"]
    assert list_versions(d) == ["v000005"]
    assert Gallery.load(d).n_vectors == gallery.n_vectors
    assert Gallery.load(d, version="v000005").n_vectors == gallery.n_vectors


def test_failed_pointer_swap_keeps_previous_version(
    tmp_path: Path, gallery: Gallery, pop: Population, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "g"
    gallery.save(d)
    gallery.remove("e000")

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("simulated crash during the pointer swap")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(GalleryError, match="previous version is still current"):
        gallery.save(d)
    monkeypatch.undo()
    g = Gallery.load(d)
    assert "e000" in g and g.n_vectors == 36 and current_version(d) == "v000001"
    assert list_versions(d) == ["v000001"]  # the half-done version was cleaned up
    assert [p.name for p in d.iterdir() if p.name.startswith(("CURRENT.", ".tmp-"))] == []


def test_failed_directory_swap_keeps_previous_version(
    tmp_path: Path, gallery: Gallery, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "g"
    gallery.save(d)
    gallery.remove("e000")
    monkeypatch.setattr(os, "rename", lambda *a, **k: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(GalleryError):
        gallery.save(d)
    monkeypatch.undo()
    assert "e000" in Gallery.load(d)
    gallery.save(d)
    assert "e000" not in Gallery.load(d)


def test_leftovers_of_a_dead_writer_are_ignored_then_pruned(tmp_path: Path, gallery: Gallery) -> None:
    d = tmp_path / "g"
    gallery.save(d)
    (d / ".tmp-v000002-123-abcd").mkdir()
    (d / ".tmp-v000002-123-abcd" / "index.faiss").write_bytes(b"half")
    (d / "v000002").mkdir()  # renamed into place, pointer never swapped
    (d / "CURRENT.tmp-123-abcd").write_text("v000002\n")
    assert Gallery.load(d).n_vectors == 36
    gallery.save(d)
    assert current_version(d) == "v000003"
    assert list_versions(d) == ["v000001", "v000003"]
    assert not any(p.name.startswith(("CURRENT.", ".tmp-")) for p in d.iterdir())


@pytest.mark.parametrize(
    "damage, culprit",
    [
        (lambda v: (v / "index.faiss").write_bytes((v / "index.faiss").read_bytes()[:100]), "index.faiss"),
        (lambda v: (v / "sidecar.parquet").unlink(), "sidecar.parquet"),
        (lambda v: (v / "sidecar.parquet").write_bytes(b"PAR1 nonsense"), "sidecar.parquet"),
        (lambda v: (v / "vectors.npy").write_bytes(b"\x93NUMPY garbage"), "vectors.npy"),
        (lambda v: np.save(v / "vectors.npy", np.load(v / "vectors.npy")[:-1]), "vectors.npy"),
        (lambda v: (v / "manifest.json").write_text("{not json"), "manifest.json"),
        (
            lambda v: (v / "manifest.json").write_text(
                json.dumps({**json.loads((v / "manifest.json").read_text()), "surprise": 1})
            ),
            "manifest.json",
        ),
        (lambda v: (v / "manifest.json").unlink(), "manifest.json"),
        (lambda v: (v.parent / CURRENT_FILE).write_text("v000042\n"), CURRENT_FILE),
    ],
)
def test_corruption_is_named(tmp_path: Path, gallery: Gallery, damage, culprit: str) -> None:
    d = tmp_path / "g"
    damage(gallery.save(d))
    with pytest.raises(GalleryCorrupt) as exc:
        Gallery.load(d)
    assert exc.value.code == "gallery_corrupt"
    assert Path(exc.value.path).name == culprit and culprit in str(exc.value)


def test_index_from_another_gallery_is_detected(tmp_path: Path, gallery: Gallery, pop: Population) -> None:
    d = tmp_path / "g"
    v = gallery.save(d)
    gallery.remove("e000")
    gallery.add("e000", "x", pop.enrolled[0])  # same count, different ids
    other = gallery.save(tmp_path / "other")
    (v / "index.faiss").write_bytes((other / "index.faiss").read_bytes())
    with pytest.raises(GalleryCorrupt, match="index.faiss.*vector ids"):
        Gallery.load(d)


def test_missing_gallery(tmp_path: Path) -> None:
    with pytest.raises(GalleryNotFound):
        Gallery.load(tmp_path / "nothing")


def test_lock_is_exclusive_across_processes_and_reentrant(tmp_path: Path) -> None:
    d = tmp_path / "g"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; from facegate.components.gallery import gallery_lock\n"
            "with gallery_lock(sys.argv[1]):\n print('held', flush=True); time.sleep(30)",
            str(d),
        ],
        cwd=repo_root(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(GalleryLocked):
            with gallery_lock(d, timeout=0.2):
                pass
    finally:
        holder.kill()
        holder.wait()
    with gallery_lock(d, timeout=2):
        with gallery_lock(d, timeout=0):  # re-entrant in the same thread
            pass


CHILD = r"""
import sys
import numpy as np
from facegate.components.gallery import Gallery
rng = np.random.default_rng(0)
v = rng.standard_normal((20000, 128)).astype(np.float32)
v /= np.linalg.norm(v, axis=1, keepdims=True)
g = Gallery.new(128, "m", "1")
g.add("bulk", "Bulk", v)
i = 0
while True:
    g.add(f"e{i}", f"E{i}", v[i:i + 1])
    g.save(sys.argv[1], keep=2)
    i += 1
"""


def test_sigkill_during_saves_leaves_a_loadable_gallery(tmp_path: Path) -> None:
    d = tmp_path / "g"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(d)], cwd=repo_root())
    try:
        deadline = time.monotonic() + 15
        while not (d / CURRENT_FILE).exists():
            assert child.poll() is None, "the saving child died on its own"
            assert time.monotonic() < deadline, "the child never saved"
            time.sleep(0.02)
        time.sleep(0.5)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    g = Gallery.load(d)
    assert g.n_vectors == 20000 + g.n_employees - 1 and g.manifest.next_vector_id == g.n_vectors
    with gallery_lock(d, timeout=1):  # the kernel released the dead writer's lock
        pass
    g.save(d, keep=2)
    assert Gallery.load(d).n_vectors == g.n_vectors and len(list_versions(d)) <= 2
