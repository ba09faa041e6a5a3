"""The in-memory gallery on synthetic clustered unit vectors: exact answers, removal, ids, index kinds."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest

from facegate.components.core.errors import FacegateError, SettingsError
from facegate.components.gallery import (
    Gallery,
    GalleryModelMismatch,
    InvalidGalleryInput,
    UnknownEmployee,
    index_kinds,
)
from tests.unit.gallery.synthetic import DIM, Population, brute_force, unit

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


@pytest.mark.parametrize(
    "bad, field",
    [
        (np.ones((2, 64), np.float32) / 8.0, "embeddings"),  # wrong dim (but unit norm)
        (np.ones((2, DIM), np.float32), "embeddings"),  # not normalised
        (np.full((1, DIM), np.nan, np.float32), "embeddings"),  # NaN
        (np.zeros((0, DIM), np.float32), "embeddings"),  # empty
        (np.ones((2, 2, DIM), np.float32), "embeddings"),  # 3-d
    ],
)
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


def test_device_auto_without_a_gpu_searches_on_the_cpu(pop: Population) -> None:
    g = pop.fill(Gallery.new(DIM, "m", "1", device="auto", tau=0.6))
    assert g.device == "cpu" or index_kinds.gpu_available()
    assert g.identify(pop.probe(3))[0] == "e003"


def test_device_gpu_without_a_gpu_is_a_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_kinds, "gpu_available", lambda: False)
    with pytest.raises(SettingsError, match="gallery.device"):
        Gallery.new(DIM, "m", "1", device="gpu")


def test_gpu_device_searches_a_flat_mirror_with_the_same_answers(
    pop: Population, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_kinds, "gpu_available", lambda: True)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda index: index, raising=False)  # CPU stand-in
    on_gpu = pop.fill(Gallery.new(DIM, "m", "1", device="gpu", tau=0.6))
    on_cpu = pop.fill(Gallery.new(DIM, "m", "1", tau=0.6))
    queries = np.stack([pop.probe(i) for i in range(len(pop.ids))])
    assert on_gpu.device == "gpu" and on_gpu.search(queries, k=3) == on_cpu.search(queries, k=3)
    assert isinstance(on_gpu._gpu_index, index_kinds.GpuFlatMirror)
    on_gpu.remove("e004")
    on_cpu.remove("e004")
    assert on_gpu.search(queries, k=3) == on_cpu.search(queries, k=3)  # the mirror follows changes


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


def test_model_mismatch(gallery: Gallery) -> None:
    gallery.check_model("dlib_resnet", "3")
    gallery.check_model("dlib_resnet")
    with pytest.raises(GalleryModelMismatch) as exc:
        gallery.check_model("dlib_resnet", "4")
    assert exc.value.code == "gallery_model_mismatch" and "version 3" in str(exc.value)
    with pytest.raises(GalleryModelMismatch):
        gallery.check_model("mobilenet_triplet")
