"""The API's front line: key and size limits before the body is read, headers that cannot crash it,
form limits, length limits, liveness without details, local docs, JSON errors only (never a 500).

Byte counts are measured server-side: the app under a real uvicorn server is wrapped in an ASGI layer
that counts every body byte the server hands to it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading

import pytest
from fastapi.testclient import TestClient

from facegate.components.core.settings import load_settings
from facegate.components.web.api.app import create_app
from tests.integration import live_server
from tests.integration.test_api import KEY, TAU, photo, recognizer  # noqa: F401 - the module-scoped fixture

pytestmark = pytest.mark.integration
MB = 1024 * 1024
PROTECTED = [
    ("POST", "/identify"),
    ("POST", "/verify"),
    ("GET", "/employees"),
    ("POST", "/employees"),
    ("DELETE", "/employees/amy"),
    ("GET", "/status"),
]


def settings_with(**api):
    s = load_settings()
    return s.model_copy(update={"api": s.api.model_copy(update=api)})


def make_gate(tmp_path, recognizer, settings=None):
    return live_server.make_gate(tmp_path, recognizer, settings, tau=TAU)


@pytest.fixture
def client(tmp_path, recognizer):
    with TestClient(create_app(make_gate(tmp_path, recognizer), key=KEY), raise_server_exceptions=False) as c:
        yield c


# ------------------------------------------------------------------ a real server, bytes counted


class CountingApp:
    """ASGI wrapper: how many body bytes the app asked the server for."""

    def __init__(self, app):
        self.app = app
        self.body_bytes = 0

    async def __call__(self, scope, receive, send):
        async def counted():
            message = await receive()
            if message["type"] == "http.request":
                self.body_bytes += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


@pytest.fixture
def live(tmp_path, recognizer):
    """create_app(...) under uvicorn on a free loopback port; yields a factory taking settings."""
    with contextlib.ExitStack() as servers:

        def start(settings=None):
            counting = CountingApp(create_app(make_gate(tmp_path, recognizer, settings), key=KEY))
            counting.port = servers.enter_context(live_server.uvicorn_server(counting, lifespan="off"))
            return counting

        yield start


FILE_PART = (
    b'--xyz\r\nContent-Disposition: form-data; name="images"; filename="big.jpg"\r\n'
    b"Content-Type: image/jpeg\r\n\r\n"
)  # then the "image" bytes, which never end


def raw_request(port: int, head: str, body_total: int, chunked: bool = False, chunk: int = 64 * 1024):
    """Send ``head`` then up to ``body_total`` body bytes (a multipart file part) from a second thread
    while reading the answer; returns (status, json body, bytes sent). The sender stops when the
    server closes the connection."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sent = 0

    def sender():
        nonlocal sent
        try:
            sock.sendall(head.encode("latin-1"))
            while sent < body_total:
                n = min(chunk, body_total - sent)
                data = (FILE_PART + b"x" * n)[:n] if sent == 0 else b"x" * n
                sock.sendall(b"%x\r\n%s\r\n" % (n, data) if chunked else data)
                sent += n
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed: exactly what should happen

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    answer = b""
    try:
        while True:
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    except OSError:
        pass
    finally:
        sock.close()
    t.join(10)
    head_part, _, body = answer.partition(b"\r\n\r\n")
    status = int(head_part.split(b" ")[1])
    try:
        return status, json.loads(body), sent
    except ValueError:
        return status, body, sent


def multipart_head(path: str, headers: dict[str, str], length: int | None) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: multipart/form-data; boundary=xyz"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    return "\r\n".join(lines) + "\r\n\r\n"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_unauthenticated_50mb_stream_is_refused_before_1mb_is_read(live, chunked):
    server = live()
    total = 50 * MB
    head = multipart_head("/employees", {}, None if chunked else total)
    status, body, _ = raw_request(server.port, head, total, chunked=chunked)
    assert status == 401 and body["code"] == "unauthorized"
    assert server.body_bytes < MB  # measured server-side: none of it reached the app, in fact
    assert server.body_bytes == 0


def test_declared_oversized_body_is_refused_before_reading(live):
    server = live()
    head = multipart_head("/employees", {"X-API-Key": KEY}, 50 * MB)
    status, body, _ = raw_request(server.port, head, 50 * MB)
    assert status == 413 and body["code"] == "body_too_large"
    assert server.body_bytes == 0


def test_streamed_body_is_cut_off_once_over_the_limit(live):
    limit = 1 * MB
    server = live(settings_with(max_body_bytes=limit))
    head = multipart_head("/employees", {"X-API-Key": KEY}, None)  # no length: counted as it streams
    status, body, _ = raw_request(server.port, head, 50 * MB, chunked=True)
    assert status == 413 and body["code"] == "body_too_large"
    assert limit < server.body_bytes <= limit + 256 * 1024  # stopped at the first chunk over the limit


def test_malformed_content_length_is_a_400(live):
    """uvicorn's HTTP parser refuses it first (plain text, before the app); the guard's own check
    answers JSON under a server that lets it through."""
    import asyncio

    from facegate.components.web.request_guard import RequestGuard

    server = live()
    head = multipart_head("/employees", {"X-API-Key": KEY}, None).replace(
        "Transfer-Encoding: chunked", "Content-Length: 12abc"
    )
    status, _, _ = raw_request(server.port, head, 0)
    assert status == 400 and server.body_bytes == 0

    sent = []

    async def inner(scope, receive, send):
        raise AssertionError("the app must not run")

    async def send(message):
        sent.append(message)

    async def receive():
        raise AssertionError("the body must not be read")

    guard = RequestGuard(inner, key=KEY, max_body_bytes=MB)
    for value in (b"12abc", b"-1", b"1, 2"):
        sent.clear()
        scope = {
            "type": "http",
            "path": "/employees",
            "headers": [(b"x-api-key", KEY.encode()), (b"content-length", value)],
        }
        asyncio.run(guard(scope, receive, send))
        assert sent[0]["status"] == 400 and json.loads(sent[1]["body"])["code"] == "bad_request"


# ------------------------------------------------------------------------- keys and headers


@pytest.mark.parametrize(
    "value",
    ["clé-été".encode(), b"\xff\xfe\x00key", KEY.encode() + b"\xe9", b""],
    ids=["utf8", "binary", "key+latin1", "empty"],
)
def test_non_ascii_or_wrong_keys_are_401_json(client, value):
    for method, path in PROTECTED:
        r = client.request(method, path, headers={"X-API-Key": value})
        assert r.status_code == 401, (method, path, r.text)
        assert r.json() == {"code": "unauthorized", "message": "missing or wrong X-API-Key header"}


def test_non_ascii_key_on_a_real_server(live):
    server = live()
    head = multipart_head("/identify", {"X-API-Key": "cl\xe9"}, 10)
    status, body, _ = raw_request(server.port, head, 10)
    assert status == 401 and body["code"] == "unauthorized"


def test_a_repeated_key_header_is_refused(client):
    r = client.get("/employees", headers=[("X-API-Key", KEY), ("X-API-Key", KEY)])
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"


def test_health_reveals_only_liveness_and_status_needs_the_key(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/health", headers={"X-API-Key": KEY}).json() == {"status": "ok"}
    assert client.get("/status").status_code == 401
    details = client.get("/status", headers={"X-API-Key": KEY}).json()
    assert details["status"] == "ok" and details["employees"] == 0 and "pretrained-test" in details["embedder"]


def test_unknown_routes_and_methods_answer_json(client):
    assert client.get("/nowhere").json()["code"] == "unauthorized"  # no key: nothing is revealed
    r = client.get("/nowhere", headers={"X-API-Key": KEY})
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = client.put("/identify", headers={"X-API-Key": KEY})
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"


# ------------------------------------------------------------------------ forms and lengths


def enrol(client, employee_id="amy", name="Amy", n_files=1, **extra):
    return client.post(
        "/employees",
        data={"employee_id": employee_id, "name": name, **extra},
        files=[("images", photo("amy"))] * n_files,
        headers={"X-API-Key": KEY},
    )


def test_limits_on_files_fields_and_lengths(client):
    limits = load_settings().api
    r = enrol(client, n_files=limits.max_files + 1)
    assert r.status_code == 400 and r.json()["code"] == "form_limit_exceeded"
    r = enrol(client, **{f"extra{i}": "x" for i in range(limits.max_fields)})
    assert r.status_code == 400 and r.json()["code"] == "form_limit_exceeded"
    r = enrol(client, name="x" * 500_000)  # the 500,000-character name of the report
    assert r.status_code == 400 and r.json()["code"] == "form_limit_exceeded"
    r = enrol(client, name="x" * (limits.max_name_length + 1))
    assert r.status_code == 422 and r.json()["code"] == "invalid_request" and "name" in r.json()["message"]
    r = enrol(client, employee_id="E" * 65)
    assert r.status_code == 422 and "employee_id" in r.json()["message"]
    r = enrol(client, employee_id="../etc")
    assert r.status_code == 422
    r = client.delete("/employees/" + "E" * 65, headers={"X-API-Key": KEY})
    assert r.status_code == 422 and r.json()["code"] == "invalid_request"
    assert client.get("/employees", headers={"X-API-Key": KEY}).json() == []  # none of it enrolled
    r = enrol(client, name="x" * limits.max_name_length)
    assert r.status_code == 201


def test_name_limits_hold_for_every_adapter(tmp_path, recognizer):
    from facegate.components.core.errors import InvalidEmployee
    from facegate.components.gallery.enrolment import Photo

    gate = make_gate(tmp_path, recognizer)
    name, data = photo("amy")[:2]
    for bad in ("x" * (gate.settings.api.max_name_length + 1), "Amy\nBob"):
        with pytest.raises(InvalidEmployee):
            gate.enrol("amy", bad, [Photo(name, data)])
    assert not gate.store.exists()


def test_malformed_multipart_is_a_json_400(client):
    r = client.post(
        "/identify", content=b"--nope\r\ngarbage", headers={"X-API-Key": KEY, "Content-Type": "multipart/form-data"}
    )  # no boundary
    assert r.status_code == 400 and r.json()["code"] == "bad_request"


# ---------------------------------------------------------------------- failures stay JSON


def test_an_unexpected_failure_is_a_500_json_without_traceback(tmp_path, recognizer):
    gate = make_gate(tmp_path, recognizer)

    def boom(_):
        raise RuntimeError("secret internals /srv/facegate")

    gate.identify = boom
    with TestClient(create_app(gate, key=KEY), raise_server_exceptions=False) as c:
        r = c.post("/identify", files={"image": photo("amy")}, headers={"X-API-Key": KEY})
    assert r.status_code == 500
    assert r.json() == {"code": "internal_error", "message": "internal error (see the server log)"}


def test_an_empty_gallery_answers_identify_with_json(client):
    assert enrol(client).status_code == 201
    assert client.delete("/employees/amy", headers={"X-API-Key": KEY}).status_code == 200
    r = client.post("/identify", files={"image": photo("amy", 2)}, headers={"X-API-Key": KEY})
    assert r.status_code == 200 and r.json()["faces"][0]["distance"] is None  # nobody to be near, not inf


# -------------------------------------------------------------------------------- local docs


def test_docs_and_redoc_are_served_locally(client):
    import re

    for page in ("/docs", "/redoc"):
        r = client.get(page)
        assert r.status_code == 200
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", r.text, re.I), page  # no external URL
        for asset in re.findall(r'(?:src|href)="(/[^"]+)"', r.text) + re.findall(r"url: '(/[^']+)'", r.text):
            assert client.get(asset).status_code == 200, asset
    assert "swagger-ui-bundle.js" in client.get("/docs").text
    assert client.get("/docs-static/redoc.standalone.js").status_code == 200
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
