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

The cursor is `v1.<seq>`; a client treats it as opaque.
"""
import functools
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

import db
from models import Event, UserEventCounter, UTCDateTime
from responses import to_json

event_table: sa.Table = Event.__table__
counter_table: sa.Table = UserEventCounter.__table__

TASK_CREATED, TASK_UPDATED, TASK_DELETED = "task.created", "task.updated", "task.deleted"
LIST_CREATED, LIST_UPDATED, LIST_DELETED = "list.created", "list.updated", "list.deleted"
REMINDER_DUE = "reminder.due"
TYPES = (TASK_CREATED, TASK_UPDATED, TASK_DELETED, LIST_CREATED, LIST_UPDATED, LIST_DELETED, REMINDER_DUE)
# Rows per INSERT statement when one change records many events (clearing completed tasks).
INSERT_BATCH = 100
EVENT_COLUMNS = ("user_id", "seq", "type", "entity_id", "data", "created_at")


def _bump_counter(insert: Any) -> sa.Insert:
    statement = insert(counter_table).values(user_id=sa.bindparam("owner"), seq=sa.bindparam("count"))
    return statement.on_conflict_do_update(
        index_elements=[counter_table.c.user_id],
        set_={"seq": counter_table.c.seq + statement.excluded.seq},
    ).returning(counter_table.c.seq)


# The same statement, spelt by each dialect's INSERT (ON CONFLICT is not in SQLAlchemy's generic one).
BUMP_COUNTER = {"postgresql": _bump_counter(postgresql.insert), "sqlite": _bump_counter(sqlite.insert)}


@functools.lru_cache(maxsize=INSERT_BATCH)
def _insert_events_statement(count: int) -> sa.Insert:
    rows = [{name: sa.bindparam(f"{name}_{index}", type_=event_table.c[name].type) for name in EVENT_COLUMNS}
            for index in range(count)]
    return sa.insert(event_table).values(rows)


async def record(connection: db.Connection, user_id: str, changes: Sequence[tuple[str, int, dict | None]]) -> None:
    """Record events (type, entity id, data) for one user, inside the caller's transaction.

    Call it last, just before COMMIT: it takes the user's counter lock, held until the transaction
    ends. `data` is the entity after the change as the REST API returns it (None for a delete)."""
    if not changes:
        return
    last = await connection.fetch_value(BUMP_COUNTER[connection.dialect], {"owner": user_id, "count": len(changes)})
    seq = last - len(changes)
    now = datetime.now(timezone.utc)
    for start in range(0, len(changes), INSERT_BATCH):
        batch = changes[start:start + INSERT_BATCH]
        params: dict[str, Any] = {}
        for index, (type_, entity_id, data) in enumerate(batch):
            seq += 1
            params.update({
                f"user_id_{index}": user_id, f"seq_{index}": seq, f"type_{index}": type_,
                f"entity_id_{index}": entity_id, f"data_{index}": as_json_value(data), f"created_at_{index}": now,
            })
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
