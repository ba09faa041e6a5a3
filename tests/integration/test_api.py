"""The REST API on real photos (faceapi-examples) with a real FAISS gallery on disk."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from facegate.components.core.settings import load_settings
from facegate.components.embedding.backbones import make_backbone
from facegate.components.embedding.model import EmbeddingModel
from facegate.components.gallery import Gallery
from facegate.components.gallery.enrolment import EnrolmentStore
from facegate.components.recognition.recognizer import FaceRecognizer
from facegate.components.service.facade import FaceGate
from facegate.components.web.api.app import create_app
from tests.conftest import shared_dataset

pytestmark = pytest.mark.integration
PEOPLE = ["amy", "bernadette", "howard", "leonard", "penny", "raj", "sheldon", "stuart"]
KEY = "test-key"
TAU = 0.4  # between the crops: genuine pairs <= 0.33, different people >= 0.44 (dlib on YuNet chips)


@pytest.fixture(scope="module")
def recognizer():
    return FaceRecognizer(EmbeddingModel(make_backbone("dlib_resnet")), load_settings(), "pretrained-test")


@pytest.fixture
def client(tmp_path, recognizer):
    store = EnrolmentStore(tmp_path / "gallery")

    def new_gallery():
        return Gallery.new(128, recognizer.embedder_name, recognizer.embedder_version, tau=TAU, target_far=1e-3)

    app = create_app(FaceGate(load_settings(), store=store, recognizer=recognizer, new_gallery=new_gallery), key=KEY)
    with TestClient(app) as c:
        c.store = store
        yield c


def photo(person: str, n: int = 1) -> tuple[str, bytes, str]:
    path = shared_dataset("faceapi-examples") / person / f"{person}{n}.png"
    return path.name, path.read_bytes(), "image/png"


def enrol(client, person, n=1, **extra):
    return client.post(
        "/employees",
        data={"employee_id": person, "name": person.title(), **extra},
        files=[("images", photo(person, n))],
        headers={"X-API-Key": KEY},
    )


def test_key_required_and_errors_are_json(client):
    r = client.post("/identify", files={"image": photo("amy")})
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    r = client.post("/identify", files={"image": photo("amy")}, headers={"X-API-Key": KEY})
    assert r.status_code == 404 and r.json()["code"] == "gallery_not_found"
    assert client.get("/health").json() == {"status": "ok"}  # liveness only, without a key
    assert "/identify" in client.get("/openapi.json").json()["paths"]


def test_enrol_identify_verify_remove(client):
    for p in PEOPLE:
        assert enrol(client, p).status_code == 201
    h = {"X-API-Key": KEY}
    correct = 0
    for p in PEOPLE:
        faces = client.post("/identify", files={"image": photo(p, 3)}, headers=h).json()["faces"]
        correct += len(faces) == 1 and faces[0]["employee_id"] == p
    assert correct >= 7  # one-shot enrolment, a different photo of each person
    ok = client.post("/verify", data={"employee_id": "amy"}, files={"image": photo("amy", 2)}, headers=h).json()
    assert ok["accepted"] and ok["distance"] <= TAU
    wrong = client.post("/verify", data={"employee_id": "amy"}, files={"image": photo("raj", 2)}, headers=h).json()
    assert not wrong["accepted"]
    assert enrol(client, "amy").json()["code"] == "employee_exists"
    r = client.delete("/employees/amy", headers=h)
    assert r.status_code == 200 and not (client.store.photos_dir / "amy").exists()
    faces = client.post("/identify", files={"image": photo("amy", 3)}, headers=h).json()["faces"]
    assert faces[0]["employee_id"] != "amy"
    assert (
        client.post("/verify", data={"employee_id": "amy"}, files={"image": photo("amy", 2)}, headers=h).json()["code"]
        == "unknown_employee"
    )


def test_bad_uploads_are_refused_by_name(client):
    h = {"X-API-Key": KEY}
    blank = io.BytesIO()
    Image.new("RGB", (200, 200), (120, 120, 120)).save(blank, "JPEG")
    r = client.post(
        "/employees",
        data={"employee_id": "ghost"},
        files=[("images", ("blank.jpg", blank.getvalue(), "image/jpeg"))],
        headers=h,
    )
    assert r.status_code == 422 and r.json()["code"] == "no_face_found" and "blank.jpg" in r.json()["message"]
    group = (shared_dataset("faceapi-examples") / "bbt2.jpg").read_bytes()
    r = client.post(
        "/employees", data={"employee_id": "group"}, files=[("images", ("bbt2.jpg", group, "image/jpeg"))], headers=h
    )
    assert r.status_code == 422 and r.json()["code"] == "multiple_faces"
    r = client.post(
        "/employees",
        data={"employee_id": "junk"},
        files=[("images", ("junk.jpg", b"not an image", "image/jpeg"))],
        headers=h,
    )
    assert r.status_code == 422 and r.json()["code"] == "unreadable_image"
    r = client.post("/identify", files={"image": ("a.txt", b"hello", "text/plain")}, headers=h)
    assert r.status_code == 415
    r = client.post("/identify", files={"image": ("big.jpg", b"0" * 10_000_001, "image/jpeg")}, headers=h)
    assert r.status_code == 413 and r.json()["code"] == "image_too_large"
    assert not client.store.exists() or client.get("/employees", headers=h).json() == []  # nothing half-enrolled


def test_concurrent_enrol_and_identify_lose_nothing(client):
    h = {"X-API-Key": KEY}
    assert enrol(client, "sheldon").status_code == 201
    with ThreadPoolExecutor(6) as pool:
        enrols = [pool.submit(enrol, client, p, 2) for p in PEOPLE if p != "sheldon"]
        reads = [
            pool.submit(client.post, "/identify", files={"image": photo("sheldon", 4)}, headers=h) for _ in range(8)
        ]
        assert all(f.result().status_code == 201 for f in enrols)
        assert all(r.result().status_code == 200 for r in reads)
    listed = client.get("/employees", headers=h).json()
    assert sorted(e["employee_id"] for e in listed) == sorted(PEOPLE)  # none lost, none duplicated
    assert all(e["n_vectors"] == 1 for e in listed)
    reloaded = client.store.load()  # and what is on disk agrees
    assert reloaded.n_employees == len(PEOPLE) and reloaded.n_vectors == len(PEOPLE)


def test_api_follows_a_gallery_switched_by_another_writer(tmp_path, recognizer):
    """A retraining chain (another process) switches the gallery to a new model: the next request
    answers with the new gallery and the model that made it, no restart."""
    from facegate.components.gallery.enrolment import Photo, embed_photos, reembed_all

    store = EnrolmentStore(tmp_path / "gallery")
    promoted = FaceRecognizer(recognizer.model, load_settings(), "facegate-embedder/7")
    asked = []

    def recognizer_for(version: str) -> FaceRecognizer:
        asked.append(version)
        return promoted

    gate = FaceGate(
        load_settings(),
        store=store,
        recognizer=recognizer,
        recognizer_for=recognizer_for,
        new_gallery=lambda: Gallery.new(128, recognizer.embedder_name, recognizer.embedder_version, tau=TAU),
    )
    app = create_app(gate, key=KEY)
    h = {"X-API-Key": KEY}
    with TestClient(app) as c:
        assert enrol(c, "penny").status_code == 201
        assert c.get("/status", headers=h).json()["embedder"].endswith("@pretrained-test")
        # the other writer: every stored photo re-embedded by the promoted model, saved atomically
        fresh = Gallery.new(128, promoted.embedder_name, promoted.embedder_version, tau=TAU)
        reembed_all(store, promoted, fresh, 10_000_000, {"penny": "Penny"})
        embs, _ = embed_photos(promoted, [Photo(*photo("raj")[:2])], 10_000_000)
        fresh.add("raj", "Raj", embs, [""])
        fresh.save(store.index_dir)
        faces = c.post("/identify", files={"image": photo("raj", 3)}, headers=h).json()["faces"]
        assert faces[0]["employee_id"] == "raj" and asked == ["facegate-embedder/7"]
        assert c.get("/status", headers=h).json()["embedder"].endswith("@facegate-embedder/7")
        assert sorted(e["employee_id"] for e in c.get("/employees", headers=h).json()) == ["penny", "raj"]


def test_cli_and_api_identify_are_one_code_path(sandbox, tmp_path):
    """The CLI's and the API's identify answer the same frame with the same JSON (FaceGate.identify)."""
    import json

    from typer.testing import CliRunner

    from facegate.cli.main import app as cli_app
    from facegate.components.lifecycle.model_loading import service_recognizer
    from facegate.components.service.deployment import gallery_store

    settings = load_settings()
    recognizer = service_recognizer(settings)  # the model the CLI's FaceGate serves
    gate = FaceGate(settings, store=gallery_store(), recognizer=recognizer)  # the model's stored calibration
    with TestClient(create_app(gate, key=KEY)) as c:
        for person in PEOPLE:
            assert enrol(c, person).status_code == 201
        frame = shared_dataset("faceapi-examples") / "bbt2.jpg"
        api = c.post(
            "/identify", files={"image": (frame.name, frame.read_bytes(), "image/jpeg")}, headers={"X-API-Key": KEY}
        ).json()
    r = CliRunner().invoke(cli_app, ["identify", str(frame)])
    assert r.exit_code == 0, r.output
    cli = json.loads(r.output)
    assert {"sheldon", "leonard"} <= {f["employee_id"] for f in api["faces"]}
    assert {k: cli[k] for k in api} == api
