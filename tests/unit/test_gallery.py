"""The FAISS gallery on synthetic clustered unit vectors: exact answers, removal, persistence, crashes."""
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

from components.errors import FacegateError
from components.gallery import (
    CURRENT_FILE,
    Gallery,
    GalleryCorrupt,
    GalleryError,
    GalleryLocked,
    GalleryManifest,
    GalleryModelMismatch,
    GalleryNotFound,
    InvalidGalleryInput,
    UnknownEmployee,
    current_version,
    gallery_lock,
    list_versions,
    purge_old_versions,
)
from components.paths import repo_root

DIM = 128


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class Population:
    """``n`` employees, each a random unit centre with ``per`` enrolled vectors close to it."""

    def __init__(self, n: int, per: int, seed: int = 0, noise: float = 0.02) -> None:
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.noise = noise
        self.centres = unit(rng.standard_normal((n, DIM)))
        self.ids = [f"e{i:03d}" for i in range(n)]
        self.names = [f"Employee {i}" for i in range(n)]
        self.enrolled = [unit(c + noise * rng.standard_normal((per, DIM))) for c in self.centres]

    def probe(self, i: int) -> np.ndarray:
        return unit(self.centres[i] + self.noise * self.rng.standard_normal(DIM))

    def fill(self, g: Gallery) -> Gallery:
        for eid, name, emb in zip(self.ids, self.names, self.enrolled):
            g.add(eid, name, emb, [f"{eid}/{j}.jpg" for j in range(len(emb))])
        return g


def brute_force(pop: Population, query: np.ndarray, exclude: set[str] = frozenset()) -> list[tuple[str, float]]:
    best = []
    for eid, emb in zip(pop.ids, pop.enrolled):
        if eid in exclude:
            continue
        ip = float(np.max(emb.astype(np.float64) @ query.astype(np.float64)))
        best.append((eid, float(np.sqrt(max(2 - 2 * ip, 0)))))
    return sorted(best, key=lambda t: t[1])


@pytest.fixture
def pop() -> Population:
    return Population(n=12, per=3)


@pytest.fixture
def gallery(pop: Population) -> Gallery:
    return pop.fill(Gallery.new(DIM, "dlib_resnet", "3", tau=0.6))


# ------------------------------------------------------------------------------------ in memory


def test_search_matches_brute_force(gallery: Gallery, pop: Population) -> None:
    queries = np.stack([pop.probe(i) for i in range(len(pop.ids))])
    results = gallery.search(queries, k=5)
    assert len(results) == len(pop.ids)
    for i, res in enumerate(results):
        expected = brute_force(pop, queries[i])[:5]
        assert [r[0] for r in res] == [e[0] for e in expected]
        assert res[0][1] == pop.names[i]
        np.testing.assert_allclose([r[2] for r in res], [e[1] for e in expected], atol=1e-4)
        assert len({r[0] for r in res}) == len(res)  # one entry per employee


def test_enrolled_vector_is_at_distance_zero(gallery: Gallery, pop: Population) -> None:
    res = gallery.search(pop.enrolled[4][1], k=1)[0]
    assert res[0][0] == "e004" and res[0][2] == pytest.approx(0.0, abs=2e-3)


def test_search_k_larger_than_gallery(gallery: Gallery, pop: Population) -> None:
    res = gallery.search(pop.probe(0), k=100)[0]
    assert len(res) == len(pop.ids)


def test_identify_and_verify(gallery: Gallery, pop: Population) -> None:
    q = pop.probe(7)
    eid, d, name = gallery.identify(q)  # tau from the manifest
    assert (eid, name) == ("e007", "Employee 7") and d == pytest.approx(brute_force(pop, q)[0][1], abs=1e-4)
    assert gallery.identify(q, tau=0.01)[0] is None
    stranger = unit(np.random.default_rng(99).standard_normal(DIM))
    eid, d, name = gallery.identify(stranger)
    assert eid is None and name is None and d > 1.0

    ok, d = gallery.verify("e007", q)
    assert ok and d == pytest.approx(brute_force(pop, q)[0][1], abs=1e-4)
    ok, d = gallery.verify("e003", q)
    assert not ok and d > 1.0
    with pytest.raises(UnknownEmployee) as exc:
        gallery.verify("nobody", q)
    assert exc.value.code == "unknown_employee" and isinstance(exc.value, FacegateError)


def test_no_threshold_is_a_typed_error(pop: Population) -> None:
    g = pop.fill(Gallery.new(DIM, "m", "1"))
    with pytest.raises(InvalidGalleryInput) as exc:
        g.identify(pop.probe(0))
    assert exc.value.field == "tau"
    g.set_threshold(np.float32(0.5), target_far=1e-3, achieved_far=np.float64(8e-4), achieved_tar=0.97)
    assert json.loads(g.manifest.to_json())["tau"] == 0.5
    assert g.identify(pop.probe(0))[0] == "e000"


def test_empty_gallery() -> None:
    g = Gallery.new(DIM, "m", "1", tau=0.6)
    q = unit(np.ones(DIM))
    assert g.search(q, k=3) == [[]]
    assert g.identify(q) == (None, float("inf"), None)
    assert g.employees().empty


def test_remove_never_returns_removed(gallery: Gallery, pop: Population) -> None:
    assert gallery.remove("e005") == 3
    assert "e005" not in gallery and gallery.n_vectors == 33 and gallery.manifest.n_employees == 11
    queries = np.concatenate([pop.enrolled[5], pop.probe(5)[None]])
    for q, res in zip(queries, gallery.search(queries, k=20)):
        assert [r[0] for r in res] == [e[0] for e in brute_force(pop, q, {"e005"})]
    assert gallery.identify(pop.probe(5))[0] is None
    with pytest.raises(UnknownEmployee):
        gallery.remove("e005")
    with pytest.raises(UnknownEmployee):
        gallery.verify("e005", pop.probe(5))


def test_replace_and_ids_never_reused(gallery: Gallery, pop: Population) -> None:
    before = set(gallery.sidecar["vector_id"])
    assert max(before) == 35
    new = unit(pop.centres[2] + 0.02 * pop.rng.standard_normal((2, DIM)))
    ids = gallery.replace("e001", "Renamed One", new, ["e001/new0.jpg", "e001/new1.jpg"])
    assert list(ids) == [36, 37]
    assert gallery.search(new[0], k=1)[0][0][:2] == ("e001", "Renamed One")
    assert gallery.verify("e001", new[1], tau=0.1)[0]
    assert not gallery.verify("e001", pop.enrolled[1][0], tau=0.5)[0]  # old vectors are gone
    row = gallery.employees().set_index("employee_id").loc["e001"]
    assert row["name"] == "Renamed One" and row["n_vectors"] == 2

    gallery.remove("e000")
    ids = gallery.add("e000", "Back Again", pop.enrolled[0], None)
    assert list(ids) == [38, 39, 40]
    all_ids = gallery.sidecar["vector_id"].to_numpy()
    assert len(set(all_ids)) == len(all_ids) and np.all(np.diff(all_ids) > 0)
    assert gallery.replace("e999", "New Hire", pop.probe(3)).tolist() == [41]  # absent: enrols


def test_replace_with_bad_input_keeps_the_employee(gallery: Gallery, pop: Population) -> None:
    with pytest.raises(InvalidGalleryInput):
        gallery.replace("e001", "x", np.ones((1, DIM), np.float32))
    assert gallery.employees().set_index("employee_id").loc["e001", "n_vectors"] == 3


def test_employees_table(gallery: Gallery) -> None:
    gallery.add("e000", "Employee 0", unit(np.ones((2, DIM))), ["a.jpg", "b.jpg"])
    df = gallery.employees()
    assert list(df.columns) == ["employee_id", "name", "n_vectors"]
    assert len(df) == 12 and df.iloc[0].tolist() == ["e000", "Employee 0", 5]
    assert list(gallery.sidecar.columns) == ["vector_id", "employee_id", "name", "photo", "added_at"]


@pytest.mark.parametrize("bad, field", [
    (np.ones((2, 64), np.float32) / 8.0, "embeddings"),       # wrong dim (but unit norm)
    (np.ones((2, DIM), np.float32), "embeddings"),            # not normalised
    (np.full((1, DIM), np.nan, np.float32), "embeddings"),    # NaN
    (np.zeros((0, DIM), np.float32), "embeddings"),           # empty
    (np.ones((2, 2, DIM), np.float32), "embeddings"),         # 3-d
])
def test_bad_embeddings_are_typed_errors_naming_the_field(gallery: Gallery, bad: np.ndarray, field: str) -> None:
    n = gallery.n_vectors
    with pytest.raises(InvalidGalleryInput) as exc:
        gallery.add("x", "X", bad, None)
    assert exc.value.field == field and field in str(exc.value) and exc.value.code == "invalid_gallery_input"
    assert gallery.n_vectors == n


def test_bad_queries_and_other_fields(gallery: Gallery, pop: Population) -> None:
    with pytest.raises(InvalidGalleryInput, match="^queries: dimension 64"):
        gallery.search(unit(np.ones((1, 64))))
    with pytest.raises(InvalidGalleryInput, match="^query: .*norm"):
        gallery.identify(np.ones(DIM, np.float32))
    with pytest.raises(InvalidGalleryInput, match="^photos:"):
        gallery.add("x", "X", pop.enrolled[0], ["only-one.jpg"])
    with pytest.raises(InvalidGalleryInput, match="^photos:.*relative"):
        gallery.add("x", "X", pop.enrolled[0][:1], ["/home/me/x.jpg"])
    with pytest.raises(InvalidGalleryInput, match="^employee_id:"):
        gallery.add("", "X", pop.enrolled[0][:1])
    with pytest.raises(InvalidGalleryInput, match="^k:"):
        gallery.search(pop.probe(0), k=0)
    with pytest.raises(InvalidGalleryInput, match="^index_kind:"):
        Gallery.new(DIM, "m", "1", index_kind="lsh")


def test_use_gpu_falls_back_to_cpu(pop: Population) -> None:
    g = pop.fill(Gallery.new(DIM, "m", "1", use_gpu=True, tau=0.6))
    assert g.identify(pop.probe(3))[0] == "e003"


# ----------------------------------------------------------------------------------- index kinds


def test_ivf_trains_once_enough_vectors(tmp_path: Path) -> None:
    pop = Population(n=40, per=4, seed=1)  # 160 vectors >= 39 * 4
    g = Gallery.new(DIM, "m", "1", index_kind="ivf", ivf_nlist=4, ivf_nprobe=4)
    for i in range(30):
        g.add(pop.ids[i], pop.names[i], pop.enrolled[i])
    assert g.manifest.index_kind_effective == "flat"  # 120 < 156: exact search fallback
    assert g.identify(pop.probe(3), tau=0.6)[0] == "e003"
    for i in range(30, 40):
        g.add(pop.ids[i], pop.names[i], pop.enrolled[i])
    assert g.manifest.index_kind_effective == "ivf" and g.index.ntotal == 160
    g.remove("e010")
    assert g.manifest.index_kind_effective == "ivf" and g.index.ntotal == 156
    assert g.search(pop.probe(10), k=40)[0][0][0] != "e010"
    assert g.identify(pop.probe(11), tau=0.6)[0] == "e011"


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_round_trip_same_top1_as_flat(tmp_path: Path, kind: str) -> None:
    pop = Population(n=40, per=4, seed=2)
    flat = pop.fill(Gallery.new(DIM, "m", "1", tau=0.6))
    other = pop.fill(Gallery.new(DIM, "m", "1", index_kind=kind, ivf_nlist=4, ivf_nprobe=4, hnsw_m=16, tau=0.6))
    assert other.manifest.index_kind_effective == kind
    queries = np.stack([pop.probe(i) for i in range(40)])
    expected = [r[0][0] for r in flat.search(queries, k=1)]
    assert expected == pop.ids

    flat.save(tmp_path / "flat")
    other.save(tmp_path / kind)
    loaded_flat = Gallery.load(tmp_path / "flat")
    loaded = Gallery.load(tmp_path / kind)
    assert loaded.manifest == other.manifest and loaded.manifest.index_kind_effective == kind
    assert [r[0][0] for r in loaded.search(queries, k=1)] == expected
    assert [r[0][0] for r in loaded_flat.search(queries, k=1)] == expected
    pd.testing.assert_frame_equal(loaded.sidecar, other.sidecar, check_dtype=False)
    np.testing.assert_array_equal(loaded.vectors, other.vectors)

    # removal after a load works for every kind (HNSW: rebuilt from the stored vectors)
    loaded.remove("e020")
    assert "e020" not in [r[0] for r in loaded.search(pop.probe(20), k=40)[0]]
    loaded.save(tmp_path / kind)
    again = Gallery.load(tmp_path / kind)
    assert again.n_vectors == 156 and "e020" not in again
    assert again.add("e020", "back", pop.enrolled[20]).tolist() == [160, 161, 162, 163]


# ----------------------------------------------------------------------------------- persistence


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


def test_failed_pointer_swap_keeps_previous_version(tmp_path: Path, gallery: Gallery, pop: Population,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
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


def test_failed_directory_swap_keeps_previous_version(tmp_path: Path, gallery: Gallery,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
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


@pytest.mark.parametrize("damage, culprit", [
    (lambda v: (v / "index.faiss").write_bytes((v / "index.faiss").read_bytes()[:100]), "index.faiss"),
    (lambda v: (v / "sidecar.parquet").unlink(), "sidecar.parquet"),
    (lambda v: (v / "sidecar.parquet").write_bytes(b"PAR1 nonsense"), "sidecar.parquet"),
    (lambda v: (v / "vectors.npy").write_bytes(b"\x93NUMPY garbage"), "vectors.npy"),
    (lambda v: np.save(v / "vectors.npy", np.load(v / "vectors.npy")[:-1]), "vectors.npy"),
    (lambda v: (v / "manifest.json").write_text("{not json"), "manifest.json"),
    (lambda v: (v / "manifest.json").write_text(json.dumps(
        {**json.loads((v / "manifest.json").read_text()), "surprise": 1})), "manifest.json"),
    (lambda v: (v / "manifest.json").unlink(), "manifest.json"),
    (lambda v: (v.parent / CURRENT_FILE).write_text("v000042\n"), CURRENT_FILE),
])
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


def test_model_mismatch(gallery: Gallery) -> None:
    gallery.check_model("dlib_resnet", "3")
    gallery.check_model("dlib_resnet")
    with pytest.raises(GalleryModelMismatch) as exc:
        gallery.check_model("dlib_resnet", "4")
    assert exc.value.code == "gallery_model_mismatch" and "version 3" in str(exc.value)
    with pytest.raises(GalleryModelMismatch):
        gallery.check_model("mobilenet_triplet")


def test_lock_is_exclusive_across_processes_and_reentrant(tmp_path: Path) -> None:
    d = tmp_path / "g"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys,time; from components.gallery import gallery_lock\n"
         "with gallery_lock(sys.argv[1]):\n print('held', flush=True); time.sleep(30)", str(d)],
        cwd=repo_root(), stdout=subprocess.PIPE, text=True)
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
from components.gallery import Gallery
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
