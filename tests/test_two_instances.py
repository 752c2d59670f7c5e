"""Two instances of the service (two `uvicorn main:app` processes on two ports) behind one
PostgreSQL database and one Redis, as a scaled-out deployment runs: whatever one instance
writes, the other reads; ETags, Idempotency-Keys and the rate limit hold across them.

Needs PostgreSQL (TEST_DATABASE_URL) and Redis (TEST_REDIS_URL, default redis://127.0.0.1:6379/9):
skipped when either is unreachable, failed under CI.
"""
import os
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from conftest import TEST_SECRET, mint_token, unavailable
from live_server import LiveServer

pytestmark = pytest.mark.slow
RATE_LIMIT = 10
WINDOW_SECONDS = 60  # ratelimit.py: fixed one-minute windows


@pytest.fixture(scope="module")
def redis_url() -> str:
    url = os.environ.get("TEST_REDIS_URL") or "redis://127.0.0.1:6379/9"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        message = f"Redis at {url} is unreachable: {exc}"
        unavailable(message)
    return url


@pytest.fixture(scope="module")
def instances(scratch_database, redis_url: str) -> Iterator[tuple[LiveServer, LiveServer]]:
    database_url = scratch_database("postgres")
    env = {"REDIS_URL": redis_url, "RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT), "LOG_LEVEL": "WARNING"}
    first = LiveServer(database_url, secret=TEST_SECRET, env=env)
    second = LiveServer(database_url, secret=TEST_SECRET, env=env)
    try:
        first.start()
        second.start()
        assert first.port != second.port
        yield first, second
    finally:
        for server in (first, second):
            server.stop()


def client_for(server: LiveServer, user_id: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {mint_token(user_id)}"}, timeout=10)


def new_user_id(purpose: str) -> str:
    """Fresh for every run: the rate-limit counters in Redis are keyed by user."""
    return f"two_{purpose}_{uuid.uuid4().hex[:12]}"


def test_a_task_written_through_one_instance_is_read_changed_and_deleted_through_the_other(instances) -> None:
    a_server, b_server = instances
    user = new_user_id("crud")
    with client_for(a_server, user) as a, client_for(b_server, user) as b:
        created = a.post("/api/tasks", json={"title": "written on A", "tags": ["shared"]})
        assert created.status_code == 201, created.text
        task_id, etag_at_create = created.json()["id"], created.headers["ETag"]

        read = b.get(f"/api/tasks/{task_id}")
        assert read.status_code == 200 and read.json() == created.json()
        assert read.headers["ETag"] == etag_at_create
        assert [t["id"] for t in b.get("/api/tasks").json()] == [task_id]

        patched = b.patch(f"/api/tasks/{task_id}", json={"title": "changed on B"}, headers={"If-Match": etag_at_create})
        assert patched.status_code == 200, patched.text
        stale = a.patch(f"/api/tasks/{task_id}", json={"title": "lost update"}, headers={"If-Match": etag_at_create})
        assert stale.status_code == 412 and stale.json()["error_code"] == "PRECONDITION_FAILED"
        seen_on_a = a.get(f"/api/tasks/{task_id}")
        assert seen_on_a.json()["title"] == "changed on B" and seen_on_a.headers["ETag"] == patched.headers["ETag"]

        assert a.delete(f"/api/tasks/{task_id}", headers={"If-Match": patched.headers["ETag"]}).status_code == 204
        gone = b.get(f"/api/tasks/{task_id}")
        assert gone.status_code == 404 and gone.json()["error_code"] == "TASK_NOT_FOUND"
        assert b.delete(f"/api/tasks/{task_id}").status_code == 404


def test_an_idempotency_key_replayed_on_the_other_instance_creates_nothing(instances) -> None:
    a_server, b_server = instances
    user = new_user_id("idem")
    body = {"title": "pay rent", "priority": "high"}
    key = {"Idempotency-Key": f"rent-{uuid.uuid4()}"}
    with client_for(a_server, user) as a, client_for(b_server, user) as b:
        first = a.post("/api/tasks", json=body, headers=key)
        assert first.status_code == 201, first.text
        replay = b.post("/api/tasks", json=body, headers=key)
        assert replay.status_code == 201, replay.text
        assert replay.json() == first.json()
        assert replay.headers["Location"] == first.headers["Location"]
        assert replay.headers.get("Idempotent-Replayed") == "true"
        reused = b.post("/api/tasks", json={**body, "title": "pay more rent"}, headers=key)
        assert reused.status_code == 422 and reused.json()["error_code"] == "IDEMPOTENCY_KEY_REUSED"
        listed = a.get("/api/tasks")
        assert [t["id"] for t in listed.json()] == [first.json()["id"]] and listed.headers["X-Total-Count"] == "1"


def test_the_rate_limit_is_shared_by_both_instances(instances) -> None:
    a_server, b_server = instances
    user = new_user_id("rate")
    # Twelve requests in one fixed window: start clear of a window boundary.
    if WINDOW_SECONDS - time.time() % WINDOW_SECONDS < 5:
        time.sleep(WINDOW_SECONDS - time.time() % WINDOW_SECONDS + 0.2)
    with client_for(a_server, user) as a, client_for(b_server, user) as b:
        statuses = [a.get("/api/tasks").status_code for _ in range(6)]
        limited = []
        for _ in range(6):
            response = b.get("/api/tasks")
            statuses.append(response.status_code)
            if response.status_code == 429:
                limited.append(response)
        # Each process alone has seen at most 6 requests: only a shared counter refuses any.
        assert statuses == [200] * RATE_LIMIT + [429, 429], statuses
        for response in limited:
            assert response.json()["error_code"] == "RATE_LIMITED"
            assert 1 <= int(response.headers["Retry-After"]) <= WINDOW_SECONDS
        assert a.get("/api/tasks").status_code == 429  # and A sees the same count
    with client_for(a_server, new_user_id("rate_other")) as other:
        assert other.get("/api/tasks").status_code == 200  # per user: someone else is not limited


def test_an_agents_mcp_messages_are_answered_by_either_instance(instances) -> None:
    """/mcp is stateless: an agent behind a load balancer may reach a different instance each time."""
    first, second = instances
    user_id = new_user_id("mcp")
    headers = {
        "Authorization": f"Bearer {mint_token(user_id)}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }

    def rpc(server: LiveServer, message_id: int, method: str, params: dict) -> dict:
        body = {"jsonrpc": "2.0", "id": message_id, "method": method, "params": params}
        response = httpx.post(server.url + "/mcp", json=body, headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["result"]

    client_info = {"name": "test", "version": "1"}
    hello = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": client_info}
    headers["Mcp-Protocol-Version"] = rpc(first, 1, "initialize", hello)["protocolVersion"]
    new_task = {"name": "add_task", "arguments": {"title": "asked on one, done on the other"}}
    created = rpc(second, 2, "tools/call", new_task)
    task_id = created["structuredContent"]["task_id"]
    completed = rpc(first, 3, "tools/call", {"name": "complete_task", "arguments": {"task_id": task_id}})
    assert completed["structuredContent"]["task"]["completed"] is True
    with client_for(second, user_id) as client:
        assert client.get(f"/api/tasks/{task_id}").json()["completed"] is True
