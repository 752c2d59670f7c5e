"""Outbound events (contract §10, EVENTS_WEBHOOK_URL): the real service (`uvicorn main:app`) posts
every event to a real receiver on 127.0.0.1 as a signed CloudEvent, at least once, in order per
user, through failures, a refused port, a hung receiver, a SIGKILL, and several workers and instances.
"""
import asyncio
import base64
import secrets
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator

import httpx
import pytest
from pydantic import ValidationError

import webhooks
from conftest import TEST_SECRET, make_settings, mint_token
from db import Database
from live_server import LiveServer, run_in_threads
from webhook_receiver import Receiver, Received, verify_standard_webhook

WEBHOOK_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def webhook_env(receiver: Receiver, **extra: str) -> dict[str, str]:
    return {
        "EVENTS_WEBHOOK_URL": receiver.url,
        "EVENTS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "EVENTS_WEBHOOK_SOURCE": "task-api-test",
        "EVENTS_WEBHOOK_TIMEOUT_SECONDS": "2",
        "EVENTS_WEBHOOK_MAX_BACKOFF_SECONDS": "1",  # retries every 0.5 to 1 s: the tests wait less
        "LOG_LEVEL": "INFO",
        **extra,
    }


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.release.set()
    receiver.stop()


def api(server: LiveServer, user_id: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {mint_token(user_id)}"}, timeout=15)


def new_user(purpose: str) -> str:
    return f"hook_{purpose}_{uuid.uuid4().hex[:8]}"


# A user's first write also makes their default list: one list.created before their first task event.
DEFAULT_LIST_EVENTS = 1


def task_events(events: list[dict]) -> list[dict]:
    return [event for event in events if event["type"].startswith("task.")]


def by_user(requests: list[Received]) -> dict[str, list[dict]]:
    events: dict[str, list[dict]] = defaultdict(list)
    for request in requests:
        events[request.event["subject"]].append(request.event)
    return events


def seqs(events: list[dict]) -> list[int]:
    return [int(event["data"]["cursor"].split(".")[1]) for event in events]


def pending_metric(server: LiveServer) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    [line] = [line for line in text.splitlines() if line.startswith("task_api_events_pending_delivery ")]
    return float(line.split()[1])


def make_changes(server: LiveServer, user_id: str, count: int) -> list[dict]:
    """`count` task writes (creates, then updates of the first), the API's answers in order."""
    answers = []
    with api(server, user_id) as client:
        first = client.post("/api/tasks", json={"title": "first"})
        assert first.status_code == 201, first.text
        answers.append(first.json())
        for index in range(count - 1):
            if index % 2:
                response = client.post("/api/tasks", json={"title": f"task {index}"})
            else:
                response = client.patch(f"/api/tasks/{first.json()['id']}", json={"title": f"renamed {index}"})
            assert response.status_code in (200, 201), response.text
            answers.append(response.json())
    return answers


# ---------------------------------------------------------------- the message


@pytest.mark.slow
def test_every_event_arrives_as_a_signed_cloudevent(backend, scratch_database, receiver):
    alice, bob = new_user("alice"), new_user("bob")
    receiver.path = "/hooks/events"
    url_with_credentials = f"http://hook:pw-{uuid.uuid4().hex}@127.0.0.1:{receiver.port}/hooks/events?token=tk-{uuid.uuid4().hex}&key={{subject}}"
    env = webhook_env(receiver, EVENTS_WEBHOOK_URL=url_with_credentials)
    with LiveServer(scratch_database(backend), secret=TEST_SECRET, env=env) as server:
        with api(server, alice) as client:
            created = client.post("/api/tasks", json={"title": "Buy milk", "tags": ["home"]})
            updated = client.patch(f"/api/tasks/{created.json()['id']}", json={"completed": True})
            assert client.delete(f"/api/tasks/{created.json()['id']}").status_code == 204
            feed = client.get("/api/changes", params={"since": "v1.0"})
            assert feed.status_code == 200, feed.text
        with api(server, bob) as client:
            bobs = client.post("/api/tasks", json={"title": "Bob's"})
        receiver.wait_for(lambda: len(receiver.acknowledged()) == 4 + 2 * DEFAULT_LIST_EVENTS)
    output = server.output()

    for request in receiver.requests:
        assert request.path.startswith("/hooks/events?token=tk-")
        assert request.path.endswith(f"&key={request.event['subject']}")  # {subject} in the URL
        assert request.headers["content-type"] == "application/cloudevents+json"
        assert request.headers["webhook-id"] == request.event["id"]
        verify_standard_webhook(WEBHOOK_SECRET, request)
    events = by_user(receiver.acknowledged())
    assert [event["type"] for event in events[alice]] == ["list.created", "task.created", "task.updated", "task.deleted"]
    alices = task_events(events[alice])
    first = alices[0]
    assert {key: value for key, value in first.items() if key != "data"} == {
        "specversion": "1.0",
        "id": first["id"],
        "source": "task-api-test",
        "type": "task.created",
        "subject": alice,
        "time": first["data"]["at"],
        "datacontenttype": "application/json",
    }
    assert first["id"].startswith("evt_")
    assert len({event["id"] for event in events[alice] + events[bob]}) == 4 + 2 * DEFAULT_LIST_EVENTS
    assert [event["data"] for event in events[alice]] == feed.json()["changes"]  # exactly as /api/changes
    assert [event["data"]["data"] for event in alices] == [created.json(), updated.json(), None]
    assert [event["data"]["id"] for event in alices] == [created.json()["id"]] * 3
    assert seqs(events[alice]) == sorted(seqs(events[alice]))
    assert [(event["subject"], event["data"]["data"]) for event in task_events(events[bob])] == [(bob, bobs.json())]
    # The secret and the URL's credentials stay out of the logs; the receiver is named without them.
    assert WEBHOOK_SECRET not in output and WEBHOOK_SECRET.removeprefix("whsec_") not in output
    assert "pw-" not in output and "tk-" not in output
    assert f"127.0.0.1:{receiver.port}/hooks/events" in output


def test_signature_matches_the_standard_webhooks_test_vector():
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signature = webhooks.sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_unsigned_without_a_secret():
    headers = webhooks.request_headers("evt_1", b"{}", None, 1700000000.5)
    assert headers == {"content-type": "application/cloudevents+json", "webhook-id": "evt_1", "webhook-timestamp": "1700000000"}


@pytest.mark.parametrize("secret", ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
def test_secret_with_or_without_the_whsec_prefix(secret):
    settings = make_settings("sqlite://", events_webhook_secret=secret)
    assert settings.events_webhook_key == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")


@pytest.mark.parametrize(
    "secret, says",
    [
        ("not base64 at all!", "whsec_"),
        ("whsec_" + base64.b64encode(b"short").decode(), "at least 24"),
    ],
)
def test_a_bad_secret_is_refused_without_echoing_it(secret, says):
    with pytest.raises(ValidationError) as refused:
        make_settings("sqlite://", events_webhook_secret=secret)
    assert says in str(refused.value)
    assert secret not in str(refused.value)


@pytest.mark.parametrize("url", ["localhost:3500/v1.0/publish/p/t", "ftp://example.com/hook", "http://"])
def test_a_webhook_url_that_is_not_http_is_refused(url):
    with pytest.raises(ValidationError, match="EVENTS_WEBHOOK_URL"):
        make_settings("sqlite://", events_webhook_url=url)


def test_retry_pauses_grow_with_jitter_up_to_the_cap():
    lowest = [webhooks.retry_delay(n, 300, rand=lambda: 0.0) for n in range(1, 12)]
    highest = [webhooks.retry_delay(n, 300, rand=lambda: 1.0) for n in range(1, 12)]
    assert lowest[:4] == [0.5, 1.0, 2.0, 4.0] and highest[:4] == [1.0, 2.0, 4.0, 8.0]
    assert highest[-1] == 300 and lowest[-1] == 150
    assert webhooks.retry_delay(1000, 300, rand=lambda: 1.0) == 300
    assert webhooks.retry_delay(1, 300, retry_after=30, rand=lambda: 0.0) == 30  # Retry-After honoured
    assert webhooks.retry_delay(1, 60, retry_after=3600, rand=lambda: 0.0) == 60  # but never past the cap


@pytest.mark.slow
def test_a_subject_of_dots_stays_one_path_segment(backend, scratch_database, receiver):
    """A `sub` of `.` or `..` in a `{subject}` path segment: the HTTP client collapses dot segments,
    so unencoded they would post to another path (`/hooks/events` or `/events`)."""
    receiver.path = "/hooks/{subject}/events"
    env = webhook_env(receiver, EVENTS_WEBHOOK_URL=receiver.url)
    with LiveServer(scratch_database(backend), secret=TEST_SECRET, env=env) as server:
        for user_id in (".", ".."):
            with api(server, user_id) as client:
                assert client.post("/api/tasks", json={"title": f"from {user_id}"}).status_code == 201
        receiver.wait_for(lambda: len(task_events([request.event for request in receiver.acknowledged()])) == 2)
    assert {request.path for request in receiver.requests} == {"/hooks/%2E/events", "/hooks/%2E%2E/events"}
    assert {request.event["subject"] for request in receiver.requests} == {".", ".."}


def test_subject_in_the_url_is_the_url_encoded_user_id():
    url = "http://localhost:3500/v1.0/publish/pubsub/tasks?metadata.partitionKey={subject}"
    assert webhooks.url_for(url, "user/1 &x") == url.replace("{subject}", "user%2F1%20%26x")
    assert webhooks.url_for("http://h/in", "u") == "http://h/in"


def test_receiver_name_leaves_credentials_and_query_out():
    assert webhooks.receiver_name("https://u:p@hooks.example.com:8443/in?key=s") == "https://hooks.example.com:8443/in"


# ---------------------------------------------------------------- the lease


def test_one_lease_holder_and_takeover_when_it_stops_renewing(backend, scratch_database):
    async def scenario() -> None:
        database = Database(make_settings(scratch_database(backend)))
        await database.open()
        now = [1000.0]
        first = webhooks.Lease(database, seconds=10, clock=lambda: now[0])
        second = webhooks.Lease(database, seconds=10, clock=lambda: now[0])
        try:
            assert await first.refresh() and first.held
            assert not await second.refresh() and not second.held
            for _ in range(10):  # renewed every 2 s: never taken over
                now[0] += 2
                assert await first.refresh()
                assert not await second.refresh()
            now[0] += 6  # the first stops renewing: after half the period it stops sending...
            assert not first.held
            assert not await second.refresh()  # ...and only after a whole period unchanged...
            now[0] += 10
            assert await second.refresh() and second.held  # ...does the second take over
            assert not await first.refresh() and not first.held  # the first learns it lost it
            await first.release()  # releases nothing it does not hold
            assert await second.refresh()
            await second.release()  # a clean stop hands over at once
            assert await first.refresh() and first.held
        finally:
            await database.close()

    asyncio.run(scenario())


def test_pending_count_counts_events_not_yet_acknowledged(backend, scratch_database):
    import events

    async def scenario() -> None:
        database = Database(make_settings(scratch_database(backend)))
        await database.open()
        try:
            assert await webhooks.pending_count(database) == 0
            for user_id, count in (("pending_a", 3), ("pending_b", 2)):
                async with database.transaction() as connection:
                    await events.record(connection, user_id, [events.to_user(user_id, events.TASK_DELETED, n + 1, None) for n in range(count)])
            assert await webhooks.pending_count(database) == 5  # not numbered yet (events.sequence)
            await events.sequence_everyone(database)  # as the deliverer does before it sends
            assert await webhooks.pending_count(database) == 5
            async with database.connect() as connection:
                await connection.execute(
                    webhooks.ACKNOWLEDGE[connection.dialect],
                    {"user_id": "pending_a", "delivered_seq": 2, "failures": 0, "retry_at": None, "last_error": None,
                     "updated_at": webhooks._utc_now()},
                )
            assert await webhooks.pending_count(database) == 3
        finally:
            await database.close()

    asyncio.run(scenario())


def test_events_purged_before_delivery_are_skipped(backend, scratch_database):
    import events

    async def scenario() -> None:
        settings = make_settings(scratch_database(backend), events_webhook_url="http://127.0.0.1:9/unused")
        database = Database(settings)
        await database.open()
        sent: list[httpx.Request] = []
        transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(204))
        try:
            async with database.transaction() as connection:
                await events.record(connection, "purged_user", [events.to_user("purged_user", events.TASK_DELETED, n, None) for n in (1, 2)])
            await events.sequence_everyone(database)  # the purge numbers what is pending before it deletes
            async with database.connect() as connection:
                await connection.execute_sql("DELETE FROM event WHERE user_id = 'purged_user'")  # the retention purge
                [user] = await connection.fetch_all(webhooks.PENDING_USERS, {"now": webhooks._utc_now(), "limit": 10})
            dispatcher = webhooks.Dispatcher(settings, database)
            async with httpx.AsyncClient(transport=transport) as client:
                await dispatcher._deliver_user(client, user)
            assert sent == []
            assert await webhooks.pending_count(database) == 0
        finally:
            await database.close()

    asyncio.run(scenario())


# ---------------------------------------------------------------- failures, restarts, scale


@pytest.mark.slow
def test_a_failing_then_unreachable_receiver_gets_everything_in_order_once_it_recovers(backend, scratch_database, receiver):
    users = [new_user("retry_a"), new_user("retry_b")]
    # A 404 (what Dapr answers for an unknown pubsub) is retried like a 500: the queue waits.
    receiver.answer = lambda _request: 404 if len(receiver.requests) % 2 else 500
    with LiveServer(scratch_database(backend), secret=TEST_SECRET, env=webhook_env(receiver)) as server:
        for user_id in users:
            make_changes(server, user_id, 3)
        receiver.wait_for(lambda: len(receiver.requests) >= 6, what="retried attempts")
        receiver.stop()  # now the port refuses connections
        for user_id in users:
            make_changes(server, user_id, 3)
        receiver.wait_for(lambda: "ConnectError" in server.output(), what="(refused) attempts")
        failed_attempts = list(receiver.requests)
        expected = 2 * (6 + DEFAULT_LIST_EVENTS)
        assert pending_metric(server) == expected  # "events waiting for delivery": none acknowledged yet
        receiver.answer = lambda _request: 204
        receiver.start()
        receiver.wait_for(lambda: len(receiver.acknowledged()) == expected)
        receiver.wait_for(lambda: pending_metric(server) == 0, what="a pending count of 0")
        output = server.output()

    events = by_user(receiver.acknowledged())
    for user_id in users:
        assert len(events[user_id]) == 6 + DEFAULT_LIST_EVENTS
        assert seqs(events[user_id]) == sorted(seqs(events[user_id]))  # in order, none twice
        assert len(set(seqs(events[user_id]))) == 6 + DEFAULT_LIST_EVENTS
    # Only each user's first event was attempted while failing (the rest waited behind it), again
    # and again, with the same id as the copy finally acknowledged.
    delivered_ids = {event["data"]["cursor"] + event["subject"]: event["id"] for e in events.values() for event in e}
    assert {request.event["subject"] for request in failed_attempts} == set(users)
    for request in failed_attempts:
        event = request.event
        assert event["data"]["cursor"] == events[event["subject"]][0]["data"]["cursor"]
        assert delivered_ids[event["data"]["cursor"] + event["subject"]] == event["id"]
        verify_standard_webhook(WEBHOOK_SECRET, request)
    assert "HTTP 500" in output and "HTTP 404" in output


@pytest.mark.slow
def test_a_sigkill_mid_backlog_loses_nothing(backend, scratch_database, receiver):
    users = [new_user("crash_a"), new_user("crash_b")]
    receiver.stop()
    server = LiveServer(scratch_database(backend), secret=TEST_SECRET, env=webhook_env(receiver))
    try:
        server.start()
        for user_id in users:
            make_changes(server, user_id, 20)
        receiver.answer = lambda _request: (threading.Event().wait(0.05), 204)[1]  # a slow receiver
        receiver.start()
        receiver.wait_for(lambda: len(receiver.acknowledged()) >= 5, what="the first events")
        server.kill()
        total = 2 * (20 + DEFAULT_LIST_EVENTS)
        assert len(receiver.acknowledged()) < total, "the backlog drained before the kill; the test proves nothing"
        server.start()
        receiver.wait_for(lambda: len({r.event["id"] for r in receiver.acknowledged()}) == total, timeout=90)
    finally:
        server.stop()

    events = by_user(receiver.acknowledged())
    for user_id in users:
        delivered = seqs(events[user_id])
        assert set(delivered) == set(range(1, 21 + DEFAULT_LIST_EVENTS))
        assert delivered == sorted(delivered)  # in order; an event sent twice only around the crash
    assert len(receiver.acknowledged()) - total <= len(users)


@pytest.mark.slow
def test_two_instances_of_two_workers_deliver_each_event_once_in_order(backend, scratch_database, receiver):
    database_url = scratch_database(backend)
    users = [new_user(f"scale_{n}") for n in range(4)]
    servers = [LiveServer(database_url, secret=TEST_SECRET, workers=2, env=webhook_env(receiver)) for _ in range(2)]
    try:
        for server in servers:
            server.start()

        def write(index: int) -> None:
            make_changes(servers[index % 2], users[index % len(users)], 10)

        run_in_threads(8, write)  # each user writes through both instances at once
        receiver.wait_for(lambda: len(receiver.acknowledged()) >= 4 * (20 + DEFAULT_LIST_EVENTS))
        for server in servers:
            server.stop()
    finally:
        for server in servers:
            server.stop()

    events = by_user(receiver.acknowledged())
    assert len(receiver.acknowledged()) == 4 * (20 + DEFAULT_LIST_EVENTS)  # no crash: exactly once
    for user_id in users:
        assert seqs(events[user_id]) == list(range(1, 21 + DEFAULT_LIST_EVENTS))


@pytest.mark.slow
def test_a_hanging_receiver_is_given_up_on_and_retried(backend, scratch_database, receiver):
    user_id = new_user("hang")
    receiver.hang.set()
    with LiveServer(scratch_database(backend), secret=TEST_SECRET, env=webhook_env(receiver)) as server:
        make_changes(server, user_id, 2)
        receiver.wait_for(lambda: '"reason":"timeout"' in server.output(), what="a timed-out attempt")
        with api(server, user_id) as client:  # the API does not wait on the receiver
            assert client.get("/api/tasks").status_code == 200
        receiver.hang.clear()
        receiver.wait_for(lambda: len(receiver.acknowledged()) >= 2 + DEFAULT_LIST_EVENTS)
        receiver.release.set()
    assert len({request.event["id"] for request in receiver.acknowledged()}) == 2 + DEFAULT_LIST_EVENTS
