"""Answering the door: identify (1:K at the gallery-size threshold for the FPIR target) and verify
(1:1 at the calibrated FAR), each decision written to the access log before the answer leaves.

Split from the facade so each verb there is one line; what a face's answer holds is answers.py.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facegate.components.service.answers import Identification, IdentifiedFace, Verification, estimate
from facegate.components.service.deployment import local_actor

if TYPE_CHECKING:
    from facegate.components.service.facade import FaceGate


def identify(gate: FaceGate, pixels: np.ndarray, *, entrance: str | None = None,
             actor: str | None = None) -> Identification:
    """Who is this? Every face in the frame against the tau for ``gallery.target_fpir`` at this size,
    with the estimated chance a stranger comes this close (``far_estimate``: FPIR at this distance).
    Each face is an access-log row (entrance, actor) before the answer is returned."""
    result = identify_faces(gate, pixels)
    if gate.access_log is not None:
        gate.access_log.record_identification(result.to_dict(), entrance=entrance, model=gate.model_label(),
                                               gallery_version=gate.gallery_version, actor=actor or local_actor())
    return result


def identify_faces(gate: FaceGate, pixels: np.ndarray) -> Identification:
    """The answer for every face, without recording it."""
    g = gate.gallery()
    recognizer = gate.recognizer
    target = gate.settings.gallery.target_fpir
    tau = gate.identify_tau(g, target)
    scores = gate.impostor_scores(g)
    with gate.inference():
        found = recognizer.embed_all(pixels)
        masks = gate.mask_states(pixels, [f.box for f in found])
    faces = []
    for face, mask in zip(found, masks):
        eid, dist, name = g.identify(face.embedding[None], tau)
        distance = round(float(dist), 6) if math.isfinite(dist) else None
        far = estimate(scores.fpir(float(dist), g.n_employees)) if scores and distance is not None else None
        faces.append(IdentifiedFace(face.box.as_list(), eid, name, eid is not None, distance, tau, target, mask,
                                    far))
    return Identification(faces, tau, target)


def verify(gate: FaceGate, employee_id: str, pixels: np.ndarray, source: str | Path = "photo", *,
           entrance: str | None = None, actor: str | None = None) -> Verification:
    """Is this the claimed employee? 1:1 at the calibrated false-accept rate (one face required).
    The answer is an access-log row (entrance, actor) before it is returned."""
    g = gate.gallery()
    with gate.inference():
        face = gate.recognizer.embed_one(pixels, source)
    tau = gate.verify_tau(g)
    accepted, dist = g.verify(employee_id, face.embedding[None], tau)
    scores = gate.impostor_scores(g)
    result = Verification(employee_id, bool(accepted), round(float(dist), 6), tau, g.manifest.target_far,
                          estimate(scores.far(float(dist))) if scores else None)
    if gate.access_log is not None:
        gate.access_log.record_verification(result.to_dict(), entrance=entrance, model=gate.model_label(),
                                            gallery_version=gate.gallery_version, actor=actor or local_actor())
    return result
