"""CONTRACT §5: every error, from every layer, is the same JSON; every response has X-Request-ID."""
import asyncio
import io
import json
import logging
import re
import socket
import time

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import queries
import store
from conftest import TEST_SECRET, make_settings, mint_token
from logs import JsonFormatter
from main import create_app

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
MAX_BODY = 64 * 1024
LEAKS = ("Traceback", "RuntimeError", "secret", "SELECT", "password", "hunter2", 'File "', ".py", TEST_SECRET)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error_code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    assert TIMESTAMP.match(body["timestamp"]), body
    assert response.headers.get("X-Request-ID")
    return body


def json_headers(user, content_type: str = "application/json") -> dict[str, str]:
    return {**user.auth, "Content-Type": content_type}


# ---------------------------------------------------------------- routing


@pytest.mark.parametrize(
    "path", ["/nope", "/api", "/api/nope", "/api/tasks/1/nope", "/api/tasks/1/toggle/x", "/api/u/tasks/1/nope", "/docs/x"]
)
@pytest.mark.parametrize("authenticated", [True, False], ids=["token", "no-token"])
def test_unknown_route_is_404_not_found(client, alice, path, authenticated):
    headers = alice.auth if authenticated else {}
    body = assert_error(client.get(path, headers=headers), 404, "NOT_FOUND")
    assert "Task" not in body["detail"]  # not the TASK_NOT_FOUND wording


@pytest.mark.parametrize(
    "method, path",
    [
        ("PATCH", "/api/tasks"),
        ("PUT", "/api/tasks"),
        ("POST", "/api/tasks/1"),
        ("GET", "/api/tasks/1/toggle"),
        ("PUT", "/api/tasks/1/toggle"),
        ("POST", "/api/tasks/1/complete"),
        ("GET", "/api/tasks/1/complete"),
        ("POST", "/api/tasks/stats"),
        ("DELETE", "/health"),
        ("POST", "/health/ready"),
    ],
)
def test_wrong_method_is_405_method_not_allowed(alice, method, path):
    response = alice.request(method, path, json={"title": "x"} if method in ("POST", "PUT", "PATCH") else None)
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert response.headers.get("Allow")
    assert method not in [m.strip() for m in response.headers["Allow"].split(",")]


def test_wrong_method_on_user_path_is_405(alice):
    assert_error(alice.request("PATCH", f"/api/{alice.user_id}/tasks"), 405, "METHOD_NOT_ALLOWED")


# ---------------------------------------------------------------- body: JSON, media type, size


BAD_JSON = [b'{"title": ', b"{title: 'x'}", b'{"title": "x",}', b"not json", b'{"title": "x"} trailing', b"\xff\xfe"]


@pytest.mark.parametrize("payload", BAD_JSON, ids=["truncated", "js-object", "trailing-comma", "text", "trailing-data", "not-utf8"])
def test_post_tasks_body_not_json_is_400_invalid_json(alice, payload):
    response = alice.post("/api/tasks", content=payload, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "INVALID_JSON")
    assert alice.get("/api/tasks").json() == []


@pytest.mark.parametrize(
    "payload",
    [b"[" * 30000 + b"]" * 30000, b'{"title": ' + b"[" * 20000 + b"]" * 20000 + b"}"],
    ids=["nested-array", "nested-in-title"],
)
def test_post_tasks_deeply_nested_json_is_400_invalid_json(alice, payload):
    response = alice.post("/api/tasks", content=payload, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "INVALID_JSON")
    assert alice.get("/api/tasks").json() == []


@pytest.mark.parametrize("method, suffix", [("PUT", ""), ("PATCH", ""), ("PATCH", "/complete")])
def test_update_body_not_json_is_400_and_changes_nothing(alice, method, suffix):
    task = alice.create_task(title="original")
    response = alice.request(method, f"/api/tasks/{task['id']}{suffix}", content=b'{"title": ', headers={"Content-Type": "application/json"})
    assert_error(response, 400, "INVALID_JSON")
    assert alice.get(f"/api/tasks/{task['id']}").json() == task


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml", None]
)
def test_post_tasks_body_not_json_media_type_is_415(alice, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = alice.post("/api/tasks", content=b'{"title": "x"}', headers=headers)
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert alice.get("/api/tasks").json() == []


@pytest.mark.parametrize("method, suffix", [("PUT", ""), ("PATCH", ""), ("PATCH", "/complete")])
def test_update_text_plain_is_415_and_changes_nothing(alice, method, suffix):
    task = alice.create_task(title="original")
    body = b'{"completed": true}' if suffix else b'{"title": "x"}'
    response = alice.request(method, f"/api/tasks/{task['id']}{suffix}", content=body, headers={"Content-Type": "text/plain"})
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert alice.get(f"/api/tasks/{task['id']}").json() == task


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON"])
def test_post_tasks_json_media_type_variants_are_accepted(alice, content_type):
    response = alice.post("/api/tasks", content=b'{"title": "x"}', headers={"Content-Type": content_type})
    assert response.status_code == 201, response.text


def padded_body(size: int) -> bytes:
    """A valid task body of exactly `size` bytes (JSON allows the padding whitespace)."""
    head, tail = b'{"title": "big"', b"}"
    return head + b" " * (size - len(head) - len(tail)) + tail


def test_post_tasks_body_of_64_kib_is_accepted(alice):
    response = alice.post("/api/tasks", content=padded_body(MAX_BODY), headers={"Content-Type": "application/json"})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("size", [MAX_BODY + 1, 10 * MAX_BODY])
def test_post_tasks_body_over_64_kib_is_413(alice, size):
    response = alice.post("/api/tasks", content=padded_body(size), headers={"Content-Type": "application/json"})
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert alice.get("/api/tasks").json() == []


def test_post_tasks_large_description_json_is_413_not_422(alice):
    response = alice.post("/api/tasks", json={"title": "x", "description": "d" * (MAX_BODY + 10)})
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def chunks(body: bytes, size: int = 4096):
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_post_tasks_chunked_body_of_64_kib_is_accepted(alice):
    response = alice.post("/api/tasks", content=chunks(padded_body(MAX_BODY)), headers={"Content-Type": "application/json"})
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.request.headers
    assert response.status_code == 201, response.text


def test_post_tasks_chunked_body_over_64_kib_is_413(alice):
    response = alice.post("/api/tasks", content=chunks(padded_body(MAX_BODY + 1)), headers={"Content-Type": "application/json"})
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert alice.get("/api/tasks").json() == []


@pytest.mark.parametrize("method, suffix", [("PUT", ""), ("PATCH", ""), ("PATCH", "/complete")])
def test_update_body_over_64_kib_is_413_and_changes_nothing(alice, method, suffix):
    task = alice.create_task(title="original")
    path = f"/api/tasks/{task['id']}{suffix}"
    headers = {"Content-Type": "application/json"}
    assert_error(alice.request(method, path, content=padded_body(MAX_BODY + 1), headers=headers), 413, "PAYLOAD_TOO_LARGE")
    assert_error(alice.request(method, path, content=chunks(padded_body(MAX_BODY + 1)), headers=headers), 413, "PAYLOAD_TOO_LARGE")
    assert alice.get(f"/api/tasks/{task['id']}").json() == task


def test_post_tasks_streamed_body_over_64_kib_stops_reading_early(app):
    """At the ASGI level, in many small chunks and no Content-Length: 413 without reading it all."""
    token = mint_token("streamer")
    sent_chunks = 0
    total_chunks = 1000  # 8 MiB if read to the end
    messages: list[dict] = []

    async def receive():
        nonlocal sent_chunks
        sent_chunks += 1
        if sent_chunks > total_chunks:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": b" " * 8192, "more_body": sent_chunks < total_chunks}

    async def send(message):
        messages.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/api/tasks", "raw_path": b"/api/tasks", "root_path": "", "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                    (b"transfer-encoding", b"chunked"), (b"authorization", f"Bearer {token}".encode())],
        "client": ("127.0.0.1", 1234), "server": ("testserver", 80), "state": {},
    }
    asyncio.run(app(scope, receive, send))
    assert messages[0]["type"] == "http.response.start" and messages[0]["status"] == 413
    assert sent_chunks <= (MAX_BODY // 8192) + 2


# ---------------------------------------------------------------- crashes


def test_crash_is_500_internal_error_without_internals(alice, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("secret SQL: SELECT * FROM task WHERE password='hunter2' " + TEST_SECRET)

    monkeypatch.setattr(store, "create_task", explode)
    response = alice.post("/api/tasks", json={"title": "x"}, headers={"X-Request-ID": "crash-1"})
    body = assert_error(response, 500, "INTERNAL_ERROR")
    assert set(body) == {"detail", "error_code", "timestamp"}
    for leak in LEAKS:
        assert leak not in response.text, leak
    assert response.headers["X-Request-ID"] == "crash-1"


def test_database_error_is_500_without_sql(alice, monkeypatch):
    def broken(*args, **kwargs):
        raise sa.exc.ProgrammingError("SELECT password FROM secret_table", {"password": "hunter2"}, Exception("secret"))

    monkeypatch.setattr(store, "get_task", broken)
    response = alice.get("/api/tasks/1")
    assert_error(response, 500, "INTERNAL_ERROR")
    for leak in LEAKS:
        assert leak not in response.text, leak


@pytest.fixture(scope="module")
def crashing_client(database_url):
    app = create_app(make_settings(database_url))

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret SQL: DROP TABLE task; password=hunter2")

    @app.get("/boom-async")
    async def boom_async():
        raise KeyError("secret")

    @app.get("/boom-value")
    def boom_value():
        raise ValueError("SELECT password")

    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("path", ["/boom", "/boom-async", "/boom-value"])
def test_route_that_raises_is_500_internal_error(crashing_client, path):
    response = crashing_client.get(path, headers={"Origin": "http://localhost:3000"})
    body = assert_error(response, 500, "INTERNAL_ERROR")
    assert set(body) == {"detail", "error_code", "timestamp"}
    for leak in LEAKS:
        assert leak not in response.text, leak
    # The browser can read the error (CORS headers on a crash too).
    assert response.headers.get("access-control-allow-origin") == "http://localhost:3000"
    # The service keeps serving after a crash.
    assert crashing_client.get("/health").status_code == 200


# ---------------------------------------------------------------- database unreachable


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(
    scope="module",
    params=["postgres-closed-port", "postgres-port-1", "sqlite-unopenable"],
)
def dead_database_client(request, tmp_path_factory):
    if request.param == "postgres-closed-port":
        url = f"postgresql://postgres@127.0.0.1:{closed_port()}/x"
    elif request.param == "postgres-port-1":
        url = "postgresql://postgres@127.0.0.1:1/x"
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('dead')}/no/such/dir/tasks.db"
    app = create_app(make_settings(url))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "/api/tasks", None),
        ("POST", "/api/tasks", {"title": "x"}),
        ("GET", "/api/tasks/1", None),
        ("PATCH", "/api/tasks/1", {"title": "x"}),
        ("DELETE", "/api/tasks/1", None),
        ("POST", "/api/tasks/1/toggle", None),
        ("GET", "/api/u1/tasks", None),
    ],
)
def test_database_unreachable_is_503_with_retry_after_fast(dead_database_client, method, path, body):
    started = time.monotonic()
    response = dead_database_client.request(
        method, path, json=body, headers={"Authorization": f"Bearer {mint_token('u1')}", "X-Request-ID": "dead-db"}
    )
    elapsed = time.monotonic() - started
    body = assert_error(response, 503, "SERVICE_UNAVAILABLE")
    assert "unreachable" in body["detail"] and "busy" not in body["detail"]
    assert elapsed < 10, elapsed
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["X-Request-ID"] == "dead-db"
    for leak in ("127.0.0.1", "psycopg2", "sqlite3", "OperationalError", "connection", "SELECT"):
        assert leak not in response.text, leak


def test_database_that_never_answers_is_503_within_seconds():
    """A port that accepts TCP connections but never speaks: the service must not hang."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        port = silent.getsockname()[1]
        app = create_app(make_settings(f"postgresql://postgres@127.0.0.1:{port}/x", db_connect_timeout_seconds=2))
        with TestClient(app, raise_server_exceptions=False) as client:
            started = time.monotonic()
            response = client.get("/api/tasks", headers={"Authorization": f"Bearer {mint_token('u1')}"})
            elapsed = time.monotonic() - started
    assert_error(response, 503, "SERVICE_UNAVAILABLE")
    assert response.headers.get("Retry-After")
    assert elapsed < 10, elapsed


# ---------------------------------------------------------------- X-Request-ID


def test_every_response_has_a_request_id(client, alice, bob, monkeypatch):
    task = alice.create_task()
    etag = alice.get(f"/api/tasks/{task['id']}").headers["ETag"]
    responses = {
        "200": alice.get("/api/tasks"),
        "201": alice.post("/api/tasks", json={"title": "x"}),
        "204": alice.delete(f"/api/tasks/{alice.create_task()['id']}"),
        "304": alice.get(f"/api/tasks/{task['id']}", headers={"If-None-Match": etag}),
        "400": alice.post("/api/tasks", content=b"{", headers={"Content-Type": "application/json"}),
        "401": client.get("/api/tasks"),
        "403": bob.get(f"/api/{alice.user_id}/tasks"),
        "404": alice.get("/api/tasks/999999999"),
        "404-route": client.get("/nope"),
        "405": alice.request("PATCH", "/api/tasks"),
        "412": alice.patch(f"/api/tasks/{task['id']}", json={"title": "y"}, headers={"If-Match": '"stale"'}),
        "413": alice.post("/api/tasks", content=padded_body(MAX_BODY + 1), headers={"Content-Type": "application/json"}),
        "415": alice.post("/api/tasks", content=b"{}", headers={"Content-Type": "text/plain"}),
        "422": alice.post("/api/tasks", json={"title": ""}),
        "health": client.get("/health"),
        "docs": client.get("/docs"),
        "openapi": client.get("/openapi.json"),
    }
    monkeypatch.setattr(queries, "list_tasks", lambda *a, **k: 1 / 0)
    responses["500"] = alice.get("/api/tasks")
    seen = set()
    for name, response in responses.items():
        request_id = response.headers.get("X-Request-ID")
        assert request_id and SANE_ID.match(request_id), (name, response.status_code, request_id)
        seen.add(request_id)
    assert len(seen) == len(responses)  # a fresh id per request
    assert responses["500"].status_code == 500


@pytest.mark.parametrize(
    "request_id",
    ["abc", "req-123_XYZ.v1:2", "0f8fad5b-d9cb-469f-a165-70867728950e", "x" * 128],
    ids=["short", "punctuation", "uuid", "128"],
)
def test_sane_request_id_is_echoed(alice, client, request_id):
    assert alice.get("/api/tasks", headers={"X-Request-ID": request_id}).headers["X-Request-ID"] == request_id
    assert client.get("/nope", headers={"X-Request-ID": request_id}).headers["X-Request-ID"] == request_id
    assert client.get("/api/tasks", headers={"X-Request-ID": request_id}).headers["X-Request-ID"] == request_id


@pytest.mark.parametrize(
    "request_id",
    ["x" * 129, "x" * 5000, "has space", "a,b", "<script>alert(1)</script>", "new\\nline", "semi;colon", "quote\"d", ""],
    ids=["129", "5000", "space", "comma", "html", "backslash", "semicolon", "quote", "empty"],
)
def test_insane_request_id_is_replaced(alice, request_id):
    response = alice.get("/api/tasks", headers={"X-Request-ID": request_id})
    assert response.status_code == 200
    replaced = response.headers["X-Request-ID"]
    assert replaced != request_id and SANE_ID.match(replaced)
    assert len(response.headers.get_list("X-Request-ID")) == 1


def test_cors_preflight_response_has_a_request_id(client):
    response = client.options(
        "/api/tasks",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST", "X-Request-ID": "pre-1"},
    )
    assert response.status_code == 200
    assert response.headers.get("X-Request-ID") == "pre-1"


def test_crash_log_carries_the_request_id(alice, monkeypatch):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    try:
        monkeypatch.setattr(queries, "list_tasks", lambda *a, **k: 1 / 0)
        response = alice.get("/api/tasks", headers={"X-Request-ID": "find-me-in-logs"})
    finally:
        logging.getLogger().removeHandler(handler)
    assert response.status_code == 500
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    crash = [entry for entry in entries if entry.get("exception")]
    assert crash and crash[0]["request_id"] == "find-me-in-logs"
    assert "ZeroDivisionError" in crash[0]["exception"]  # the traceback goes to the log, not the client
