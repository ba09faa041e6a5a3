"""Batched embedding as a server runs it (service/batching.py), on real photos (faceapi-examples) with the
model in service and the cascade: concurrent identify and verify requests, each with other faces, get the
answer the unbatched service gives them, while their faces shared forward passes."""

from __future__ import annotations

import threading

import pytest

from facegate.components.core.images import load_image
from facegate.components.core.inference import InferenceSlots
from facegate.components.core.settings import load_settings
from facegate.components.gallery.enrolment import Photo
from facegate.components.lifecycle.model_loading import service_recognizer
from facegate.components.service.batching import EmbeddingBatching
from facegate.components.service.deployment import gallery_store
from facegate.components.service.facade import FaceGate
from tests.conftest import requires_dataset, shared_dataset
from tests.integration.test_api import PEOPLE

pytestmark = [pytest.mark.integration, requires_dataset("faceapi-examples")]


def answer(identification) -> list[tuple]:  # noqa: ANN001
    return [(f.box, f.employee_id, f.recognized, f.path, f.distance) for f in identification.faces]


def test_concurrent_requests_get_the_unbatched_answers(sandbox):
    settings = load_settings()
    recognizer = service_recognizer(settings)
    slots = InferenceSlots(2)
    batching = EmbeddingBatching(200.0, 16, slots)  # a wide window: the requests below do meet
    served = FaceGate(settings, store=gallery_store(), recognizer=recognizer, inference=slots, batching=batching)
    alone = FaceGate(settings, store=gallery_store(), recognizer=recognizer, access_log=False)
    examples = shared_dataset("faceapi-examples")
    for p in PEOPLE:
        alone.enrol(p, p.title(), [Photo(f"{p}1.png", (examples / p / f"{p}1.png").read_bytes())], force=True)
    frames = [load_image(examples / p / f"{p}2.png") for p in PEOPLE] + [
        load_image(examples / f"bbt{n}.jpg") for n in (1, 2)
    ]
    claims = [(p, load_image(examples / p / f"{p}3.png")) for p in PEOPLE[:4]] + [
        ("amy", load_image(examples / "raj" / "raj3.png"))  # someone else
    ]
    want = [answer(alone.identify(f)) for f in frames]
    want_v = [alone.verify(eid, px).to_dict() for eid, px in claims]

    got: dict[int, object] = {}
    start = threading.Barrier(len(frames) + len(claims))

    def one(i: int) -> None:
        start.wait(30)
        if i < len(frames):
            got[i] = answer(served.identify(frames[i], entrance=f"e{i}"))
        else:
            eid, px = claims[i - len(frames)]
            got[i] = served.verify(eid, px).to_dict()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(frames) + len(claims))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(got) == len(threads)
    for i, expected in enumerate(want):
        assert [f[:4] for f in got[i]] == [f[:4] for f in expected]  # boxes, who, decision, path
        assert [f[4] for f in got[i]] == pytest.approx([f[4] for f in expected], abs=1e-5)
    for j, expected in enumerate(want_v):
        v = got[len(frames) + j]
        assert (v["accepted"], v["path"]) == (expected["accepted"], expected["path"])
        assert v["distance"] == pytest.approx(expected["distance"], abs=1e-5)
    stats = batching.stats()
    assert stats["cheap"]["requests"] == len(threads) and stats["cheap"]["batches"] < len(threads)
    assert batching.close(timeout=10)
