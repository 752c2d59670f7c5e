"""Live delivery for `GET /api/events`: which open streams have something new to read.

One poll per process, not per stream: while any stream is open, a single task asks the database
every POLL_SECONDS for the last seq (user_event_counter) of the users that have open streams, after
numbering their new events (events.sequence_users), and wakes the streams of those whose seq
moved. Each stream then reads its own feed from its own cursor (events.changes_since), so nothing
depends on the poll being exact: a wake-up is only a hint. The counter is a committed value, moved
only by numbering committed events, so the poll cannot be fooled by a transaction that commits
later (which a poll of "global id > the last seen" would be). It works the same for writes made by
this process, another worker, or another instance on the same database, on SQLite and PostgreSQL;
no broker is needed. A change reaches a stream within about POLL_SECONDS.

A user holds at most EVENT_STREAMS_PER_USER streams per process: a StreamSlot is taken before the
stream's first await and given back exactly once, whether the stream ran or never started. Pages
of events are read into memory on a connection returned before they are sent, and a read is
finished even when its stream is cancelled (`read_page`), so a client that goes away never costs
a pooled connection.
"""
import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import sqlalchemy as sa
from sse_starlette import ServerSentEvent

import events
from db import Database
from errors import CursorExpired, RateLimited
from models import UserEventCounter
from responses import to_json

log = logging.getLogger("task_api.live")

POLL_SECONDS = 0.5
# Users asked about per statement; shorter lists are padded up to a power of two, so a handful
# of statement shapes are built and compiled.
USERS_PER_POLL = 64
STREAM_PAGE = 500
RECONNECT_MILLISECONDS = 2000  # how long a browser waits before it reconnects a dropped stream
counter_table: sa.Table = UserEventCounter.__table__
T = TypeVar("T")


@functools.lru_cache(maxsize=8)
def _last_seqs_statement(count: int) -> sa.Select:
    users = [sa.bindparam(f"user_{index}") for index in range(count)]
    return sa.select(counter_table.c.user_id, counter_table.c.seq).where(counter_table.c.user_id.in_(users))


def _padded_size(count: int) -> int:
    size = 1
    while size < count:
        size *= 2
    return size


class TooManyStreams(RateLimited):
    def __init__(self, limit: int):
        super().__init__(
            f"You already have {limit} open event streams on this server. Close one (a browser tab "
            "needs only one EventSource), then retry.",
            headers={"Retry-After": "5"},
        )


class StreamSlot:
    """One of a user's EVENT_STREAMS_PER_USER places in this process, taken by
    `ChangeNotifier.reserve` with no await between the check and the taking (so streams opened at
    the same moment cannot all pass the check), held while the stream runs, and given back once by
    `release`: when the stream ends, and also when it never starts (a 410 or 422 cursor, the
    database down, the client gone before the response began)."""

    def __init__(self, notifier: "ChangeNotifier", user_id: str):
        self.notifier = notifier
        self.user_id = user_id
        self.wake: asyncio.Event | None = None
        self.released = False

    def subscribe(self, seq: int) -> asyncio.Event:
        """The stream starts, having read up to `seq`: its event is set when there is more."""
        self.wake = self.notifier.subscribe(self.user_id, seq)
        return self.wake

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.notifier.give_back(self)


class ChangeNotifier:
    """The streams open in this process, by user, and the one poll that wakes them."""

    def __init__(self, database: Database, streams_per_user: int):
        self.database = database
        self.streams_per_user = streams_per_user
        self._streams: dict[str, set[asyncio.Event]] = {}
        self._taken: dict[str, int] = {}  # places held per user: streams open or about to open
        self._last_seq: dict[str, int] = {}
        self._poller: asyncio.Task | None = None

    def reserve(self, user_id: str) -> StreamSlot:
        """A place for one more stream of the user, or 429 if they hold as many as allowed."""
        taken = self._taken.get(user_id, 0)
        if taken >= self.streams_per_user:
            raise TooManyStreams(self.streams_per_user)
        self._taken[user_id] = taken + 1
        return StreamSlot(self, user_id)

    def give_back(self, slot: StreamSlot) -> None:
        if slot.wake is not None:
            self.unsubscribe(slot.user_id, slot.wake)
        left = self._taken.get(slot.user_id, 0) - 1
        if left > 0:
            self._taken[slot.user_id] = left
        else:
            self._taken.pop(slot.user_id, None)

    def subscribe(self, user_id: str, seq: int) -> asyncio.Event:
        """A stream of `user_id` that has read up to `seq`; its event is set when there is more."""
        wake = asyncio.Event()
        self._streams.setdefault(user_id, set()).add(wake)
        # Only the poll moves it on: raised here, another stream of the user that is further back
        # would miss its wake-up.
        self._last_seq.setdefault(user_id, seq)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_while_streams_are_open())
        return wake

    def unsubscribe(self, user_id: str, wake: asyncio.Event) -> None:
        streams = self._streams.get(user_id)
        if streams is None:
            return
        streams.discard(wake)
        if not streams:
            del self._streams[user_id]
            self._last_seq.pop(user_id, None)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        await finish_reads()

    async def _poll_while_streams_are_open(self) -> None:
        while self._streams:
            await asyncio.sleep(POLL_SECONDS)
            try:
                await self._poll_once()
            except Exception as error:  # the database is down or busy: the streams wait, the next poll retries
                log.warning("could not poll for new events", extra={"error_type": type(error).__name__})

    async def _poll_once(self) -> None:
        users = list(self._streams)
        async with self.database.connect() as connection:
            for start in range(0, len(users), USERS_PER_POLL):
                chunk = users[start:start + USERS_PER_POLL]
                size = _padded_size(len(chunk))
                padded = [chunk[min(index, len(chunk) - 1)] for index in range(size)]
                await events.sequence_users(connection, padded)  # their new events get their numbers
                params = {f"user_{index}": user_id for index, user_id in enumerate(padded)}
                for row in await connection.fetch_all(_last_seqs_statement(size), params):
                    self._wake_if_newer(row["user_id"], row["seq"])

    def _wake_if_newer(self, user_id: str, seq: int) -> None:
        if seq > self._last_seq.get(user_id, 0) and user_id in self._streams:
            self._last_seq[user_id] = seq
            for wake in self._streams[user_id]:
                wake.set()


async def follow(
    database: Database,
    slot: StreamSlot,
    since: int,
    backlog: tuple[list, bool],
    expires_at: float,
) -> AsyncIterator[ServerSentEvent]:
    """The stream of one EventSource: the backlog after `since` (already read, so a stale cursor
    was a 410 before the stream began), then every new event as it commits, until the token expires."""
    wake = slot.subscribe(since)
    try:
        # An id with no data moves the browser's Last-Event-ID without firing an event: a reconnect
        # before the first change still resumes from here.
        yield ServerSentEvent(id=events.cursor_of(since), retry=RECONNECT_MILLISECONDS)
        cursor, (rows, more) = since, backlog
        while True:
            for row in rows:
                change = events.as_change(row)
                yield ServerSentEvent(data=to_json(change).decode(), event=change["type"], id=change["cursor"])
            if rows:
                cursor = rows[-1]["seq"]
            if not more:
                remaining = expires_at - time.time()
                if remaining <= 0:
                    return  # the token expired: the client reconnects with a fresh one
                try:
                    async with asyncio.timeout(remaining):
                        await wake.wait()
                except TimeoutError:
                    return
            wake.clear()  # before reading: a wake-up during the read is kept for the next round
            rows, more = await read_page(database, slot.user_id, cursor)
    except CursorExpired:
        return  # purged while the stream was open (the retention is days): the reconnect gets the 410
    finally:
        slot.release()


async def read_page(database: Database, user_id: str, after: int) -> tuple[list, bool]:
    """The user's next STREAM_PAGE events after `after`, in memory, on a connection given back
    before the caller sends them."""
    return await _finished_even_if_cancelled(_read_page(database, user_id, after))


async def read_position(database: Database, user_id: str) -> int:
    """The user's current seq (events.current_seq), read as `read_page` reads."""
    return await _finished_even_if_cancelled(_read_position(database, user_id))


async def _read_page(database: Database, user_id: str, after: int) -> tuple[list, bool]:
    async with database.connect() as connection:
        return await events.changes_since(connection, user_id, after, STREAM_PAGE)


async def _read_position(database: Database, user_id: str) -> int:
    async with database.connect() as connection:
        return await events.current_seq(connection, user_id)


_finishing: set[asyncio.Task] = set()  # reads whose stream was cancelled (the loop keeps only weak refs)


async def _finished_even_if_cancelled(read: Coroutine[Any, Any, T]) -> T:
    """Await `read`; if the caller is cancelled meanwhile (the client went away), let the read
    finish anyway and drop its result. Cut mid-statement, its connection would be discarded
    (db.Connection._run), and five streams dropped at once took half a worker's pool; finished, it
    goes back to the pool clean. The statement deadline (DB_STATEMENT_TIMEOUT_SECONDS) bounds it."""
    task = asyncio.ensure_future(read)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        _finishing.add(task)
        task.add_done_callback(_forget)
        raise


async def finish_reads() -> None:
    """Wait for the reads of this event loop that outlived their streams (at shutdown, before the
    pool closes: a connection still in use would not be closed)."""
    loop = asyncio.get_running_loop()
    pending = [task for task in _finishing if task.get_loop() is loop]
    if pending:
        await asyncio.wait(pending)


def _forget(task: asyncio.Task) -> None:
    _finishing.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: a read that failed after its stream left is nobody's error
