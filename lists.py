"""Every SQL statement about lists: the default list, create, read, rename, move, delete.

A list's representation includes its counts (`task_count`, `completed_count`, subtasks included),
so its ETag does too (etags.list_etag). Every user has exactly one default list: created on first
use by an insert that a unique partial index makes race-free (ON CONFLICT DO NOTHING, then read),
and never deleted, so its id is cached per process for good.
"""
import functools
import weakref
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from fractional_indexing import generate_key_between
from sqlalchemy.dialects import postgresql, sqlite

import events
import tree
from db import Connection, Database, Row
from errors import Conflict, ListNotFound, PreconditionFailed, ValidationFailed
from etags import Precondition, list_etag
from models import MAX_ID, Task, TaskList, UTCDateTime

list_table: sa.Table = TaskList.__table__
task_table: sa.Table = Task.__table__
DEFAULT_LIST_NAME = "Inbox"
MAX_LISTS = 1000

_l, _t = list_table.c, task_table.c
TASK_COUNT = sa.select(sa.func.count()).where(_t.list_id == _l.id).scalar_subquery()
COMPLETED_COUNT = sa.select(sa.func.count()).where(_t.list_id == _l.id, _t.completed.is_(True)).scalar_subquery()
PUBLIC_COLUMNS = (
    "id", "name", "color", "is_default", "position", "task_count", "completed_count", "created_at", "updated_at",
)
SELECTED_COLUMNS = [
    _l.id, _l.name, _l.color, _l.is_default, _l.position,
    TASK_COUNT.label("task_count"), COMPLETED_COUNT.label("completed_count"),
    _l.created_at, _l.updated_at, _l.version,
]
OWNED = (_l.id == sa.bindparam("list_id"), _l.user_id == sa.bindparam("owner"))

ALL_LISTS = sa.select(*SELECTED_COLUMNS).where(_l.user_id == sa.bindparam("owner")).order_by(_l.position, _l.id)
FIND_LIST = sa.select(*SELECTED_COLUMNS).where(*OWNED)
FIND_DEFAULT = sa.select(_l.id).where(_l.user_id == sa.bindparam("owner"), _l.is_default.is_(True))
COUNT_AND_LAST = sa.select(sa.func.count().label("count"), sa.func.max(_l.position).label("last")).where(_l.user_id == sa.bindparam("owner"))
INSERTED_COLUMNS = ("user_id", "name", "color", "is_default", "position", "created_at", "updated_at", "version")
INSERT_LIST = sa.insert(list_table).values({name: sa.bindparam(name) for name in INSERTED_COLUMNS}).returning(_l.id)
DELETE_LIST_TASKS = sa.delete(task_table).where(_t.list_id == sa.bindparam("list_id"), _t.user_id == sa.bindparam("owner")).returning(_t.id)
DELETE_LIST = sa.delete(list_table).where(*OWNED)

# The one place that knows each user's default list id: cached per database (an app has one; tests
# run several in one process), for as long as the process lives, since a default list is never deleted.
_default_list_ids: "weakref.WeakKeyDictionary[Database, dict[str, int]]" = weakref.WeakKeyDictionary()


def _cache(database: Database) -> dict[str, int]:
    cache = _default_list_ids.get(database)
    if cache is None:
        cache = _default_list_ids[database] = {}
    return cache


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def public(row: Row) -> dict[str, Any]:
    return {name: row[name] for name in PUBLIC_COLUMNS}


def _insert_default(insert: Any) -> sa.Insert:
    values = {name: sa.bindparam(name) for name in INSERTED_COLUMNS}
    return (
        insert(list_table)
        .values(values)
        .on_conflict_do_nothing(index_elements=["user_id"], index_where=_l.is_default)
        .returning(_l.id)
    )


INSERT_DEFAULT = {"postgresql": _insert_default(postgresql.insert), "sqlite": _insert_default(sqlite.insert)}


def _new_list(user_id: str, name: str, color: str | None, position: str, is_default: bool = False) -> dict[str, Any]:
    now = utc_now()
    return {
        "user_id": user_id, "name": name, "color": color, "is_default": is_default, "position": position,
        "created_at": now, "updated_at": now, "version": 1, "task_count": 0, "completed_count": 0,
    }


async def default_list_id(connection: Connection, user_id: str) -> int:
    """The caller's default list, created on first use. Cached once seen committed: after that, no
    database work at all for it in this process."""
    cache = _cache(connection.database)
    cached = cache.get(user_id)
    if cached is not None:
        return cached
    list_id = await connection.fetch_value(FIND_DEFAULT, {"owner": user_id})
    if list_id is not None:
        cache[user_id] = list_id
        return list_id
    row = _new_list(user_id, DEFAULT_LIST_NAME, None, generate_key_between(None, None), is_default=True)
    # Not cached: the caller's transaction may still roll this insert back. The next call finds it.
    async with connection.atomic():  # the list and its list.created event
        list_id = await connection.fetch_value(INSERT_DEFAULT[connection.dialect], row)
        if list_id is not None:
            await events.record(connection, user_id, [(events.LIST_CREATED, list_id, public({**row, "id": list_id}))])
    if list_id is None:  # another request created (and committed) it a moment ago
        list_id = await connection.fetch_value(FIND_DEFAULT, {"owner": user_id})
        cache[user_id] = list_id
    return list_id


async def ensure_default_list(db: Database, user_id: str) -> int:
    if (cached := _cache(db).get(user_id)) is not None:
        return cached
    async with db.connect() as connection:
        return await default_list_id(connection, user_id)


async def all_lists(db: Database, user_id: str) -> list[Row]:
    await ensure_default_list(db, user_id)
    async with db.connect() as connection:
        return await connection.fetch_all(ALL_LISTS, {"owner": user_id})


async def get_list(db: Database, user_id: str, list_id: int) -> Row:
    await ensure_default_list(db, user_id)
    async with db.connect() as connection:
        return await _find_or_404(connection, user_id, list_id)


async def _find_or_404(connection: Connection, user_id: str, list_id: int) -> Row:
    row = None
    if 1 <= list_id <= MAX_ID:
        row = await connection.fetch_one(FIND_LIST, {"list_id": list_id, "owner": user_id})
    if row is None:
        raise ListNotFound()
    return row


async def create_list(db: Database, user_id: str, fields: dict[str, Any]) -> Row:
    async with db.transaction(writer=user_id) as connection:
        return await insert_list(connection, user_id, fields)


async def insert_list(connection: Connection, user_id: str, fields: dict[str, Any]) -> Row:
    """A new list at the end of the caller's lists, in the caller's transaction."""
    await default_list_id(connection, user_id)
    await tree.lock_structure(connection, user_id)  # the count below stays true until commit
    counted = await connection.fetch_one(COUNT_AND_LAST, {"owner": user_id})
    count, last = counted["count"], counted["last"]
    if count >= MAX_LISTS:
        raise ValidationFailed(
            [{"field": "body", "message": f"you have {count} lists, the most allowed is {MAX_LISTS}; delete one first"}],
            detail=f"A user can have at most {MAX_LISTS} lists (the default one included). Delete a list first.",
        )
    row = _new_list(user_id, fields["name"], fields.get("color"), generate_key_between(last, None))
    row["id"] = await connection.fetch_value(INSERT_LIST, row)
    await events.record(connection, user_id, [(events.LIST_CREATED, row["id"], public(row))])
    return row


@functools.lru_cache(maxsize=64)
def _update_statement(fields: tuple[str, ...], state_count: int | None) -> sa.Update:
    now = sa.bindparam("now", type_=UTCDateTime())
    values: dict[str, Any] = {field: sa.bindparam(f"new_{field}", type_=_l[field].type) for field in fields}
    values["updated_at"] = sa.case((_l.updated_at < now, now), else_=_l.updated_at)  # never backwards
    values["version"] = _l.version + 1
    return sa.update(list_table).where(*OWNED, *_state_matches(state_count)).values(values).returning(_l.id)


def _state_matches(state_count: int | None) -> list[sa.ColumnElement[bool]]:
    """If-Match as a condition on version and counts (none given: no condition)."""
    if state_count is None:
        return []
    return [sa.or_(sa.false(), *(
        sa.and_(
            _l.version == sa.bindparam(f"if_version_{index}"),
            TASK_COUNT == sa.bindparam(f"if_tasks_{index}"),
            COMPLETED_COUNT == sa.bindparam(f"if_completed_{index}"),
        )
        for index in range(state_count)
    ))]


def _state_params(states: list[tuple[int, ...]] | None) -> dict[str, int]:
    params = {}
    for index, (version, tasks, completed) in enumerate(states or ()):
        params.update({f"if_version_{index}": version, f"if_tasks_{index}": tasks, f"if_completed_{index}": completed})
    return params


LIST_CHANGED = "The list changed since you read it (If-Match does not match its ETag). Fetch it again and retry."


async def modify_list(db: Database, user_id: str, list_id: int, changes: dict[str, Any], if_match: Precondition) -> Row:
    """Rename / recolour in one conditional UPDATE (412 if If-Match no longer matches), then read it."""
    if not 1 <= list_id <= MAX_ID:
        raise ListNotFound()
    states = if_match.states(list_id, 3)
    statement = _update_statement(tuple(sorted(changes)), None if states is None else len(states))
    params = {"list_id": list_id, "owner": user_id, "now": utc_now(), **_state_params(states)}
    params.update({f"new_{field}": value for field, value in changes.items()})
    async with db.transaction(writer=user_id) as connection:
        if await connection.fetch_value(statement, params) is None:
            await _find_or_404(connection, user_id, list_id)
            raise PreconditionFailed(LIST_CHANGED)
        return await _updated(connection, user_id, list_id)


async def _updated(connection: Connection, user_id: str, list_id: int) -> Row:
    """The list after a change, and its list.updated event."""
    row = await _find_or_404(connection, user_id, list_id)
    await events.record(connection, user_id, [(events.LIST_UPDATED, list_id, public(row))])
    return row


def _check_if_match(row: Row, if_match: Precondition) -> None:
    if not if_match.unconditional and list_etag(row) not in {tag.strip() for tag in if_match.header.split(",")}:
        raise PreconditionFailed(LIST_CHANGED)


MOVE_LIST = _update_statement(("position",), None)


async def move_list(db: Database, user_id: str, list_id: int, spot: tree.Spot, if_match: Precondition) -> Row:
    await ensure_default_list(db, user_id)
    async with db.transaction(writer=user_id) as connection:
        await tree.lock_structure(connection, user_id)
        row = await _find_or_404(connection, user_id, list_id)
        _check_if_match(row, if_match)
        kind, scope = tree.sibling_scope(user_id, list_id)
        position = await tree.position_at(connection, kind, scope, spot)
        await connection.execute(MOVE_LIST, {"list_id": list_id, "owner": user_id, "new_position": position, "now": utc_now()})
        return await _updated(connection, user_id, list_id)


async def delete_list(db: Database, user_id: str, list_id: int, cascade: bool, if_match: Precondition) -> list[int]:
    """Delete an empty list, or with `cascade` the list and all its tasks (all levels). Returns the
    ids of the deleted tasks. The default list is never deleted."""
    with tree.references_checked(lambda: Conflict("A task was added to the list while it was being deleted. Retry.")):
        async with db.transaction(writer=user_id) as connection:
            await tree.lock_structure(connection, user_id)
            row = await _find_or_404(connection, user_id, list_id)
            _check_if_match(row, if_match)
            if row["is_default"]:
                raise Conflict("The default list cannot be deleted (every user has one). Rename it if you like.")
            if row["task_count"] and not cascade:
                raise Conflict(
                    f"The list has {row['task_count']} task(s) (subtasks included). Move or delete them first, "
                    "or add ?cascade=true to delete them with the list."
                )
            params = {"list_id": list_id, "owner": user_id}
            deleted_tasks = [r["id"] for r in await connection.fetch_all(DELETE_LIST_TASKS, params)] if cascade else []
            await connection.execute(DELETE_LIST, params)
            deletions = [(events.TASK_DELETED, task_id, None) for task_id in deleted_tasks]
            await events.record(connection, user_id, [*deletions, (events.LIST_DELETED, list_id, None)])
            return deleted_tasks
