"""Every change of a task or list as an event, written in the same transaction as the change: the
feed of `GET /api/changes`, `GET /api/events` and the outbound webhook (contract §10, §12).

Each user has a feed. A change of a list's tasks goes into the feed of every member of the list
(access.audience, read by the same statement or transaction as the change: fan-out on write), each
with `actor`, the user who made it; what differs per member (a list's `role` and `position`) is
recorded member by member.

Why a cursor never skips a change, without making one user's writes wait for each other. A
number handed out while a transaction runs (an auto-increment id) is not commit order: a writer
can take id 7, a second writer id 8 and commit first, and a reader that already saw 8 never sees
7. Numbering under a per-user lock held until COMMIT fixes that, but makes each of the user's
writes wait for the previous one's commit (its WAL flush): half the writes per second in `make
bench`. So a write numbers nothing: its events go in with `seq` NULL. Numbers are given after
commit, by `sequence`: under the user's counter row lock (`user_event_counter`), a fresh
statement sees the user's committed events that have no number yet, and numbers them after the
counter's last value, in id order. Only committed events get numbers, and each run numbers after
the previous run, so per user `seq` has no gaps and a number is never given behind one already
readable: a reader asking for `seq > cursor` can never miss an event. Every reader numbers what is
pending before it reads (`changes_since`, `current_seq`, the live poll, the webhook, the purge).

Commit order where it matters: when two transactions change the same row, the second waits for
the first's commit before it takes that row, and events are inserted after a transaction's last
row lock (`record` is called last; `with_event` inserts them after its write has run over all its
rows), so the second's events have higher ids, hence higher seqs. Writes that touch different
rows have no order a reader could tell apart.

Two ways in: `record` (any number of changes, last in the caller's transaction) and, on
PostgreSQL, `with_event` (a write and its events as one statement, so the hot write routes stay one
round trip).

The cursor is `v1.<seq>`; a client treats it as opaque.
"""
import asyncio
import functools
import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import sqlalchemy as sa

import access
import db
from errors import CursorExpired
from models import Event, UserEventCounter, UTCDateTime
from responses import to_json

log = logging.getLogger("task_api.events")

event_table: sa.Table = Event.__table__
counter_table: sa.Table = UserEventCounter.__table__

TASK_CREATED, TASK_UPDATED, TASK_DELETED = "task.created", "task.updated", "task.deleted"
LIST_CREATED, LIST_UPDATED, LIST_DELETED = "list.created", "list.updated", "list.deleted"
REMINDER_DUE = "reminder.due"
TYPES = (TASK_CREATED, TASK_UPDATED, TASK_DELETED, LIST_CREATED, LIST_UPDATED, LIST_DELETED, REMINDER_DUE)
# Changes per INSERT statement when one write records many (clearing completed tasks).
INSERT_BATCH = 100


@dataclass(frozen=True)
class Change:
    """One change, and whose feeds it goes to: every member of `list_id` (access.audience), or the
    one user `user_id` (what differs per member, such as a list's `role`, is recorded per member)."""

    type: str
    entity_id: int
    data: dict | None
    list_id: int | None = None
    user_id: str | None = None


def to_members(list_id: int, type_: str, entity_id: int, data: dict | None) -> Change:
    return Change(type_, entity_id, data, list_id=list_id)


def to_user(user_id: str, type_: str, entity_id: int, data: dict | None) -> Change:
    return Change(type_, entity_id, data, user_id=user_id)


EVENT_COLUMNS = ("user_id", "actor", "type", "entity_id", "data", "created_at")
_CHANGE_TYPES = {"type": sa.String(), "entity_id": sa.BigInteger(), "data": sa.JSON(), "created_at": UTCDateTime()}


@functools.lru_cache(maxsize=2 * INSERT_BATCH)
def _insert_events_statement(fan_out: bool, count: int) -> sa.Insert:
    """`count` changes, each into the feed of its user or of every member of its list, in order, with
    no seq yet (`sequence` numbers them once committed)."""
    rows = []
    for index in range(count):
        values = [sa.bindparam(f"{name}_{index}", type_=type_).label(name) for name, type_ in _CHANGE_TYPES.items()]
        order = sa.literal_column(str(index)).label("n")
        if fan_out:
            row = access.audience(sa.bindparam(f"list_id_{index}", type_=sa.Integer)).add_columns(*values, order)
        else:
            row = sa.select(sa.bindparam(f"user_id_{index}", type_=sa.String()).label("user_id"), *values, order)
        rows.append(row)
    changes = (sa.union_all(*rows) if count > 1 else rows[0]).subquery("change")
    ordered = sa.select(
        changes.c.user_id, sa.bindparam("actor", type_=sa.String()), *(changes.c[name] for name in _CHANGE_TYPES)
    ).order_by(changes.c.n, changes.c.user_id)
    return sa.insert(event_table).from_select(list(EVENT_COLUMNS), ordered)


@functools.lru_cache(maxsize=1024)
def with_event(
    statement: sa.UpdateBase,
    event_type: str,
    data_of: Callable[[Any], sa.ColumnElement] | None,
    also: Callable[[Any], sa.UpdateBase] | None = None,
) -> sa.Select:
    """PostgreSQL: a write of tasks (INSERT/UPDATE/DELETE ... RETURNING id, list_id, ...; its
    parameters include `caller`, the actor) and one event per written row for every member of the
    row's list, in ONE statement, so the write stays one round trip in autocommit, as it was without
    events (data-modifying CTEs). The events, whose `data` is built by `data_of` from each written
    row, are inserted in id order; the sort reads every written row first, so they come after all the
    write's row locks (see the module's docstring). Returns what `statement` returns. A write that
    matches no row records nothing. `also`, given the written rows, builds one more write of the same
    statement (a new task's tag rows). Cached: built once per statement."""
    changed = statement.cte("changed")
    audience = access.audience(changed.c.list_id).lateral("audience")
    event = (
        sa.select(
            audience.c.user_id,
            sa.bindparam("caller", type_=sa.String),
            sa.literal_column(f"'{event_type}'", sa.String),  # one of TYPES, never client input
            changed.c.id,
            data_of(changed.c) if data_of is not None else sa.null(),
            sa.func.now(),
        )
        .select_from(changed.join(audience, sa.true()))
        .order_by(changed.c.id, audience.c.user_id)
    )
    recorded = sa.insert(event_table).from_select(list(EVENT_COLUMNS), event).cte("recorded")
    written = sa.select(*changed.c).add_cte(recorded)
    return written.add_cte(also(changed).cte("also")) if also is not None else written


def api_timestamp(column: Any) -> sa.ColumnElement[str]:
    """PostgreSQL: a timestamptz as the API's JSON writes it (responses.py: orjson with a `Z`,
    microseconds only when there are any), for event data built in SQL by `with_event`. One
    to_char per value (it runs for every timestamp of every write's event): the microseconds are
    always six digits, so `.000000Z` is exactly a whole second."""
    utc = sa.func.timezone(sa.literal_column("'UTC'"), column)
    text = sa.func.to_char(utc, sa.literal_column("'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'"))
    return sa.func.replace(text, sa.literal_column("'.000000Z'"), sa.literal_column("'Z'"))


async def record(connection: db.Connection, actor: str | None, changes: Sequence[Change]) -> None:
    """Record `changes`, made by `actor` (None: the service), inside the caller's transaction, in order.

    Call it last, after the transaction's last write (see the module's docstring). `data` is the
    entity after the change as the REST API returns it (None for a delete)."""
    now = datetime.now(timezone.utc)
    start = 0
    while start < len(changes):
        fan_out = changes[start].list_id is not None
        end = start + 1
        while end < len(changes) and end - start < INSERT_BATCH and (changes[end].list_id is not None) == fan_out:
            end += 1
        params: dict[str, Any] = {"actor": actor}
        for index, change in enumerate(changes[start:end]):
            audience = {f"list_id_{index}": change.list_id} if fan_out else {f"user_id_{index}": change.user_id}
            params.update({f"type_{index}": change.type, f"entity_id_{index}": change.entity_id,
                           f"data_{index}": as_json_value(change.data), f"created_at_{index}": now, **audience})
        await connection.execute(_insert_events_statement(fan_out, end - start), params)
        start = end


def as_json_value(data: dict | None) -> Any:
    """The entity as the API's JSON would carry it (datetimes as the API writes them)."""
    return None if data is None else orjson.loads(to_json(data))


# ----------------------------------------------------------------------------- numbering

SEQUENCE_BATCH = 5000  # events numbered per statement
OWNERS_PER_PASS = 1000  # users numbered per pass of `sequence_everyone`

HAS_PENDING = sa.select(event_table.c.id).where(
    event_table.c.user_id == sa.bindparam("owner"), event_table.c.seq.is_(None)
).limit(1)
# Takes the user's counter row lock (made at 0 on first use) and reads the last seq given out. The
# statements after it see what committed before the lock was granted (READ COMMITTED on
# PostgreSQL; SQLite's BEGIN IMMEDIATE has the whole database to itself).
LOCK_COUNTER = sa.text(
    "INSERT INTO user_event_counter (user_id, seq) VALUES (:owner, 0)"
    " ON CONFLICT (user_id) DO UPDATE SET seq = user_event_counter.seq RETURNING seq"
)
NUMBER_PENDING = sa.text(
    "UPDATE event SET seq = :last + pending.position"
    " FROM (SELECT id, row_number() OVER (ORDER BY id) AS position FROM event"
    " WHERE user_id = :owner AND seq IS NULL ORDER BY id LIMIT :batch) AS pending"
    " WHERE event.id = pending.id"
).bindparams(sa.bindparam("last", type_=sa.BigInteger), sa.bindparam("batch", type_=sa.Integer))
SET_COUNTER = sa.update(counter_table).where(counter_table.c.user_id == sa.bindparam("owner")).values(
    seq=sa.bindparam("last_seq", type_=sa.BigInteger)
)
PENDING_OWNERS = sa.select(event_table.c.user_id).where(event_table.c.seq.is_(None)).distinct().limit(OWNERS_PER_PASS)


@functools.lru_cache(maxsize=8)
def _pending_among_statement(count: int) -> sa.Select:
    users = [sa.bindparam(f"user_{index}") for index in range(count)]
    return sa.select(event_table.c.user_id).where(event_table.c.seq.is_(None), event_table.c.user_id.in_(users)).distinct()


async def sequence(connection: db.Connection, user_id: str) -> None:
    """Number the user's committed events that have no seq yet (see the module's docstring). Every
    reader of the feed calls it first; without pending events it is one indexed read."""
    if await connection.fetch_value(HAS_PENDING, {"owner": user_id}) is None:
        return
    async with connection.atomic():
        last = await connection.fetch_value(LOCK_COUNTER, {"owner": user_id})
        while True:
            numbered = await connection.execute(NUMBER_PENDING, {"owner": user_id, "last": last, "batch": SEQUENCE_BATCH})
            last += numbered
            if numbered < SEQUENCE_BATCH:
                break
        await connection.execute(SET_COUNTER, {"owner": user_id, "last_seq": last})


async def sequence_users(connection: db.Connection, user_ids: Sequence[str]) -> None:
    """`sequence` for those of `user_ids` that have pending events (one read to find them)."""
    params = {f"user_{index}": user_id for index, user_id in enumerate(user_ids)}
    for row in await connection.fetch_all(_pending_among_statement(len(user_ids)), params):
        await sequence(connection, row["user_id"])


async def sequence_everyone(database: db.Database) -> None:
    """`sequence` for every user with pending events (up to OWNERS_PER_PASS of them): for the
    readers of every user's events, the webhook and the purge."""
    async with database.connect() as connection:
        for row in await connection.fetch_all(PENDING_OWNERS):
            await sequence(connection, row["user_id"])


# ----------------------------------------------------------------------------- cursors

CURSOR_PATTERN = re.compile(r"v1\.(0|[1-9][0-9]{0,17})")


def cursor_of(seq: int) -> str:
    return f"v1.{seq}"


def seq_of(cursor: str) -> int | None:
    """The seq a cursor stands for; None if it is not one of ours."""
    match = CURSOR_PATTERN.fullmatch(cursor)
    return int(match.group(1)) if match else None


# ----------------------------------------------------------------------------- reading the feed

FEED_PAGE = (
    sa.select(
        event_table.c.seq, event_table.c.type, event_table.c.entity_id, event_table.c.data, event_table.c.created_at,
        event_table.c.actor,
    )
    .where(event_table.c.user_id == sa.bindparam("owner"), event_table.c.seq > sa.bindparam("since"))
    .order_by(event_table.c.seq)
    .limit(sa.bindparam("limit"))
)
LAST_SEQ = sa.select(counter_table.c.seq).where(counter_table.c.user_id == sa.bindparam("owner"))
# Both in one statement, so they come from one snapshot: the user's last seq, and the next retained event.
POSITION = sa.select(
    LAST_SEQ.scalar_subquery().label("last"),
    sa.select(sa.func.min(event_table.c.seq))
    .where(event_table.c.user_id == sa.bindparam("owner"), event_table.c.seq > sa.bindparam("since"))
    .scalar_subquery()
    .label("next"),
)


def as_change(row: db.Row) -> dict[str, Any]:
    """An event as /api/changes, /api/events and the webhook give it."""
    return {"cursor": cursor_of(row["seq"]), "type": row["type"], "id": row["entity_id"], "data": row["data"],
            "at": row["created_at"], "actor": row["actor"]}


async def current_seq(connection: db.Connection, user_id: str) -> int:
    """The cursor of now: every change committed so far is at or before it."""
    await sequence(connection, user_id)
    return await connection.fetch_value(LAST_SEQ, {"owner": user_id}) or 0


async def changes_since(connection: db.Connection, user_id: str, since: int, limit: int) -> tuple[list[db.Row], bool]:
    """The user's events after `since`, oldest first, at most `limit`, and whether more follow.
    CursorExpired if events after `since` were purged (or `since` was never handed out)."""
    await sequence(connection, user_id)
    rows = await connection.fetch_all(FEED_PAGE, {"owner": user_id, "since": since, "limit": limit + 1})
    if rows:
        # Seqs have no gaps: one out of step means events before it were purged. Not only before
        # the first: at the cutoff the purge can take an event and keep an earlier seq (created_at
        # is when a transaction began, seq the order of commits).
        if any(row["seq"] != since + offset for offset, row in enumerate(rows, start=1)):
            raise CursorExpired()
        return rows[:limit], len(rows) > limit
    position = await connection.fetch_one(POSITION, {"owner": user_id, "since": since})
    last = position["last"] or 0
    if since > last or (since < last and position["next"] != since + 1):
        raise CursorExpired()
    return [], False  # nothing new (or it committed just now: the next call gets it)


# ----------------------------------------------------------------------------- retention

PURGE_BATCH = 500
PURGE_EVERY_SECONDS = 300.0
PURGE_PAUSE_SECONDS = 0.2  # between batches: other writers get the table (and SQLite's lock) in between
# Past the retention and numbered. A pending event is numbered before it goes (the purge numbers
# what is pending first): deleted unnumbered, it would leave no gap for a cursor to see.
PURGE_BATCH_OF_OLD_EVENTS = sa.delete(event_table).where(
    event_table.c.id.in_(
        sa.select(event_table.c.id)
        .where(event_table.c.created_at < sa.bindparam("cutoff", type_=UTCDateTime()), event_table.c.seq.is_not(None))
        .order_by(event_table.c.id)
        .limit(PURGE_BATCH)
    )
)


async def purge_old_events(database: db.Database, retention_days: int) -> int:
    """Delete events older than the retention, a batch at a time (each its own short statement,
    so no request waits long behind it); the number deleted. The per-user counters stay: a cursor
    from before the purge is then recognised as expired."""
    cutoff = datetime.now(timezone.utc) - timedelta(days=retention_days)
    await sequence_everyone(database)
    total = 0
    while True:
        async with database.connect() as connection:
            deleted = await connection.execute(PURGE_BATCH_OF_OLD_EVENTS, {"cutoff": cutoff})
        total += deleted
        if deleted < PURGE_BATCH:
            return total
        await asyncio.sleep(PURGE_PAUSE_SECONDS)


async def purge_now_and_then(database: db.Database, retention_days: int) -> None:
    """Runs for the life of the process (main.py's lifespan): a purge every few minutes, at a
    random offset so the workers do not all purge at once."""
    while True:
        await asyncio.sleep(PURGE_EVERY_SECONDS * random.uniform(0.5, 1.5))
        try:
            purged = await purge_old_events(database, retention_days)
            if purged:
                log.info("purged old events", extra={"count": purged})
        except Exception as error:  # the database is down, or busy: try again next time
            log.warning("could not purge old events", extra={"error_type": type(error).__name__})
