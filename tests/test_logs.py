"""Structured logs from the real process (contract §5, §6): every stdout line is one JSON object;
one access line per request with request_id, user_id, method, route template, status and
duration_ms; no token, secret or task content anywhere in the output."""
import io
import re
import json
import logging
import uuid

import httpx
import pytest

import store
from conftest import TEST_SECRET, make_settings, mint_token
from live_server import LiveServer
from logs import JsonFormatter
from main import create_app

pytestmark = pytest.mark.slow

ACCESS_FIELDS = {"time", "level", "logger", "message", "request_id", "user_id", "method", "route", "status", "duration_ms"}


@pytest.fixture(scope="module")
def run(backend, scratch_database):
    """Drive a real server through a mix of requests, stop it, and return what it printed."""
    marker = f"SECRET-CONTENT-{uuid.uuid4().hex}"
    user_id = f"logs_{uuid.uuid4().hex[:10]}"
    token = mint_token(user_id)
    forged = mint_token(user_id, secret="forged-" + uuid.uuid4().hex)
    sent: dict[str, dict] = {}  # request id -> what we expect in its access line

    with LiveServer(scratch_database(backend), secret=TEST_SECRET, env={"LOG_LEVEL": "INFO"}) as server:
        with httpx.Client(base_url=server.url, timeout=10.0) as http:

            def call(method: str, path: str, route: str, *, auth: str | None = token, user: str | None = user_id, **kwargs):
                request_id = f"req-{uuid.uuid4().hex[:16]}"
                headers = {"X-Request-ID": request_id, **kwargs.pop("headers", {})}
                if auth is not None:
                    headers["Authorization"] = f"Bearer {auth}"
                response = http.request(method, path, headers=headers, **kwargs)
                assert response.headers["X-Request-ID"] == request_id
                sent[request_id] = {"method": method, "route": route, "status": response.status_code, "user_id": user}
                return response

            body = {"title": f"title {marker}", "description": marker, "tags": [marker[:40]]}
            created = call("POST", "/api/tasks", "/api/tasks", json=body)
            assert created.status_code == 201
            task_id = created.json()["id"]
            call("GET", f"/api/tasks/{task_id}", "/api/tasks/{task_id}")
            call("GET", f"/api/{user_id}/tasks/{task_id}", "/api/{user_id}/tasks/{task_id}")
            call("PATCH", f"/api/tasks/{task_id}", "/api/tasks/{task_id}", json={"description": marker + "2"})
            call("POST", f"/api/tasks/{task_id}/toggle", "/api/tasks/{task_id}/toggle")
            call("GET", f"/api/tasks?q={marker}", "/api/tasks")
            call("POST", "/api/tasks", "/api/tasks", json={"title": marker, "unknown": marker})  # 422
            call("GET", "/api/tasks/999999", "/api/tasks/{task_id}")  # 404
            call("GET", "/api/tasks", "/api/tasks", auth=forged, user=None)  # bad signature
            call("GET", "/api/tasks", "/api/tasks", auth=f"garbage.{marker}.x", user=None)  # malformed
            call("GET", "/api/tasks", "/api/tasks", auth=None, user=None)  # missing
            call("GET", f"/nowhere/{marker}", "unmatched", auth=None, user=None)
            call("DELETE", f"/api/tasks/{task_id}", "/api/tasks/{task_id}")
            call("GET", "/health", "/health", auth=None, user=None)
            # An insane X-Request-ID is replaced, not echoed or logged.
            odd = http.get("/health", headers={"X-Request-ID": f"bad id {marker}"})
            assert odd.headers["X-Request-ID"] != f"bad id {marker}"
            sent[odd.headers["X-Request-ID"]] = {"method": "GET", "route": "/health", "status": 200, "user_id": None}
    output = server.output()
    return {"output": output, "sent": sent, "marker": marker, "token": token, "forged": forged, "user_id": user_id}


def parse(output: str) -> list[dict]:
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, "the server printed nothing"
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON log line: {line!r}")
    return entries


def test_every_line_is_json(run):
    for entry in parse(run["output"]):
        assert isinstance(entry, dict)
        assert {"time", "level", "logger", "message"} <= set(entry), entry
    assert "\\u001b" not in run["output"] and "\x1b" not in run["output"], "terminal colour codes in the log"


def test_one_access_line_per_request_with_its_fields(run):
    access = [entry for entry in parse(run["output"]) if entry["logger"] == "task_api.access"]
    by_id: dict[str, list[dict]] = {}
    for entry in access:
        by_id.setdefault(entry["request_id"], []).append(entry)
    for request_id, expected in run["sent"].items():
        lines = by_id.get(request_id, [])
        assert len(lines) == 1, (request_id, expected, lines)
        line = lines[0]
        assert ACCESS_FIELDS <= set(line), line
        assert {key: line[key] for key in expected} == expected, line
        assert isinstance(line["duration_ms"], (int, float)) and 0 <= line["duration_ms"] < 10_000
        assert line["level"] == "info"


def test_no_token_secret_or_task_content_in_logs(run):
    output = run["output"]
    for needle, what in [
        (run["marker"], "task content / query string / path"),
        (run["token"], "the caller's token"),
        (run["token"].split(".")[2], "the token's signature"),
        (run["forged"], "a rejected token"),
        (TEST_SECRET, "BETTER_AUTH_SECRET"),
    ]:
        assert needle not in output, f"{what} leaked into the logs"
    assert "authorization" not in output.lower()


def test_a_database_crash_logs_its_traceback_without_task_contents(database_url, monkeypatch):
    """A 500 from the database logs the traceback (with the request id), but not the SQL parameters,
    which are task contents."""
    from fastapi.testclient import TestClient

    marker = f"CONTENT-{uuid.uuid4().hex}"
    real_insert_row = store.insert_row

    async def broken_insert_row(connection, caller, creator, columns, *args):  # a row its CHECK refuses: an IntegrityError
        return await real_insert_row(connection, caller, creator, {**columns, "priority": "urgent"}, *args)

    monkeypatch.setattr(store, "insert_row", broken_insert_row)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    app = create_app(make_settings(database_url))
    logger = logging.getLogger("task_api.error")
    logger.addHandler(handler)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            response = client.post(
                "/api/tasks",
                json={"title": marker, "tags": [marker[:40]]},
                headers={"Authorization": f"Bearer {mint_token('crash_user')}", "X-Request-ID": "crash-1"},
            )
    finally:
        logger.removeHandler(handler)
    assert response.status_code == 500, response.text
    assert marker not in response.text
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    crash = [entry for entry in entries if entry["request_id"] == "crash-1"]
    # sqlite3.IntegrityError / psycopg.errors.CheckViolation
    assert crash and re.search("IntegrityError|CheckViolation", crash[0]["exception"]), entries
    assert marker[:40] not in stream.getvalue(), "task contents (SQL parameters) leaked into the error log"
