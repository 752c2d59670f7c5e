"""§10 over real HTTP: the cursor guarantee under concurrent writers, and /api/events delivering
across workers and instances. Each backend runs instance A (2 workers) and instance B (1 worker)
on one database, as a scaled-out deployment does."""
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from conftest import TEST_SECRET, mint_token
from live_server import LiveServer, run_in_threads
from sse_client import SseStream

pytestmark = pytest.mark.slow
DELIVERY_SECONDS = 2.0


@pytest.fixture(scope="module")
def instances(backend, scratch_database) -> Iterator[tuple[LiveServer, LiveServer]]:
    database_url = scratch_database(backend)
    env = {"LOG_LEVEL": "INFO", "EVENT_STREAMS_PER_USER": "3"}
    first = LiveServer(database_url, secret=TEST_SECRET, workers=2, env=env)
    second = LiveServer(database_url, secret=TEST_SECRET, env=env)
    try:
        first.start()
        second.start()
        yield first, second
    finally:
        first.stop()
        second.stop()


def new_user() -> tuple[str, str]:
    user_id = f"live_{uuid.uuid4().hex[:10]}"
    return user_id, mint_token(user_id)


def http(server: LiveServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def current_cursor(client: httpx.Client) -> str:
    return client.get("/api/changes").json()["cursor"]


def read_all(client: httpx.Client, cursor: str) -> tuple[list[dict], str]:
    seen = []
    while True:
        page = client.get("/api/changes", params={"since": cursor, "limit": 7}).json()
        seen += page["changes"]
        cursor = page["cursor"]
        if not page["has_more"]:
            return seen, cursor


def test_a_polling_reader_sees_every_concurrent_write_exactly_once_in_commit_order(instances):
    a_server, b_server = instances
    user_id, token = new_user()
    writers, writes_each = 6, 15
    with http(a_server, token) as setup:
        start = current_cursor(setup)
        task_ids = [setup.post("/api/tasks", json={"title": f"shared {i}"}).json()["id"] for i in range(3)]
    version_of_title: dict[str, int] = {}  # every write the server acknowledged, with the version it made
    done = threading.Event()
    polled: list[dict] = []

    def write(index: int) -> None:
        with http((a_server, b_server)[index % 2], token) as client:
            for n in range(writes_each):
                title = f"writer {index} write {n}"
                response = client.patch(f"/api/tasks/{task_ids[(index + n) % len(task_ids)]}", json={"title": title})
                assert response.status_code == 200, response.text
                version_of_title[title] = int(response.headers["ETag"].strip('"').split(".")[1])

    def poll() -> None:
        cursor = start
        with http(b_server, token) as client:
            while True:
                finished = done.is_set()
                page = client.get("/api/changes", params={"since": cursor, "limit": 5}).json()
                polled.extend(page["changes"])
                cursor = page["cursor"]
                if finished and not page["has_more"] and not page["changes"]:
                    return

    reader = threading.Thread(target=poll)
    reader.start()
    run_in_threads(writers, write, timeout=120)
    done.set()
    reader.join(60)
    assert not reader.is_alive()

    titles = [c["data"]["title"] for c in polled if c["type"] == "task.updated"]
    assert len(version_of_title) == writers * writes_each
    assert Counter(titles) == Counter(list(version_of_title))  # every acknowledged write, exactly once, nothing else
    cursors = [c["cursor"] for c in polled]
    assert len(set(cursors)) == len(cursors)
    # In commit order: the writes of one task (whose versions are its commit order) arrive in version order...
    for task_id in task_ids:
        versions = [version_of_title[c["data"]["title"]] for c in polled if c["type"] == "task.updated" and c["id"] == task_id]
        assert versions == sorted(versions)
    # ...and the reader that followed along saw exactly what one read of the whole feed sees afterwards.
    with http(a_server, token) as client:
        whole, _ = read_all(client, start)
    assert whole == polled


def open_stream(server: LiveServer, token: str | None, *, header: bool = False, path: str = "/api/events", **params):
    if token is not None and not header:
        params["access_token"] = token
    headers = {"Authorization": f"Bearer {token}"} if header else {}
    return SseStream(server.url + path, headers=headers, params=params)


def next_task_change(stream: SseStream) -> dict:
    """The next event, past the list.created of the user's default list (made by their first write)."""
    while True:
        event = stream.next_event(timeout=DELIVERY_SECONDS)
        assert event is not None, "the stream ended"
        change = json.loads(event["data"])
        assert event["event"] == change["type"] and event["id"] == change["cursor"]
        if not (change["type"] == "list.created" and change["data"]["is_default"]):
            return change


def expect_change(stream: SseStream, title: str) -> dict:
    change = next_task_change(stream)
    assert change["data"]["title"] == title, change
    return change


def test_a_change_made_through_any_worker_or_instance_reaches_an_open_stream_within_2_seconds(instances):
    a_server, b_server = instances
    user_id, token = new_user()
    with open_stream(a_server, token) as stream, http(a_server, token) as a, http(b_server, token) as b:
        assert stream.status_code == 200 and stream.content_type.startswith("text/event-stream")
        time.sleep(0.3)
        created = b.post("/api/tasks", json={"title": "from instance B"}).json()
        change = expect_change(stream, "from instance B")
        assert change["type"] == "task.created" and change["id"] == created["id"] and change["data"] == created
        for n in range(4):  # A has two workers: some of these land on the other one
            a.patch(f"/api/tasks/{created['id']}", json={"title": f"from A {n}"})
            assert expect_change(stream, f"from A {n}")["type"] == "task.updated"
        b.delete(f"/api/tasks/{created['id']}")
        deleted = next_task_change(stream)
        assert deleted["type"] == "task.deleted" and deleted["data"] is None


def test_a_reconnect_with_last_event_id_replays_what_it_missed(instances):
    a_server, b_server = instances
    user_id, token = new_user()
    with http(b_server, token) as b:
        b.post("/api/tasks", json={"title": "seen"})
        with open_stream(a_server, token, header=True) as stream:
            time.sleep(0.3)
            b.post("/api/tasks", json={"title": "seen live"})
            last = expect_change(stream, "seen live")["cursor"]
        b.post("/api/tasks", json={"title": "missed 1"})
        b.post("/api/tasks", json={"title": "missed 2"})
        with SseStream(a_server.url + "/api/events", headers={"Authorization": f"Bearer {token}", "Last-Event-ID": last}) as again:
            expect_change(again, "missed 1")
            expect_change(again, "missed 2")
        with open_stream(b_server, token, since=last) as by_query:  # ?since= does the same
            expect_change(by_query, "missed 1")


def test_a_stream_without_a_cursor_starts_now_and_tells_the_browser_its_position(instances):
    a_server, _ = instances
    user_id, token = new_user()
    with http(a_server, token) as a:
        a.post("/api/tasks", json={"title": "before"})
        cursor = current_cursor(a)
        with open_stream(a_server, token) as stream:
            time.sleep(0.3)
            assert stream.last_id == cursor  # an id-only message: a reconnect resumes from here
            a.post("/api/tasks", json={"title": "after"})
            expect_change(stream, "after")


def test_streams_are_per_user(instances):
    a_server, b_server = instances
    alice_id, alice = new_user()
    bob_id, bob = new_user()
    with open_stream(a_server, bob) as bobs, http(b_server, alice) as a, http(b_server, bob) as b:
        time.sleep(0.3)
        a.post("/api/tasks", json={"title": "alice's secret"})
        time.sleep(1.5)
        b.post("/api/tasks", json={"title": "bob's"})
        change = expect_change(bobs, "bob's")  # the first thing bob sees is his own
        assert change["data"]["user_id"] == bob_id
        alice_cursor = current_cursor(a)
    # bob with alice's cursor replays his own feed, never hers
    with open_stream(a_server, bob, since="v1.0") as replay:
        assert next_task_change(replay)["data"]["user_id"] == bob_id
    forbidden = httpx.get(f"{a_server.url}/api/{alice_id}/events", params={"access_token": bob})
    assert forbidden.status_code == 403
    assert alice_cursor


def test_the_user_path_spelling_streams_too(instances):
    a_server, b_server = instances
    user_id, token = new_user()
    with open_stream(a_server, token, path=f"/api/{user_id}/events") as stream, http(b_server, token) as b:
        time.sleep(0.3)
        b.post("/api/tasks", json={"title": "on the user path"})
        expect_change(stream, "on the user path")


def test_the_stream_ends_when_the_token_expires(instances):
    a_server, _ = instances
    user_id = f"live_{uuid.uuid4().hex[:10]}"
    token = mint_token(user_id, exp=int(time.time()) + 3)
    with open_stream(a_server, token) as stream:
        assert stream.status_code == 200
        assert stream.ended_within(8), "the stream outlived its token"


@pytest.mark.parametrize("token", [None, "not-a-jwt", mint_token("someone", secret="another-secret-" + "x" * 40)])
def test_a_stream_needs_a_valid_token(instances, token):
    a_server, _ = instances
    params = {"access_token": token} if token else {}
    response = httpx.get(a_server.url + "/api/events", params=params, timeout=10)
    assert response.status_code == 401 and response.json()["error_code"] == "UNAUTHORIZED"


@pytest.mark.parametrize("blank", [" ", "\n", "\t", " \t\n"])  # sent as %20, %0A, %09
def test_a_token_with_blanks_around_it_is_trimmed_never_a_500(instances, blank):
    a_server, _ = instances
    _, token = new_user()
    for spelled in (f"{blank}{token}", f"{token}{blank}", f"{blank}{token}{blank}"):
        with open_stream(a_server, spelled) as stream:
            assert stream.status_code == 200, stream.error_body
    with open_stream(a_server, f" \t {token}", header=True) as stream:  # the header's blanks too (inner ones:
        assert stream.status_code == 200, stream.error_body              # HTTP clients drop the outer ones)
    response = httpx.get(f"{a_server.url}/api/events", params={"access_token": blank}, timeout=10)
    assert response.status_code == 401 and response.json()["error_code"] == "UNAUTHORIZED"


def test_a_token_that_expires_after_the_year_9999_streams(instances):
    a_server, _ = instances
    with open_stream(a_server, mint_token(f"live_{uuid.uuid4().hex[:10]}", exp=10**400)) as stream:
        assert stream.status_code == 200, stream.error_body


def test_an_expired_or_malformed_cursor_is_refused_before_the_stream_starts(instances):
    a_server, _ = instances
    _, token = new_user()
    response = httpx.get(a_server.url + "/api/events", params={"access_token": token, "since": "v1.999999"}, timeout=10)
    assert response.status_code == 410 and response.json()["error_code"] == "CURSOR_EXPIRED"
    response = httpx.get(a_server.url + "/api/events", params={"access_token": token}, headers={"Last-Event-ID": "x"}, timeout=10)
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "Last-Event-ID"


def test_too_many_streams_for_one_user_is_a_429(instances):
    _, b_server = instances  # one worker: every stream lands in the same process
    _, token = new_user()
    streams = [open_stream(b_server, token).__enter__() for _ in range(3)]
    try:
        assert all(stream.status_code == 200 for stream in streams)
        response = httpx.get(b_server.url + "/api/events", params={"access_token": token}, timeout=10)
        assert response.status_code == 429 and response.json()["error_code"] == "RATE_LIMITED"
        assert "stream" in response.json()["detail"]
    finally:
        for stream in streams:
            stream.close()
    time.sleep(0.5)
    with open_stream(b_server, token) as again:  # a closed stream frees its place
        assert again.status_code == 200


SIMULTANEOUS_OPENS = 40
ROUNDS_OF_OPENS = 5


def open_together(server: LiveServer, token: str, count: int, **params) -> list[SseStream]:
    """`count` streams of one user opened at the same moment (a barrier), each answered."""
    streams: list[SseStream] = [open_stream(server, token, **params) for _ in range(count)]
    barrier = threading.Barrier(count)

    def start(index: int) -> None:
        barrier.wait()
        streams[index].__enter__()

    run_in_threads(count, start)
    return streams


def close_all(streams: list[SseStream]) -> None:
    run_in_threads(len(streams), lambda index: streams[index].close())


def test_streams_opened_at_the_same_moment_are_held_to_the_limit_and_all_given_back(instances):
    _, b_server = instances  # one worker: every stream lands in the same process (EVENT_STREAMS_PER_USER=3)
    for round_number in range(ROUNDS_OF_OPENS):
        _, token = new_user()
        params = {"since": "v1.0"} if round_number % 2 else {}  # with a backlog read before the stream, or not
        streams = open_together(b_server, token, SIMULTANEOUS_OPENS, **params)
        statuses = Counter(stream.status_code for stream in streams)
        close_all(streams)
        assert statuses == {200: 3, 429: SIMULTANEOUS_OPENS - 3}, f"round {round_number}: {statuses}"
        assert statuses_once_closed(b_server, token, 4) == {200: 3, 429: 1}, f"round {round_number}, after closing"


def statuses_once_closed(server: LiveServer, token: str, count: int) -> Counter:
    """The statuses of `count` streams opened together, once the server has seen earlier ones hang up
    (within 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        time.sleep(0.2)
        streams = open_together(server, token, count)
        statuses = Counter(stream.status_code for stream in streams)
        close_all(streams)
        if statuses[200] == min(count, 3) or time.monotonic() > deadline:
            return statuses


def test_streams_that_never_start_give_their_place_back(instances):
    _, b_server = instances
    _, token = new_user()
    refused = open_together(b_server, token, 12, since="v1.999999")  # 410 before the stream begins
    malformed = open_together(b_server, token, 12, since="not-a-cursor")  # 422
    assert {stream.status_code for stream in refused} <= {410, 429} and {stream.status_code for stream in malformed} <= {422, 429}
    close_all(refused + malformed)
    assert statuses_once_closed(b_server, token, 3) == {200: 3}


def test_the_access_token_never_reaches_the_logs(instances):
    a_server, b_server = instances
    _, token = new_user()
    with open_stream(a_server, token) as stream:
        assert stream.status_code == 200
    httpx.get(a_server.url + "/api/events", params={"access_token": token, "since": "bad"}, timeout=10)
    httpx.get(b_server.url + "/api/events", params={"access_token": token + "x"}, timeout=10)
    time.sleep(0.3)
    for server in instances:
        output = server.output()
        assert '"logger":"task_api.access"' in output  # the access log is on...
        assert token.split(".")[2] not in output and token.split(".")[1] not in output  # ...and holds no token
