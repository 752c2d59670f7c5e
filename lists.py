"""Every SQL statement about lists: the default list, create, read, rename, move, delete.

A list is read as one member sees it (their membership row joined: their `role` and their own
`position`), with its counts (`task_count`, `completed_count`, subtasks included; `member_count`),
so its ETag has all of those (etags.list_etag). Every user has exactly one default list: created on
first use by an insert that a unique partial index makes race-free (ON CONFLICT DO NOTHING, then
read), never shared and never deleted, so its id is cached per process for good. Who may do what
to a list is access.py's; its members and invitations are sharing.py's.
"""
import functools
import weakref
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from fractional_indexing import generate_key_between
from sqlalchemy.dialects import postgresql, sqlite

import access
import counts
import events
import tree
from db import Connection, Database, Row
from errors import Conflict, ListNotFound, PreconditionFailed, ValidationFailed
from etags import Precondition, list_etag
from models import MAX_ID, Task, TaskList, UTCDateTime

list_table: sa.Table = TaskList.__table__
task_table: sa.Table = Task.__table__
member_table: sa.Table = access.member_table
DEFAULT_LIST_NAME = "Inbox"
MAX_LISTS = 1000

_l, _t, _m = list_table.c, task_table.c, member_table.c
TASK_COUNT = counts.of_list(counts.ALL_TASKS, _l.id)
COMPLETED_COUNT = counts.of_list(counts.COMPLETED_TASKS, _l.id)
_audience = member_table.alias("audience")
MEMBER_COUNT = sa.select(sa.func.count()).where(_audience.c.list_id == _l.id).scalar_subquery()
PUBLIC_COLUMNS = (
    "id", "name", "color", "is_default", "position", "owner_id", "role", "member_count", "task_count",
    "completed_count", "created_at", "updated_at",
)
# A list as one member sees it: their role and their own position come from their membership row.
SELECTED_COLUMNS = [
    _l.id, _l.name, _l.color, _l.is_default, _m.position, _l.owner_id, _m.role, MEMBER_COUNT.label("member_count"),
    TASK_COUNT.label("task_count"), COMPLETED_COUNT.label("completed_count"), _l.created_at, _l.updated_at, _l.version,
    _m.user_id.label("member_id"),
]
_AS_MEMBER = list_table.join(member_table, _m.list_id == _l.id)
_CALLER = _m.user_id == sa.bindparam("caller")

ALL_LISTS = sa.select(*SELECTED_COLUMNS).select_from(_AS_MEMBER).where(_CALLER).order_by(_m.position, _l.id)
FIND_LIST = sa.select(*SELECTED_COLUMNS).select_from(_AS_MEMBER).where(_CALLER, _l.id == sa.bindparam("list_id"))
# The list as each of its members sees it (for their events).
EVERY_VIEW = sa.select(*SELECTED_COLUMNS).select_from(_AS_MEMBER).where(_l.id == sa.bindparam("list_id")).order_by(_m.user_id)
LOCK_LIST = sa.select(_l.id).where(_l.id == sa.bindparam("list_id")).with_for_update()
FIND_DEFAULT = sa.select(_l.id).where(_l.owner_id == sa.bindparam("caller"), _l.is_default.is_(True))
OWNED_COUNT = sa.select(sa.func.count()).where(_l.owner_id == sa.bindparam("caller"))
MEMBER_POSITIONS = sa.select(sa.func.min(_m.position).label("first"), sa.func.max(_m.position).label("last")).where(_CALLER)
INSERTED_COLUMNS = ("owner_id", "name", "color", "is_default", "created_at", "updated_at", "version")
INSERT_LIST = sa.insert(list_table).values({name: sa.bindparam(name) for name in INSERTED_COLUMNS}).returning(_l.id)
MEMBER_COLUMNS = ("list_id", "user_id", "role", "position", "email", "name", "joined_at")
INSERT_MEMBER = sa.insert(member_table).values({name: sa.bindparam(name) for name in MEMBER_COLUMNS})
DELETE_LIST_TASKS = sa.delete(task_table).where(_t.list_id == sa.bindparam("list_id")).returning(_t.id)
DELETE_LIST = sa.delete(list_table).where(_l.id == sa.bindparam("list_id"))
MOVE_LIST = sa.update(member_table).where(_m.list_id == sa.bindparam("list_id"), _CALLER).values(position=sa.bindparam("position"))

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
        .on_conflict_do_nothing(index_elements=["owner_id"], index_where=_l.is_default)
        .returning(_l.id)
    )


INSERT_DEFAULT = {"postgresql": _insert_default(postgresql.insert), "sqlite": _insert_default(sqlite.insert)}


def _new_list(owner_id: str, name: str, color: str | None, is_default: bool = False) -> dict[str, Any]:
    now = utc_now()
    return {"owner_id": owner_id, "name": name, "color": color, "is_default": is_default, "created_at": now, "updated_at": now, "version": 1}


def new_member(list_id: int, user_id: str, role: str, position: str, email: str | None = None, name: str | None = None) -> dict[str, Any]:
    return {"list_id": list_id, "user_id": user_id, "role": role, "position": position, "email": email, "name": name,
            "joined_at": utc_now()}


def _as_seen_by_owner(row: dict[str, Any], member: dict[str, Any]) -> dict[str, Any]:
    """A list just created, as its owner sees it."""
    return {**row, "position": member["position"], "role": access.OWNER, "member_count": 1, "task_count": 0,
            "completed_count": 0, "member_id": member["user_id"]}


async def position_at_end(connection: Connection, user_id: str, top: bool = False) -> str:
    """A position at the end (or the top) of the user's own order of their lists."""
    positions = await connection.fetch_one(MEMBER_POSITIONS, {"caller": user_id})
    return generate_key_between(None, positions["first"]) if top else generate_key_between(positions["last"], None)


async def default_list_id(connection: Connection, user_id: str) -> int:
    """The caller's default list, created on first use (first in their order). Cached once seen
    committed: after that, no database work at all for it in this process."""
    cache = _cache(connection.database)
    cached = cache.get(user_id)
    if cached is not None:
        return cached
    list_id = await connection.fetch_value(FIND_DEFAULT, {"caller": user_id})
    if list_id is not None:
        cache[user_id] = list_id
        return list_id
    row = _new_list(user_id, DEFAULT_LIST_NAME, None, is_default=True)
    # Not cached: the caller's transaction may still roll this insert back. The next call finds it.
    async with connection.atomic():  # the list, its owner and its list.created event
        list_id = await connection.fetch_value(INSERT_DEFAULT[connection.dialect], row)
        if list_id is not None:
            member = new_member(list_id, user_id, access.OWNER, await position_at_end(connection, user_id, top=True))
            await connection.execute(INSERT_MEMBER, member)
            seen = public(_as_seen_by_owner({**row, "id": list_id}, member))
            await events.record(connection, user_id, [events.to_user(user_id, events.LIST_CREATED, list_id, seen)])
    if list_id is None:  # another request created (and committed) it a moment ago
        list_id = await connection.fetch_value(FIND_DEFAULT, {"caller": user_id})
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
        return await connection.fetch_all(ALL_LISTS, {"caller": user_id})


async def get_list(db: Database, user_id: str, list_id: int) -> Row:
    await ensure_default_list(db, user_id)
    async with db.connect() as connection:
        return await view_of(connection, user_id, list_id)


async def view_of(connection: Connection, user_id: str, list_id: int) -> Row:
    """The list as this user sees it; 404 when they are not a member (they learn nothing)."""
    row = None
    if 1 <= list_id <= MAX_ID:
        row = await connection.fetch_one(FIND_LIST, {"list_id": list_id, "caller": user_id})
    if row is None:
        raise ListNotFound()
    return row


async def create_list(db: Database, user_id: str, fields: dict[str, Any], email: str | None = None, name: str | None = None) -> Row:
    async with db.transaction(writer=user_id) as connection:
        return await insert_list(connection, user_id, fields, email, name)


async def insert_list(
    connection: Connection, user_id: str, fields: dict[str, Any], email: str | None = None, name: str | None = None
) -> Row:
    """A new list at the end of the caller's lists, owned by them (with their email and name, as
    the members list shows them), in the caller's transaction."""
    await default_list_id(connection, user_id)
    await tree.lock_lists_of(connection, user_id)  # the count below stays true until commit
    count = await connection.fetch_value(OWNED_COUNT, {"caller": user_id})
    if count >= MAX_LISTS:
        raise ValidationFailed(
            [{"field": "body", "message": f"you own {count} lists, the most allowed is {MAX_LISTS}; delete one first"}],
            detail=f"A user can own at most {MAX_LISTS} lists (the default one included). Delete a list first.",
        )
    row = _new_list(user_id, fields["name"], fields.get("color"))
    row["id"] = await connection.fetch_value(INSERT_LIST, row)
    member = new_member(row["id"], user_id, access.OWNER, await position_at_end(connection, user_id), email, name)
    await connection.execute(INSERT_MEMBER, member)
    row = _as_seen_by_owner(row, member)
    await events.record(connection, user_id, [events.to_user(user_id, events.LIST_CREATED, row["id"], public(row))])
    return row


@functools.lru_cache(maxsize=64)
def _update_statement(fields: tuple[str, ...]) -> sa.Update:
    now = sa.bindparam("now", type_=UTCDateTime())
    values: dict[str, Any] = {field: sa.bindparam(f"new_{field}", type_=_l[field].type) for field in fields}
    values["updated_at"] = sa.case((_l.updated_at < now, now), else_=_l.updated_at)  # never backwards
    values["version"] = _l.version + 1
    return sa.update(list_table).where(_l.id == sa.bindparam("list_id")).values(values)


LIST_CHANGED = "The list changed since you read it (If-Match does not match its ETag). Fetch it again and retry."


async def locked_view(connection: Connection, user_id: str, list_id: int, action: access.Action, if_match: Precondition) -> Row:
    """Inside a transaction: the list as the caller sees it, locked against other changes of it, once
    their role allows `action` (404 / 403) and If-Match holds (412)."""
    await access.require(connection, user_id, list_id, action)
    await connection.fetch_value(LOCK_LIST, {"list_id": list_id})
    row = await view_of(connection, user_id, list_id)
    if not if_match.unconditional and list_etag(row) not in {tag.strip() for tag in if_match.header.split(",")}:
        raise PreconditionFailed(LIST_CHANGED)
    return row


async def modify_list(db: Database, user_id: str, list_id: int, changes: dict[str, Any], if_match: Precondition) -> Row:
    """Rename / recolour (the owner only); every member sees it (a list.updated in each feed)."""
    async with db.transaction(writer=user_id) as connection:
        await locked_view(connection, user_id, list_id, access.RENAME_LIST, if_match)
        params = {"list_id": list_id, "now": utc_now(), **{f"new_{field}": value for field, value in changes.items()}}
        await connection.execute(_update_statement(tuple(sorted(changes))), params)
        return await record_list_updated(connection, user_id, list_id)


async def record_list_updated(connection: Connection, actor: str, list_id: int, members: Any = None) -> Row | None:
    """A list.updated in the feed of every member (or of `members`), each with the list as they see
    it; the list as `actor` sees it (None if they are not a member)."""
    seen_by_actor = None
    changes = []
    for row in await connection.fetch_all(EVERY_VIEW, {"list_id": list_id}):
        if members is None or row["member_id"] in members:
            changes.append(events.to_user(row["member_id"], events.LIST_UPDATED, list_id, public(row)))
        if row["member_id"] == actor:
            seen_by_actor = row
    await events.record(connection, actor, changes)
    return seen_by_actor


async def move_list(db: Database, user_id: str, list_id: int, spot: tree.Spot, if_match: Precondition) -> Row:
    """Move the list in the caller's own order of their lists (any member orders theirs)."""
    await ensure_default_list(db, user_id)
    async with db.transaction(writer=user_id) as connection:
        await tree.lock_lists_of(connection, user_id)
        await locked_view(connection, user_id, list_id, access.SEE, if_match)
        kind, scope = tree.sibling_scope(user_id, list_id)
        position = await tree.position_at(connection, kind, scope, spot)
        await connection.execute(MOVE_LIST, {"list_id": list_id, "caller": user_id, "position": position})
        row = await view_of(connection, user_id, list_id)
        await events.record(connection, user_id, [events.to_user(user_id, events.LIST_UPDATED, list_id, public(row))])
        return row


async def delete_list(db: Database, user_id: str, list_id: int, cascade: bool, if_match: Precondition) -> list[int]:
    """Delete an empty list, or with `cascade` the list and all its tasks (all levels), for every
    member (the owner only). Returns the ids of the deleted tasks. The default list is never deleted."""
    with tree.references_checked(lambda: Conflict("A task was added to the list while it was being deleted. Retry.")):
        async with access.membership_change(db, user_id) as connection:  # it leaves every member's sight at once
            row = await locked_view(connection, user_id, list_id, access.DELETE_LIST, if_match)
            if row["is_default"]:
                raise Conflict("The default list cannot be deleted (every user has one). Rename it if you like.")
            if row["task_count"] and not cascade:
                raise Conflict(
                    f"The list has {row['task_count']} task(s) (subtasks included). Move or delete them first, "
                    "or add ?cascade=true to delete them with the list."
                )
            params = {"list_id": list_id}
            deleted_tasks = [r["id"] for r in await connection.fetch_all(DELETE_LIST_TASKS, params)] if cascade else []
            deletions = [events.to_members(list_id, events.TASK_DELETED, task_id, None) for task_id in deleted_tasks]
            await events.record(connection, user_id, [*deletions, events.to_members(list_id, events.LIST_DELETED, list_id, None)])
            await connection.execute(DELETE_LIST, params)  # its members and invitations go with it
            return deleted_tasks
