"""Every change of a task or list as an event, written in the same transaction as the change: the
feed of `GET /api/changes`, `GET /api/events` and the outbound webhook (contract §10).

Why a cursor never skips a change. A global auto-increment id is handed out when a row is
inserted, not when it commits: a writer can take id 7, a second writer id 8 and commit first, and a
reader that already saw 8 never sees 7. Here each user has a counter row
(`user_event_counter`), bumped by `INSERT ... ON CONFLICT DO UPDATE SET seq = seq + n RETURNING
seq` as the last statement before COMMIT. The bump locks that row until the transaction ends, so
the user's next event-writing transaction waits for this one to commit (or roll back, giving the
numbers back) before it gets its own: per user, `seq` order is commit order and the numbers have
no gaps. A reader asking for `seq > cursor` therefore can never miss an event that commits later.
On SQLite the single writer gives the same. The lock is per user and held only from the bump to
COMMIT, so other users never wait and the user's own writers wait for a few statements at most.

Two ways in, one rule: `record` (any number of events, last in the caller's transaction) and, on
PostgreSQL, `with_event` (a one-row write and its event as one statement, so the hot write routes
stay one round trip). Both bump the same counter the same way.

The cursor is `v1.<seq>`; a client treats it as opaque.
"""
import asyncio
import functools
import logging
import random
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

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
# Rows per INSERT statement when one change records many events (clearing completed tasks).
INSERT_BATCH = 100
EVENT_COLUMNS = ("user_id", "seq", "type", "entity_id", "data", "created_at")


# SQLite: the bump, then the events numbered from it. PostgreSQL does both in one statement (below).
_sqlite_bump = sqlite.insert(counter_table).values(user_id=sa.bindparam("owner"), seq=sa.bindparam("count"))
SQLITE_BUMP_COUNTER = _sqlite_bump.on_conflict_do_update(
    index_elements=[counter_table.c.user_id], set_={"seq": counter_table.c.seq + _sqlite_bump.excluded.seq}
).returning(counter_table.c.seq)


@functools.lru_cache(maxsize=INSERT_BATCH)
def _insert_events_statement(count: int) -> sa.Insert:
    """SQLite: the events, numbered by the caller from the counter it just bumped."""
    rows = [{name: sa.bindparam(f"{name}_{index}", type_=event_table.c[name].type) for name in EVENT_COLUMNS}
            for index in range(count)]
    return sa.insert(event_table).values(rows)


@functools.lru_cache(maxsize=INSERT_BATCH)
def _bump_and_insert_statement(count: int) -> sa.TextClause:
    """PostgreSQL: the counter bump and the events in one statement (a data-modifying CTE)."""
    changes = ", ".join(
        f"({index + 1}, :type_{index}, CAST(:entity_id_{index} AS BIGINT), CAST(:data_{index} AS JSON))"
        for index in range(count)
    )
    return sa.text(
        "WITH bumped AS ("
        " INSERT INTO user_event_counter (user_id, seq) VALUES (:owner, :count)"
        " ON CONFLICT (user_id) DO UPDATE SET seq = user_event_counter.seq + excluded.seq RETURNING seq)"
        " INSERT INTO event (user_id, seq, type, entity_id, data, created_at)"
        " SELECT :owner, bumped.seq - :count + change.position, change.type, change.entity_id, change.data,"
        " CAST(:created_at AS TIMESTAMP WITH TIME ZONE)"
        f" FROM bumped, (VALUES {changes}) AS change (position, type, entity_id, data)"
    ).bindparams(
        sa.bindparam("count", type_=sa.BigInteger),
        sa.bindparam("created_at", type_=UTCDateTime()),
        *(sa.bindparam(f"data_{index}", type_=sa.JSON) for index in range(count)),
    )


@functools.lru_cache(maxsize=1024)
def with_event(
    statement: sa.UpdateBase,
    event_type: str,
    data_of: Callable[[Any], sa.ColumnElement] | None,
    also: Callable[[Any], sa.UpdateBase] | None = None,
) -> sa.Select:
    """PostgreSQL: a write of one user's rows (INSERT/UPDATE/DELETE ... RETURNING id, ...; its
    parameters include `owner`) and one event per written row, in ONE statement, so the write stays
    one round trip in autocommit, as it was without events. Data-modifying CTEs: the write, the
    counter bump by the number of rows (the same per-user lock as `record`, held until this
    statement commits), then the events, numbered in id order, whose `data` is built by `data_of`
    from each written row. Returns what `statement` returns. A write that matches no row bumps
    nothing and records nothing. `also`, given the written rows, builds one more write of the same
    statement (a new task's tag rows). Cached: built once per statement."""
    changed = statement.cte("changed")
    owner = sa.bindparam("owner", type_=sa.String)
    bump = postgresql.insert(counter_table).from_select(
        ["user_id", "seq"], sa.select(owner, sa.func.count()).select_from(changed).having(sa.func.count() > 0)
    )
    bumped = (
        bump.on_conflict_do_update(
            index_elements=[counter_table.c.user_id], set_={"seq": counter_table.c.seq + bump.excluded.seq}
        )
        .returning(counter_table.c.seq)
        .cte("bumped")
    )
    numbered = sa.select(
        *changed.c,
        sa.func.row_number().over(order_by=changed.c.id).label("event_position"),
        sa.func.count().over().label("event_total"),
    ).cte("numbered")
    event = sa.select(
        owner,
        bumped.c.seq - numbered.c.event_total + numbered.c.event_position,
        sa.literal_column(f"'{event_type}'", sa.String),  # one of TYPES, never client input
        numbered.c.id,
        data_of(numbered.c) if data_of is not None else sa.null(),
        sa.func.now(),
    ).select_from(numbered.join(bumped, sa.true()))
    recorded = sa.insert(event_table).from_select(list(EVENT_COLUMNS), event).cte("recorded")
    written = sa.select(*changed.c).add_cte(recorded)
    return written.add_cte(also(changed).cte("also")) if also is not None else written


def api_timestamp(column: Any) -> sa.ColumnElement[str]:
    """PostgreSQL: a timestamptz as the API's JSON writes it (responses.py: orjson with a `Z`,
    microseconds only when there are any), for event data built in SQL by `with_event`."""
    utc = sa.func.timezone(sa.literal_column("'UTC'"), column)
    fraction = sa.case(
        (sa.extract("microseconds", utc) % sa.literal_column("1000000") == sa.literal_column("0"), sa.literal_column("''")),
        else_=sa.func.to_char(utc, sa.literal_column("'.US'")),
    )
    seconds = sa.func.to_char(utc, sa.literal_column("'YYYY-MM-DD\"T\"HH24:MI:SS'"))
    return seconds.concat(fraction).concat(sa.literal_column("'Z'"))


async def record(connection: db.Connection, user_id: str, changes: Sequence[tuple[str, int, dict | None]]) -> None:
    """Record events (type, entity id, data) for one user, inside the caller's transaction.

    Call it last, just before COMMIT: it takes the user's counter lock, held until the transaction
    ends. `data` is the entity after the change as the REST API returns it (None for a delete)."""
    now = datetime.now(timezone.utc)
    for start in range(0, len(changes), INSERT_BATCH):
        batch = changes[start:start + INSERT_BATCH]
        params: dict[str, Any] = {"owner": user_id, "count": len(batch), "created_at": now}
        for index, (type_, entity_id, data) in enumerate(batch):
            params.update({f"type_{index}": type_, f"entity_id_{index}": entity_id, f"data_{index}": as_json_value(data)})
        if connection.dialect == "postgresql":
            await connection.execute(_bump_and_insert_statement(len(batch)), params)
        else:
            await _bump_and_insert_sqlite(connection, user_id, batch, params)


async def _bump_and_insert_sqlite(connection: db.Connection, user_id: str, batch: Sequence, params: dict[str, Any]) -> None:
    last = await connection.fetch_value(SQLITE_BUMP_COUNTER, params)
    for index in range(len(batch)):
        params.update({f"user_id_{index}": user_id, f"seq_{index}": last - len(batch) + index + 1,
                       f"created_at_{index}": params["created_at"]})
    await connection.execute(_insert_events_statement(len(batch)), params)


def as_json_value(data: dict | None) -> Any:
    """The entity as the API's JSON would carry it (datetimes as the API writes them)."""
    return None if data is None else orjson.loads(to_json(data))


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
    sa.select(event_table.c.seq, event_table.c.type, event_table.c.entity_id, event_table.c.data, event_table.c.created_at)
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
            "at": row["created_at"]}


async def current_seq(connection: db.Connection, user_id: str) -> int:
    return await connection.fetch_value(LAST_SEQ, {"owner": user_id}) or 0


async def changes_since(connection: db.Connection, user_id: str, since: int, limit: int) -> tuple[list[db.Row], bool]:
    """The user's events after `since`, oldest first, at most `limit`, and whether more follow.
    CursorExpired if events after `since` were purged (or `since` was never handed out)."""
    rows = await connection.fetch_all(FEED_PAGE, {"owner": user_id, "since": since, "limit": limit + 1})
    if rows:
        # Seqs have no gaps: a first event that is not since + 1 means the ones between were purged.
        if rows[0]["seq"] != since + 1:
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
PURGE_BATCH_OF_OLD_EVENTS = sa.delete(event_table).where(
    event_table.c.id.in_(
        sa.select(event_table.c.id)
        .where(event_table.c.created_at < sa.bindparam("cutoff", type_=UTCDateTime()))
        .order_by(event_table.c.id)
        .limit(PURGE_BATCH)
    )
)


async def purge_old_events(database: db.Database, retention_days: int) -> int:
    """Delete events older than the retention, a batch at a time (each its own short statement,
    so no request waits long behind it); the number deleted. The per-user counters stay: a cursor
    from before the purge is then recognised as expired."""
    cutoff = datetime.now(timezone.utc) - timedelta(days=retention_days)
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
