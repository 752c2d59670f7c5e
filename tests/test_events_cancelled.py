"""A live stream whose client goes away at any moment (a tab closed, a phone asleep) is cancelled
wherever it is: waiting for a change, numbering events, reading them. Whatever it was doing, the
writes around it must all answer and all stay: on SQLite a stream cancelled mid-statement once
left its pooled connection inside a transaction (db.Connection._run).

The app is called in-process (raw ASGI), so a stream can be cancelled at chosen moments, many times."""
import asyncio
import random

import events
import queries
import store
from conftest import make_settings, mint_token
from main import create_app

ROUNDS = 120
CANCEL_AFTER_SECONDS = (0, 0.001, 0.003, 0.01, 0.03, 0.1)


def scope_of(method: str, path: str, token: str, query: str = "", body: bytes = b"") -> dict:
    headers = [(b"host", b"test"), (b"authorization", f"Bearer {token}".encode())]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
            "headers": headers, "client": ("127.0.0.1", 50000), "server": ("test", 80), "state": {}}


async def call(app, scope: dict, body: bytes = b"", cancel_after: float | None = None) -> int | None:
    """The response's status (None if cancelled before it started). The client never disconnects
    by itself: a stream ends only when `cancel_after` cancels it."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    statuses = []

    async def receive():
        if messages:
            return messages.pop()
        await asyncio.Event().wait()

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    try:
        async with asyncio.timeout(cancel_after):
            await app(scope, receive, send)
    except TimeoutError:
        pass
    return statuses[0] if statuses else None


def test_streams_cancelled_at_any_moment_never_cost_a_write(database_url):
    user = "cancelled_streams_user"
    token = mint_token(user)
    chance = random.Random(15)

    async def scenario():
        app = create_app(make_settings(database_url, event_streams_per_user=2))
        async with app.router.lifespan_context(app):
            created, other, streams = [], [], set()
            for round_number in range(ROUNDS):
                body = b'{"title": "write %d"}' % round_number
                write = call(app, scope_of("POST", "/api/tasks", token, body=body), body)
                stream = call(app, scope_of("GET", "/api/events", token, chance.choice(["", "since=v1.0"])),
                              cancel_after=chance.choice(CANCEL_AFTER_SECONDS))
                write_status, stream_status = await asyncio.gather(write, stream)
                (created if write_status == 201 else other).append(write_status)
                streams.add(stream_status)
            listed = await queries.list_tasks(app.state.database, queries.TaskFilter(user), "created_at", True, 500, 0)
            return created, other, streams, len(listed.tasks)

    created, other, streams, listed = asyncio.run(scenario())
    assert other == []  # no 503 (a write lock left held) and no 500 (a BEGIN inside a transaction)
    assert listed == len(created) == ROUNDS  # every acknowledged write is there
    assert streams <= {200, None}  # never a 429: each cancelled stream gave back its slot (2 per user here)


BACKLOG_EVENTS = 3000  # six pages of live.STREAM_PAGE
BACKLOG_ROUNDS = 60


def test_streams_cut_mid_backlog_give_their_connections_back_clean(database_url):
    """A stream far behind reads its backlog page after page; a client that goes away meanwhile
    cancels it mid-read. Its connection must go back to the pool clean, not be discarded (five such
    streams dropping at once took half a worker's pool), and the writes around it must all land."""
    user = f"backlog_{random.Random().getrandbits(32):08x}"
    token = mint_token(user)
    chance = random.Random(16)

    async def scenario():
        app = create_app(make_settings(database_url, event_streams_per_user=BACKLOG_ROUNDS))
        async with app.router.lifespan_context(app):
            database = app.state.database
            task = await store.create_task(database, user, {"title": "a task with a typical payload", "tags": ["home"]})
            async with database.transaction(writer=user) as connection:
                await events.record(connection, user, [events.to_user(user, events.TASK_UPDATED, task["id"], store.public(task))] * BACKLOG_EVENTS)
            pool = database.pool
            discarded_before, statuses, created = pool.discarded, [], 0
            for round_number in range(BACKLOG_ROUNDS):
                streams = [call(app, scope_of("GET", "/api/events", token, "since=v1.0"), cancel_after=chance.uniform(0, 0.15))
                           for _ in range(5)]  # five at once, as in the report
                body = b'{"title": "write %d"}' % round_number
                write = call(app, scope_of("POST", "/api/tasks", token, body=body), body)
                *stream_statuses, write_status = await asyncio.gather(*streams, write)
                statuses += stream_statuses
                created += write_status == 201
            listed = await queries.list_tasks(database, queries.TaskFilter(user), "created_at", True, 500, 0)
            return pool.discarded - discarded_before, set(statuses), created, len(listed.tasks)

    discarded, statuses, created, listed = asyncio.run(scenario())
    assert discarded == 0
    assert statuses <= {200, None}
    assert created == BACKLOG_ROUNDS and listed == BACKLOG_ROUNDS + 1  # every write acknowledged and there
