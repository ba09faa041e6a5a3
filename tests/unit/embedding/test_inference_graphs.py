"""The cascade's cheap pass as one OpenVINO graph (facegate.components.embedding.inference_graphs): the graph
is what runs under ``embedding.backend: openvino``, it embeds real LFW faces as torch's path does, from
the member's part of a paired chip alone, and torch runs it everywhere else."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facegate.components.embedding import inference_graphs as mg
from facegate.components.embedding import openvino_runtime as rt
from facegate.components.embedding.backbones import make_backbone
from facegate.components.embedding.members import member_embed_chips, member_slice
from facegate.components.embedding.model import EmbeddingModel
from facegate.components.embedding.precision import native_bfloat16, set_precision
from tests.conftest import requires_openvino, shared_dataset

pytestmark = requires_openvino


@pytest.fixture(scope="module")
def fused_and_crops(tmp_path_factory):
    from facegate.components.core.images import load_image
    from facegate.components.faces.align import PAIRED_GEOMETRY, FaceAligner
    from facegate.components.faces.detectors import YuNetDetector
    from facegate.components.faces.pipeline import FaceFinder

    lfw = shared_dataset("lfw")
    finder = FaceFinder(YuNetDetector(0, score_threshold=0.6, max_side=1280), FaceAligner(geometry=PAIRED_GEOMETRY))
    files = [sorted((lfw / n).glob("*.jpg"))[i] for n in ("Colin_Powell", "Serena_Williams") for i in (0, 1, 2)]
    crops = [c for f in files for c in finder.all_faces(load_image(f))[:1]]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEGATE_HOME", str(tmp_path_factory.mktemp("state")))
        yield EmbeddingModel(make_backbone("dlib_resnet+sface")).eval(), crops


def test_the_graph_runs_the_cheap_pass_and_matches_torch_on_real_faces(fused_and_crops):
    model, crops = fused_and_crops
    chips = np.stack([c.chip for c in crops])
    for name in ("sface", "dlib_resnet"):
        where = member_slice(model, name)
        member, head = model.backbone.member_backbones[where.position], model.head.heads[where.position]
        set_precision(model, "float32")
        rt.set_backend(model, "torch")
        with torch.inference_mode():
            assert mg.member_graph(member, head, member.input_size) is None  # torch asked for: torch runs
        ref = member_embed_chips(model, chips, where)
        set_precision(model, "auto")
        rt.set_backend(model, "openvino")
        with torch.inference_mode():
            graph = mg.member_graph(member, head, member.input_size)
            assert isinstance(graph, mg.CompiledEmbedding)
            assert mg.member_graph(member, head, member.input_size + 1) is None  # a chip to resize: torch
        got = member_embed_chips(model, chips, where)
        one = member_embed_chips(model, chips[:1], where)  # a batch other than the traced one
        rt.set_backend(model, "torch")
        set_precision(model, "float32")
        bound = 0.9995 if native_bfloat16() else 0.99999
        assert np.sum(ref * got, axis=1).min() >= bound, name
        assert np.allclose(one[0], got[0], atol=1e-3)
        sims = got @ got.T
        assert sims[0, 1] > sims[0, 3] and sims[3, 4] > sims[1, 4]  # the same person still closer


def test_the_cheap_pass_embeds_the_members_part_of_a_deferred_crop_as_the_whole_chip(fused_and_crops):
    """``FaceCrop.chip_for``: only the ArcFace chip is aligned (zeros where dlib's goes), and SFace's
    embedding of it is the one of the whole chip; the whole chip is still made on request."""
    model, crops = fused_and_crops
    where = member_slice(model, "sface")
    whole = np.stack([c.chip for c in crops])
    from facegate.components.faces.pipeline import FaceCrop

    fresh = [FaceCrop(c.box, image=c_image, aligner=aligner) for c, c_image, aligner in _sources(crops)]
    partial = np.stack([c.chip_for("arcface_112") for c in fresh])
    assert not partial[..., :3].any() and np.array_equal(partial[..., 3:], whole[..., 3:])
    assert np.allclose(member_embed_chips(model, partial, where), member_embed_chips(model, whole, where), atol=1e-6)
    assert all(np.array_equal(f.chip, w) for f, w in zip(fresh, whole))  # made on first use, the same chip
    with pytest.raises(ValueError):
        FaceCrop(crops[0].box)


def _sources(crops):
    """Each test crop's frame and aligner again (the fixture's crops have made their chips already)."""
    from facegate.components.core.images import load_image
    from facegate.components.faces.align import PAIRED_GEOMETRY, FaceAligner

    lfw = shared_dataset("lfw")
    aligner = FaceAligner(geometry=PAIRED_GEOMETRY)
    files = [sorted((lfw / n).glob("*.jpg"))[i] for n in ("Colin_Powell", "Serena_Williams") for i in (0, 1, 2)]
    return [(c, load_image(f), aligner) for c, f in zip(crops, files)]


def test_the_full_embedding_runs_as_one_graph_and_matches_torch_on_real_faces(fused_and_crops):
    """``embed_chips`` under openvino: the chip and its mirror image through both members, the heads and
    the fusion in one graph, as torch float32 computes them (and torch's path where torch is asked for)."""
    from facegate.components.embedding.model import embed_chips

    model, crops = fused_and_crops
    chips = np.stack([c.chip for c in crops])
    set_precision(model, "float32")
    rt.set_backend(model, "torch")
    with torch.inference_mode():
        assert mg.full_graph(model, chips, True) is None
    ref = {flip: embed_chips(model, chips, flip) for flip in (True, False)}
    set_precision(model, "auto")
    rt.set_backend(model, "openvino")
    try:
        with torch.inference_mode():
            assert isinstance(mg.full_graph(model, chips, True), mg.CompiledEmbedding)
            assert mg.full_graph(model, chips[:, :100, :100], True) is None  # chips of another size: torch
        got = {flip: embed_chips(model, chips, flip) for flip in (True, False)}
        one = embed_chips(model, chips[:1], True)
    finally:
        rt.set_backend(model, "torch")
        set_precision(model, "float32")
    bound = 0.9995 if native_bfloat16() else 0.99999
    for flip in (True, False):
        assert np.sum(ref[flip] * got[flip], axis=1).min() >= bound, flip
    assert np.allclose(one[0], got[True][0], atol=1e-3)
    assert np.sum(got[True] * got[False], axis=1).min() < 0.9999  # the mirror image did count


def test_a_deferred_crop_pickles_with_its_chip(fused_and_crops):
    """Caches of faces (the flywheel's) pickle crops: the chip is made and kept, the frame is not."""
    import pickle

    from facegate.components.faces.pipeline import FaceCrop

    _, crops = fused_and_crops
    (c, image, aligner) = _sources(crops)[0]
    fresh = FaceCrop(c.box, image=image, aligner=aligner)
    back = pickle.loads(pickle.dumps([fresh]))[0]
    assert back.box == c.box and np.array_equal(back.chip, c.chip) and not back.fallback


def test_a_graph_that_cannot_be_built_leaves_torch_to_run_it_with_one_warning(fused_and_crops, monkeypatch, caplog):
    """Never silently another model: the same weights on torch's path, and the reason logged once."""
    from facegate.components.embedding.model import embed_chips

    model, crops = fused_and_crops
    chips = np.stack([c.chip for c in crops[:2]])

    def broken(*args, **kwargs):
        raise RuntimeError("conversion failed\nsecond line")

    monkeypatch.setattr(mg, "_build_full", broken)
    monkeypatch.setattr(mg, "_failed", mg.weakref.WeakKeyDictionary())
    from facegate.components.embedding import folding

    folding._COPIES.pop(model, None)  # the fixture's model has its graph already: build it again
    set_precision(model, "auto")
    rt.set_backend(model, "openvino")
    try:
        with caplog.at_level("WARNING", logger=mg.__name__):
            first = embed_chips(model, chips, True)
            again = embed_chips(model, chips, True)
    finally:
        rt.set_backend(model, "torch")
        set_precision(model, "float32")
    ref = embed_chips(model, chips, True)
    assert np.sum(first * ref, axis=1).min() >= 0.9995 and np.allclose(first, again)
    warnings = [r for r in caplog.records if "full-embedding graph" in r.getMessage()]
    assert len(warnings) == 1 and "conversion failed" in warnings[0].getMessage()
