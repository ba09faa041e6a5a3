"""Deployment captures (service/captures.py) and template update (service/templates.py): the store, the
review queue's order, labels, retention, erasure with the employee, and diverse templates in the gallery."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import pytest

from facegate.components.core.settings import load_settings
from facegate.components.gallery.enrolment import EnrolmentStore
from facegate.components.service.access_log import AccessLog, now
from facegate.components.service.captures import CaptureStore, InvalidLabel, capture_on, review_priority
from facegate.components.service.facade import FaceGate
from facegate.components.service.templates import farthest_point, remove_template, update_templates
from tests.unit.service.test_duplicate_check import FakeRecognizer, people, photo, unit  # noqa: F401 - fixture

CHIP = np.random.default_rng(0).integers(0, 255, (112, 112, 3), dtype=np.uint8)


def row(emb, **kw) -> dict:
    base = {
        "entrance": "main",
        "decision": "recognized",
        "employee_id": "amy",
        "nearest_id": "amy",
        "distance": 0.5,
        "threshold": 0.6,
        "mask": None,
        "face_px": 120,
        "sharpness": 50.0,
        "model": "fake_backbone@sha256:0123456789abcdef",
        "chip_geometry": "fake",
        "embedding": emb,
        "chip": CHIP,
    }
    return {**base, **kw}


@pytest.fixture
def store(tmp_path) -> CaptureStore:
    return CaptureStore(f"sqlite:///{tmp_path / 'access.db'}", retention_days=30)


def test_capture_is_off_by_default_and_per_entrance():
    s = load_settings()
    assert not capture_on(s, "main")
    on = s.replace({"capture": {"enabled": True, "entrances": ["north"]}})
    assert capture_on(on, "north") and not capture_on(on, "main")
    assert capture_on(s.replace({"capture": {"enabled": True}}), "anywhere")


def test_record_label_and_chip_round_trip(store):
    (cid,) = store.record([row(np.ones(4, np.float32) / 2)])
    assert store.chip(cid)[:4] == b"\x89PNG"
    out = store.label(cid, "employee", None, "op")
    assert out["label_employee_id"] == "amy" and out["labelled_by"] == "op"
    with pytest.raises(InvalidLabel):
        store.label(cid, "maybe", None, "op")
    (unknown,) = store.record([row(np.ones(4, np.float32), decision="not_recognized", employee_id=None)])
    with pytest.raises(InvalidLabel):
        store.label(unknown, "employee", None, "op")  # who it was must be said


def test_queue_puts_near_threshold_masked_and_new_entrances_first(store):
    far, near, masked = store.record(
        [row(np.ones(4), distance=0.1), row(np.ones(4), distance=0.58), row(np.ones(4), distance=0.1, mask="with_mask")]
    )
    queue = store.review_queue(band=0.1)
    assert [r["id"] for r in queue] == [near, masked, far]
    assert "near_threshold" in queue[0]["why"] and "new_entrance" in queue[0]["why"]
    assert review_priority({"distance": 0.1, "threshold": 0.6}, 0.1, 10_000) == (0.0, [])


def test_retention_and_erasure(store):
    old, amy, bob = store.record(
        [
            row(np.ones(4), at=now() - timedelta(days=40)),
            row(np.ones(4)),
            row(np.ones(4), employee_id=None, nearest_id="bob"),
        ]
    )
    assert store.purge() == 1
    store.label(bob, "employee", "amy", "op")  # nearest bob, but it was amy
    assert store.erase_employee("bob") == 1 and store.erase_employee("amy") == 1 and store.count() == 0


def test_farthest_point_prefers_diversity():
    base = unit(np.array([[1.0, 0, 0]]))
    cands = unit(np.array([[1.0, 0.01, 0], [0.9, 0.1, 0], [0, 1.0, 0], [0, 0.99, 0.05]]))
    assert farthest_point(base, cands, 2)[0] in (2, 3) and set(farthest_point(base, cands, 2)) & {0, 1}
    assert farthest_point(base, cands, 0) == []


def test_templates_in_gallery_traceable_removable_and_erased(tmp_path, people):  # noqa: F811 - the fixture
    log = AccessLog(f"sqlite:///{tmp_path / 'access.db'}")
    settings = load_settings().replace({"gallery": {"max_templates": 3}})
    rec = FakeRecognizer(people)
    rec.model = SimpleNamespace(backbone=SimpleNamespace(chip_geometry="fake"))
    g = FaceGate(settings, store=EnrolmentStore(tmp_path / "gallery"), recognizer=rec, access_log=log)
    g.enrol("amy", "Amy", [photo(1)])
    g.enrol("bob", "Bob", [photo(2)])
    rng = np.random.default_rng(1)
    views = [unit(people[1] + s * rng.standard_normal(128)) for s in (0.05, 0.05, 0.05, 0.05, 0.6)]
    ids = g.captures.record([row(v) for v in views])
    for cid in ids:
        g.captures.label(cid, "employee", None, "op")
    out = update_templates(g, actor="op")
    amy = out["employees"]["amy"]
    assert len(amy["templates"]) == 2 and ids[-1] in amy["templates"]  # the distant view is kept
    side = g.snapshot().sidecar
    assert sorted(side[side.employee_id == "amy"].photo)[:2] == [f"capture:{i}" for i in amy["templates"]]
    before = g.gallery_version
    remove_template(g, ids[-1], actor="op")
    assert g.gallery_version != before and ids[-1] not in [c.id for c in g.captures.confirmed("amy")]
    assert any(e["action"] == "template_update" for e in log.audit_events("amy"))
    erased = g.remove_employee("amy", actor="op")
    assert erased["captures_erased"] == len(ids) and g.captures.count("amy") == 0
    assert "amy" not in g.snapshot().sidecar.employee_id.values


def _two_employee_gate(tmp_path, people, **gallery) -> FaceGate:  # noqa: F811 - the fixture
    log = AccessLog(f"sqlite:///{tmp_path / 'access.db'}")
    settings = load_settings().replace({"gallery": {"max_templates": 3, **gallery}})
    rec = FakeRecognizer(people)
    rec.model = SimpleNamespace(backbone=SimpleNamespace(chip_geometry="fake"))
    g = FaceGate(settings, store=EnrolmentStore(tmp_path / "gallery"), recognizer=rec, access_log=log)
    g.enrol("amy", "Amy", [photo(1)])
    g.enrol("bob", "Bob", [photo(2)])
    return g


@pytest.mark.parametrize("margin", [0.03, None])
def test_a_capture_a_known_stranger_would_pass_with_never_becomes_a_template(tmp_path, people, margin):  # noqa: F811
    g = _two_employee_gate(tmp_path, people, template_impostor_margin=margin)
    rng = np.random.default_rng(2)
    view = unit(people[1] + 0.6 * rng.standard_normal(128))  # amy at the door: far from her enrolment photo
    lookalike = unit(view + 0.05 * rng.standard_normal(128))  # a stranger who looks like that capture
    amy, stranger = g.captures.record([row(view), row(lookalike, employee_id=None, decision="not_recognized")])
    g.captures.label(amy, "employee", None, "op")
    g.captures.label(stranger, "stranger", None, "op")
    out = update_templates(g, actor="op")["employees"]
    if margin is None:  # no guard: the capture is learnt, and the stranger would be let in with it
        assert out["amy"]["templates"] == [amy]
    else:
        assert "amy" not in out or out["amy"]["templates"] == []
        assert g.captures.get(amy)["template"] is False


def test_identify_tau_counts_every_template_a_stranger_is_compared_with(tmp_path, people):  # noqa: F811
    g = _two_employee_gate(tmp_path, people)
    views = [unit(people[1] + 0.5 * np.random.default_rng(k).standard_normal(128)) for k in (1, 2)]
    ids = g.captures.record([row(v) for v in views])
    for cid in ids:
        g.captures.label(cid, "employee", None, "op")
    update_templates(g, actor="op")
    gallery = g.gallery()
    assert (gallery.n_employees, gallery.n_vectors) == (2, 4)
    scores = g.impostor_scores(gallery)
    target = g.settings.gallery.target_fpir
    tau = g.identify_tau(gallery, target)
    assert tau == scores.tau_for_fpir(target, 4) and tau < scores.tau_for_fpir(target, 2)
