"""Answering the door: identify (1:K at the gallery-size threshold for the FPIR target) and verify
(1:1 at the calibrated FAR), each decision written to the access log before the answer leaves.

Split from the facade so each verb there is one line; what a face's answer holds is answers.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facegate.components.calibration.thresholds import ImpostorScores
from facegate.components.core.errors import UnknownEmployee
from facegate.components.faces.pipeline import FaceCrop
from facegate.components.gallery import Gallery
from facegate.components.recognition.recognizer import FaceEmbedding
from facegate.components.service.answers import Identification, IdentifiedFace, Verification, estimate
from facegate.components.service.batching import Embedder
from facegate.components.service.captures import capture_identification, capture_on
from facegate.components.service.cascade import CHEAP, FULL, CheapVerdict, served_cascade
from facegate.components.service.deployment import local_actor

if TYPE_CHECKING:
    from facegate.components.service.facade import FaceGate


def identify(
    gate: FaceGate, pixels: np.ndarray, *, entrance: str | None = None, actor: str | None = None
) -> Identification:
    """Who is this? Every face in the frame against the tau for ``gallery.target_fpir`` at this size,
    with the estimated chance a stranger comes this close (``far_estimate``: FPIR at this distance).
    Each face is an access-log row (entrance, actor) before the answer is returned."""
    embedded: list | None = [] if capture_on(gate.settings, entrance) and gate.captures is not None else None
    result = identify_faces(gate, pixels, embedded)
    if gate.access_log is not None:
        gate.access_log.record_identification(
            result.to_dict(),
            entrance=entrance,
            model=gate.model_label(),
            gallery_version=gate.gallery_version,
            actor=actor or local_actor(),
        )
    if embedded:  # capture.enabled for this entrance (service/captures.py): chips and embeddings kept for review
        capture_identification(gate, result.to_dict(), embedded, entrance)
    return result


def identify_faces(gate: FaceGate, pixels: np.ndarray, embedded: list | None = None) -> Identification:
    """The answer for every face, without recording it. With ``recognition.cascade`` on, the cheap pass
    (service/cascade.py) decides the faces outside its band; the rest get the full embedding.
    ``embedded``, when given (captures), receives each face's full ``FaceEmbedding``, the cheap pass's too.
    In a server that batches (service/batching.py) the request detects in its own inference slot and
    its faces are embedded afterwards, with those of concurrent requests."""
    g = gate.gallery()
    recognizer = gate.recognizer
    target = gate.settings.gallery.target_fpir
    tau = gate.identify_tau(g, target)
    scores = gate.impostor_scores(g)
    cascade = served_cascade(recognizer, gate.settings)
    embedder = Embedder(recognizer, cascade, gate.batching)
    passes: tuple[list, Iterator[FaceEmbedding], Iterator[FaceEmbedding]] = ([], iter(()), iter(()))
    crops: list[FaceCrop] = []
    with gate.inference():
        if cascade is None and not embedder.batched:  # every face the full embedding (any recognizer that embeds)
            found = recognizer.embed_all(pixels)
            boxes, passes = [f.box for f in found], ([], iter(found), iter(()))
        else:
            crops = recognizer.finder.all_faces(pixels)
            boxes = [c.box for c in crops]
            if not embedder.batched:
                passes = embed_faces(embedder, crops, g, tau, scores, embedded is not None)
        masks = gate.mask_states(pixels, boxes)
        live = gate.liveness.check(pixels, boxes)  # presentation attacks (service/liveness.py)
    if embedder.batched:  # out of the request's slot: each batch takes one of its own
        passes = embed_faces(embedder, crops, g, tau, scores, embedded is not None)
    verdicts, full, extra = passes
    faces = []
    for i, (box, mask) in enumerate(zip(boxes, masks)):
        v = verdicts[i] if verdicts else None
        if cascade is not None and v is not None and v.decided is not None:
            eid, name = (v.employee_id, v.name) if v.decided else (None, None)
            distance = round(v.distance, 6) if math.isfinite(v.distance) else None
            far = estimate(cascade.fpir(v.distance, g.n_vectors)) if distance is not None else None
            faces.append(
                IdentifiedFace(box.as_list(), eid, name, v.decided, distance, v.tau, target, mask, far, path=CHEAP)
            )
            if embedded is not None:
                embedded.append(next(extra))
            continue
        face = next(full)
        if embedded is not None:
            embedded.append(face)
        eid, dist, name = g.identify(face.embedding[None], tau)
        distance = round(float(dist), 6) if math.isfinite(dist) else None
        far = estimate(scores.fpir(float(dist), g.n_vectors)) if scores and distance is not None else None
        faces.append(
            IdentifiedFace(box.as_list(), eid, name, eid is not None, distance, tau, target, mask, far, path=FULL)
        )
    return gate.liveness.judge_identification(Identification(faces, tau, target), live)


def embed_faces(
    embedder: Embedder,
    crops: list[FaceCrop],
    g: Gallery,
    tau: float,
    scores: ImpostorScores | None,
    keep_all: bool,
) -> tuple[list[CheapVerdict], Iterator[FaceEmbedding], Iterator[FaceEmbedding]]:
    """(the cheap pass's verdicts, one per face, none without the cascade; the full embeddings of the
    faces it left undecided, in order; with ``keep_all`` (captures) those of the faces it decided too)."""
    cascade = embedder.cascade
    if cascade is None:
        return [], iter(embedder.full(crops)), iter(())
    verdicts = [cascade.identify(g, q, tau, scores) for q in embedder.cheap(crops)] if crops else []
    full = iter(embedder.full([c for c, v in zip(crops, verdicts) if v.decided is None]))
    # captures keep the full embedding of every face, the cheap pass's decided ones too
    cheap = [c for c, v in zip(crops, verdicts) if v.decided is not None]
    extra = iter(embedder.full(cheap)) if keep_all and cheap else iter(())
    return verdicts, full, extra


def verify(
    gate: FaceGate,
    employee_id: str,
    pixels: np.ndarray,
    source: str | Path = "photo",
    *,
    entrance: str | None = None,
    actor: str | None = None,
) -> Verification:
    """Is this the claimed employee? 1:1 at the calibrated false-accept rate (one face required).
    The answer is an access-log row (entrance, actor) before it is returned."""
    result = verify_face(gate, employee_id, pixels, source)
    if gate.access_log is not None:
        gate.access_log.record_verification(
            result.to_dict(),
            entrance=entrance,
            model=gate.model_label(),
            gallery_version=gate.gallery_version,
            actor=actor or local_actor(),
        )
    return result


def verify_face(gate: FaceGate, employee_id: str, pixels: np.ndarray, source: str | Path = "photo") -> Verification:
    """The 1:1 answer without recording it; the cascade's cheap pass first when it is on."""
    g = gate.gallery()
    tau = gate.verify_tau(g)
    scores = gate.impostor_scores(g)
    recognizer = gate.recognizer
    cascade = served_cascade(recognizer, gate.settings)
    embedder = Embedder(recognizer, cascade, gate.batching)
    verdict: CheapVerdict | None = None
    face: FaceEmbedding | None = None
    with gate.inference():
        if cascade is None and not embedder.batched:
            one = recognizer.embed_one(pixels, source)
            face, box = one, one.box
        else:
            crop = recognizer.finder.single_face(pixels, source)
            if cascade is not None and employee_id not in g:
                raise UnknownEmployee(employee_id)
            box = crop.box
            if not embedder.batched:
                verdict, face = verify_passes(embedder, crop, g, employee_id, tau, scores)
        live = gate.liveness.check(pixels, [box])
    if embedder.batched:  # out of the request's slot: each batch takes one of its own
        verdict, face = verify_passes(embedder, crop, g, employee_id, tau, scores)
    if cascade is not None and verdict is not None and verdict.decided is not None:
        answer = Verification(
            employee_id,
            verdict.decided,
            round(verdict.distance, 6),
            verdict.tau,
            g.manifest.target_far,
            estimate(cascade.far(verdict.distance)),
            path=CHEAP,
        )
    else:
        assert face is not None  # the full pass ran: no cascade, or inside its band
        accepted, dist = g.verify(employee_id, face.embedding[None], tau)
        answer = Verification(
            employee_id,
            bool(accepted),
            round(float(dist), 6),
            tau,
            g.manifest.target_far,
            estimate(scores.far(float(dist))) if scores else None,
            path=FULL,
        )
    return gate.liveness.judge_verification(answer, live)


def verify_passes(
    embedder: Embedder,
    crop: FaceCrop,
    g: Gallery,
    employee_id: str,
    tau: float,
    scores: ImpostorScores | None,
) -> tuple[CheapVerdict | None, FaceEmbedding | None]:
    """(the cheap pass's verdict, none without the cascade; the full embedding, none when the cheap pass decided)."""
    verdict = None
    if embedder.cascade is not None:
        verdict = embedder.cascade.verify(g, employee_id, embedder.cheap([crop])[0], tau, scores)
        if verdict.decided is not None:
            return verdict, None
    return verdict, embedder.full([crop])[0]
