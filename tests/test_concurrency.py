"""Optimistic concurrency under real concurrency: ETag / If-None-Match / If-Match, and no lost updates.

The concurrent tests run the real service (`uvicorn main:app`, two worker processes, each with its
threadpool) and hit it from threads that each have their own HTTP connection, released together by
a barrier, so requests really are in flight at the same time (checked: `overlapped`).
"""
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import httpx
import pytest

from conftest import TEST_SECRET, mint_token
from live_server import LiveServer, run_in_threads

pytestmark = pytest.mark.slow

THREADS = 8
ROUNDS = 3


@dataclass
class Reply:
    status: int
    body: Any
    headers: httpx.Headers
    started: float
    ended: float


def run_together(count: int, request: Callable[[httpx.Client, int], httpx.Response], like: httpx.Client) -> list[Reply]:
    """`count` threads, each with its own connection (opened before the barrier), send at once."""
    barrier = threading.Barrier(count)
    replies: list[Reply | BaseException | None] = [None] * count

    def worker(index: int) -> None:
        try:
            with httpx.Client(base_url=like.base_url, headers=like.headers, timeout=30.0) as http:
                http.get("/health")  # connect first, so the barrier releases requests, not handshakes
                barrier.wait(timeout=30)
                started = time.monotonic()
                response = request(http, index)
                ended = time.monotonic()
                body = response.json() if response.content else None
                replies[index] = Reply(response.status_code, body, response.headers, started, ended)
        except BaseException as exc:  # reported below, with the others
            barrier.abort()
            replies[index] = exc

    run_in_threads(count, worker)
    errors = [reply for reply in replies if isinstance(reply, BaseException)]
    assert not errors, errors
    return replies  # type: ignore[return-value]


def overlapped(replies: list[Reply]) -> bool:
    """True when at least two of the requests were in flight at the same time."""
    ordered = sorted(replies, key=lambda r: r.started)
    latest_end = ordered[0].ended
    for reply in ordered[1:]:
        if reply.started < latest_end:
            return True
        latest_end = max(latest_end, reply.ended)
    return False


@pytest.fixture(scope="module")
def live(backend, scratch_database):
    with LiveServer(scratch_database(backend), secret=TEST_SECRET, workers=2, env={"LOG_LEVEL": "WARNING"}) as server:
        yield server


@pytest.fixture
def user(live):
    user_id = f"cc_{uuid.uuid4().hex[:10]}"
    http = httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {mint_token(user_id)}"}, timeout=30.0)
    yield http
    http.close()


def create(http: httpx.Client, **fields: Any) -> tuple[dict, str]:
    response = http.post("/api/tasks", json={"title": "contended", **fields})
    assert response.status_code == 201, response.text
    return response.json(), response.headers["ETag"]


# ---------------------------------------------------------------- sequential ETag semantics


def test_etag_changes_on_every_write_and_if_none_match_follows_it(user):
    task, etag = create(user)
    path = f"/api/tasks/{task['id']}"
    seen = [etag]
    writes = [
        ("PUT", path, {"title": "put"}),
        ("PATCH", path, {"title": "patch"}),
        ("PATCH", path, {"title": "patch"}),  # same value again: still a write, still a new version
        ("POST", path + "/toggle", None),
        ("PATCH", path + "/complete", {"completed": False}),
        ("PATCH", path + "/complete", None),
    ]
    for method, url, body in writes:
        response = user.request(method, url, json=body) if body is not None else user.request(method, url)
        assert response.status_code == 200, response.text
        assert response.headers["ETag"] not in seen, (method, url)
        seen.append(response.headers["ETag"])
        read = user.get(path)
        assert read.headers["ETag"] == seen[-1]
        assert read.json() == response.json()
    # Only the current tag gives 304; every earlier one gives the task.
    assert user.get(path, headers={"If-None-Match": seen[-1]}).status_code == 304
    assert user.get(path, headers={"If-None-Match": f"{seen[0]}, {seen[-1]}"}).status_code == 304
    for old in seen[:-1]:
        response = user.get(path, headers={"If-None-Match": old})
        assert response.status_code == 200 and response.headers["ETag"] == seen[-1]


# ---------------------------------------------------------------- one tag, many writers: exactly one wins

CONDITIONAL_WRITES = {
    "PUT": lambda http, path, i, tag: http.put(path, json={"title": f"writer {i}"}, headers={"If-Match": tag}),
    "PATCH": lambda http, path, i, tag: http.patch(path, json={"tags": [f"w{i}"]}, headers={"If-Match": tag}),
    "toggle": lambda http, path, i, tag: http.post(path + "/toggle", headers={"If-Match": tag}),
    "complete": lambda http, path, i, tag: http.patch(path + "/complete", headers={"If-Match": tag}),
    "DELETE": lambda http, path, i, tag: http.delete(path, headers={"If-Match": tag}),
}


@pytest.mark.parametrize("write", list(CONDITIONAL_WRITES))
def test_concurrent_writers_with_the_same_if_match_exactly_one_wins(live, user, write):
    send = CONDITIONAL_WRITES[write]
    overlaps = 0
    for _ in range(ROUNDS):
        task, etag = create(user)
        path = f"/api/tasks/{task['id']}"
        replies = run_together(THREADS, lambda http, i: send(http, path, i, etag), user)
        overlaps += overlapped(replies)
        statuses = Counter(r.status for r in replies)
        winners = [r for r in replies if r.status < 300]
        assert len(winners) == 1, statuses
        losers = {412, 404} if write == "DELETE" else {412}  # after the delete, the task is gone
        assert set(statuses) - {winners[0].status} <= losers, statuses
        for loser in (r for r in replies if r.status >= 300):
            assert loser.body["error_code"] in ("PRECONDITION_FAILED", "TASK_NOT_FOUND")
        read = user.get(path)
        if write == "DELETE":
            assert winners[0].status == 204 and read.status_code == 404
            continue
        # Exactly one write happened: version 2, and the task is the winner's response.
        assert read.status_code == 200
        assert read.headers["ETag"] == f'"{task["id"]}.2"' == winners[0].headers["ETag"]
        assert read.json() == winners[0].body
    assert overlaps >= 1, "the requests never overlapped: this test proved nothing"


# ---------------------------------------------------------------- many writers, no If-Match: none lost

WRITERS = 20


def test_concurrent_patches_without_if_match_all_succeed_and_none_is_lost(live, user):
    task, _ = create(user)
    path = f"/api/tasks/{task['id']}"
    replies = run_together(
        WRITERS, lambda http, i: http.patch(path, json={"tags": [f"writer-{i}"], "description": f"d{i}"}), user
    )
    statuses = Counter(r.status for r in replies)
    succeeded = [r for r in replies if 200 <= r.status < 300]
    assert len(succeeded) == WRITERS, statuses
    # Each write got its own version: no two responses claim the same one, and none was skipped.
    versions = sorted(int(r.headers["ETag"].strip('"').split(".")[1]) for r in succeeded)
    assert versions == list(range(2, 2 + WRITERS))
    final = user.get(path)
    assert final.headers["ETag"] == f'"{task["id"]}.{1 + len(succeeded)}"'
    last = max(succeeded, key=lambda r: int(r.headers["ETag"].strip('"').split(".")[1]))
    assert final.json() == last.body  # the last write is the one that stands, whole (no mix of writers)
    assert final.json()["tags"] == [f"writer-{final.json()['description'][1:]}"]
    # The tag index followed the row: the task carries exactly the final tag.
    tags = user.get("/api/tags").json()
    assert tags == [{"tag": final.json()["tags"][0], "count": 1}]


def test_concurrent_toggles_without_if_match_all_apply(live, user):
    task, _ = create(user)
    path = f"/api/tasks/{task['id']}"
    replies = run_together(WRITERS, lambda http, i: http.post(path + "/toggle"), user)
    statuses = Counter(r.status for r in replies)
    assert statuses == {200: WRITERS}, statuses
    by_version = {int(r.headers["ETag"].strip('"').split(".")[1]): r.body for r in replies}
    assert sorted(by_version) == list(range(2, 2 + WRITERS))
    # Every toggle saw the one before it: version v is completed exactly when v is even.
    for version, body in by_version.items():
        assert body["completed"] is (version % 2 == 0), (version, body)
    final = user.get(path)
    assert final.json()["completed"] is (WRITERS % 2 == 1)
    assert final.headers["ETag"] == f'"{task["id"]}.{1 + WRITERS}"'
