"""Template update: confirmed deployment captures become extra gallery vectors of their employee.

Most deployment error comes from the gap between the one clean enrolment photo and what the entrance
camera sees (its lighting, its angle, the masks of winter). An operator-confirmed capture closes it.

- Each employee keeps at most ``gallery.max_templates`` vectors: the enrolment photos always, then
  the confirmed captures chosen for diversity (farthest-point: each next template is the capture
  farthest, in embedding space, from everything already kept), so ten near-identical captures from
  one morning do not crowd out the one masked capture.
- A template's sidecar ``photo`` is ``capture:<id>``: traceable to its capture (and its label's audit
  row); ``remove_template`` takes it out. Every update is a new gallery version, as an enrolment.
- The gallery holds the model in service's embeddings: a capture embedded by another model is
  re-embedded from its chip when the chip's geometry is the model's, else left out (counted). A
  promotion re-embeds enrolment photos only (``reembed_all``): the next update puts the templates back.
- Identify takes the nearest vector of each employee. An employee with m templates offers a stranger m
  chances, so identify's tau is calibrated for the gallery's vectors, not its employees
  (``tau_for_fpir(target, n_vectors)``: the independent-chances bound, docs/decisions/templates.md).
- Template drift and an impostor learnt in: a confirmed capture that lies within ``tau +
  gallery.template_impostor_margin`` of a face the deployment knows is someone else (a capture an
  operator labelled ``stranger``, another employee's confirmed capture or gallery vector) is refused.
  A masked, dark, blurred capture sits close to every other such face; as a template it let the
  flywheel's masked strangers in (12 of 100 on its last day) while helping its own employee little.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from facegate.components.faces.chip_png import decode_chip
from facegate.components.gallery import Gallery, gallery_lock
from facegate.components.service.captures import CaptureStore, Labelled
from facegate.components.service.deployment import local_actor

if TYPE_CHECKING:
    from facegate.components.service.facade import FaceGate

CAPTURE_PREFIX = "capture:"


def farthest_point(base: np.ndarray, candidates: np.ndarray, k: int) -> list[int]:
    """Indices of up to ``k`` candidates, each the farthest (cosine) from ``base`` and those already chosen."""
    if k <= 0 or not len(candidates):
        return []
    chosen: list[int] = []
    nearest = (1.0 - candidates @ base.T).min(axis=1) if len(base) else np.full(len(candidates), np.inf)
    for _ in range(min(k, len(candidates))):
        nearest_free = np.where(np.isin(np.arange(len(candidates)), chosen), -np.inf, nearest)
        best = int(np.argmax(nearest_free))
        chosen.append(best)
        nearest = np.minimum(nearest, 1.0 - candidates @ candidates[best])
    return chosen


def _embeddings(gate: FaceGate, confirmed: list[Labelled]) -> tuple[list[Labelled], np.ndarray]:
    """The confirmed captures usable with the model in service, and their embeddings by it."""
    label, recognizer = gate.model_label(), gate.recognizer
    geometry = recognizer.model.backbone.chip_geometry
    same = [c for c in confirmed if c.model == label]
    again = [c for c in confirmed if c.model != label and c.chip_geometry == geometry]
    embs = [c.embedding for c in same]
    if again:
        embs += list(recognizer.embed_aligned(np.stack([decode_chip(c.chip) for c in again])))
    usable = same + again
    return usable, (np.stack(embs).astype(np.float32) if embs else np.zeros((0, recognizer.embedding_dim), np.float32))


def enrolment_rows(sidecar: pd.DataFrame) -> np.ndarray:
    """Rows of a gallery's enrolment-photo vectors (every row that is not a captured template)."""
    return np.flatnonzero(~sidecar["photo"].astype(str).str.startswith(CAPTURE_PREFIX).to_numpy())


def nearest_distance(queries: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Each query's distance to its nearest row of ``others`` (inf where there is none)."""
    if not len(others):
        return np.full(len(queries), np.inf)
    sims = (np.asarray(queries, np.float32) @ np.asarray(others, np.float32).T).max(axis=1)
    return np.sqrt(np.maximum(2.0 - 2.0 * sims, 0.0))


@dataclass(frozen=True)
class KnownImpostors:
    """Faces the deployment knows are not a given employee: captures an operator labelled ``stranger`` and
    other employees' confirmed captures, embedded by the model in service (other models' are left out)."""

    strangers: np.ndarray  # n x d
    confirmed: np.ndarray  # m x d
    confirmed_of: np.ndarray  # m employee ids

    @classmethod
    def load(cls, store: CaptureStore, everyone: list[Labelled], model: str, dim: int) -> KnownImpostors:
        same = [c for c in everyone if c.model == model]
        strangers = store.labelled_embeddings("stranger", model).reshape(-1, dim)
        confirmed = np.stack([c.embedding for c in same]) if same else np.zeros((0, dim), np.float32)
        return cls(strangers, confirmed, np.array([c.employee_id for c in same], dtype=object))

    def of_others(self, employee_id: str) -> np.ndarray:
        return np.concatenate([self.strangers, self.confirmed[self.confirmed_of != employee_id]])


def update_templates(gate: FaceGate, employee_id: str | None = None, *, actor: str | None = None) -> dict:
    """Re-choose every employee's captured templates (or one employee's): a new gallery version when any
    changed. Returns per employee the templates kept, added and removed, and the confirmed captures
    refused for lying within ``tau + gallery.template_impostor_margin`` of a known impostor."""
    store, gs = gate.captures, gate.settings.gallery
    if store is None:
        return {"employees": {}, "gallery_version": gate.gallery_version}
    everyone = store.confirmed()
    by_employee: dict[str, list[Labelled]] = {}
    for c in everyone:
        if employee_id is None or c.employee_id == employee_id:
            by_employee.setdefault(c.employee_id, []).append(c)
    if employee_id:
        by_employee.setdefault(employee_id, [])
    known = KnownImpostors.load(store, everyone, gate.model_label(), gate.recognizer.embedding_dim)
    changes: dict[str, dict] = {}
    with gate.write_lock, gallery_lock(gate.store.index_dir):
        g = gate.store.load()
        g.check_model(gate.recognizer.embedder_name, gate.recognizer.embedder_version)
        margin = gs.template_impostor_margin
        guard = None if margin is None else gate.identify_tau(g, gs.target_fpir) + margin
        side, vectors = g.sidecar, g.vectors
        for eid, confirmed in sorted(by_employee.items()):
            change = _choose(gate, g, (side, vectors), eid, confirmed, known, guard)
            if change is not None:
                changes[eid] = change
        if changes:
            g.save(gate.store.index_dir, keep=gs.keep_versions)
    if changes:
        gate.reload()
        for eid, change in changes.items():
            gate.audit(actor, "template_update", eid, gallery_version=gate.gallery_version, **change)
    return {"employees": changes, "gallery_version": gate.gallery_version}


def _choose(
    gate: FaceGate,
    g: Gallery,
    before_update: tuple[pd.DataFrame, np.ndarray],
    eid: str,
    confirmed: list[Labelled],
    known: KnownImpostors,
    guard: float | None,
) -> dict | None:
    """One employee's templates chosen again in ``g`` (the gallery as it was: ``before_update``); the
    change, or None when there is none."""
    side, vectors = before_update
    store, limit = gate.captures, gate.settings.gallery.max_templates
    ids = side["employee_id"].to_numpy()
    rows = np.flatnonzero(ids == eid)
    if store is None or not len(rows):
        return None  # a confirmed capture of someone no longer enrolled waits for a re-enrolment
    photos = [r for r in rows if not str(side["photo"].iloc[r]).startswith(CAPTURE_PREFIX)]
    before = sorted(int(str(side["photo"].iloc[r])[len(CAPTURE_PREFIX) :]) for r in rows if r not in photos)
    usable, embs = _embeddings(gate, confirmed)
    free = np.arange(len(usable))
    if guard is not None and len(usable):  # never a template a known impostor would pass with
        impostors = np.concatenate([known.of_others(eid), vectors[ids != eid]])
        free = np.flatnonzero(nearest_distance(embs, impostors) > guard)
    picked = [int(free[i]) for i in farthest_point(vectors[photos], embs[free], limit - len(photos))]
    after = sorted(usable[i].id for i in picked)
    store.set_templates(eid, after)
    if after == before:
        return None
    order = sorted(picked, key=lambda i: usable[i].id)
    g.replace(
        eid,
        str(side["name"].iloc[rows[0]]),
        np.concatenate([vectors[photos], embs[order]]) if order else vectors[photos],
        [str(side["photo"].iloc[r]) for r in photos] + [f"{CAPTURE_PREFIX}{usable[i].id}" for i in order],
    )
    return {
        "templates": after,
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "skipped_other_model": len(confirmed) - len(usable),
        "refused_near_impostor": int(len(usable) - len(free)),
    }


def remove_template(gate: FaceGate, capture_id: int, *, actor: str | None = None) -> dict:
    """Take a captured template out: its capture is relabelled ``skip`` (never a template again unless
    relabelled) and its employee's templates are chosen again (a new gallery version)."""
    store = gate.captures
    if store is None:
        raise RuntimeError("no capture store: this gate keeps no access log")
    row = store.get(capture_id)
    store.label(capture_id, "skip", None, actor or local_actor())
    gate.audit(actor, "template_remove", row["label_employee_id"], capture_id=capture_id)
    return update_templates(gate, row["label_employee_id"], actor=actor) if row["label_employee_id"] else {}
