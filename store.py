"""Every SQL statement about tasks. Ownership is in every WHERE clause, never checked after loading.

Writes are single statements where they can be: `UPDATE ... WHERE id AND user_id [AND version]
RETURNING` is both the ownership check and the compare-and-set of If-Match, atomic on both
databases (PostgreSQL locks the row and re-checks the WHERE after a concurrent commit; SQLite
runs one writer at a time). Only a change of tags needs a transaction (the task_tag rows).
Every statement is built once, at import or by an lru_cached builder keyed by its shape, with bind
parameters for the values (db.Database compiles each once). Rows come back as plain dicts (no ORM
objects): the routes serialise them directly.
"""
import functools
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from db import Connection, Database
from errors import PreconditionFailed, TaskNotFound
from models import PRIORITIES, Task, TaskTag, UTCDateTime

task_table: sa.Table = Task.__table__
tag_table: sa.Table = TaskTag.__table__
PUBLIC_COLUMNS = (
    "id", "user_id", "title", "description", "completed", "priority", "tags",
    "due_date", "completed_at", "created_at", "updated_at",
)
PUBLIC_SELECTED = [task_table.c[name] for name in PUBLIC_COLUMNS]
SELECTED_COLUMNS = [*PUBLIC_SELECTED, task_table.c.version]
# The largest id the `task.id` column can hold; a larger one cannot name a task.
MAX_TASK_ID = 2**31 - 1
# Not a client value: `completed` is flipped in SQL, from the row's own value.
FLIP = object()

Changes = dict[str, Any]


def etag_of(task: dict[str, Any]) -> str:
    return f'"{task["id"]}.{task["version"]}"'


def public(task: dict[str, Any]) -> dict[str, Any]:
    return {name: task[name] for name in PUBLIC_COLUMNS}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


async def get_task(db: Database, user_id: str, task_id: int) -> dict[str, Any]:
    async with db.connect() as connection:
        task = await _find(connection, user_id, task_id)
    if task is None:
        raise TaskNotFound()
    return task


async def create_task(db: Database, user_id: str, fields: Changes) -> dict[str, Any]:
    async with db.transaction() if fields.get("tags") else db.connect() as connection:
        return await insert_task(connection, user_id, fields)


async def insert_task(connection: Connection, user_id: str, fields: Changes) -> dict[str, Any]:
    """The INSERTs of a new task, in the caller's connection or transaction."""
    now = utc_now()
    task = {
        "user_id": user_id,
        "description": None,
        "completed": False,
        "priority": "medium",
        "tags": [],
        "due_date": None,
        **fields,
        "completed_at": now if fields.get("completed") else None,
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }
    task["id"] = await connection.fetch_value(INSERT_TASK, task)
    await _insert_tags(connection, task)
    return task


async def modify_task(db: Database, user_id: str, task_id: int, changes: Changes, if_match: "Precondition") -> dict[str, Any]:
    """Apply `changes` (`completed` may be FLIP) in one conditional UPDATE; 404 or 412 if it matches
    no row. Without If-Match the last write wins; with it, a version that moved on is a 412."""
    if not 1 <= task_id <= MAX_TASK_ID:
        raise TaskNotFound()
    versions = if_match.versions(task_id)
    values = {field: value for field, value in changes.items() if value is not FLIP}
    statement = _update_statement(tuple(sorted(values)), _completion(changes.get("completed")), _count(versions))
    params: dict[str, Any] = {"task_id": task_id, "owner": user_id, "now": utc_now(), **_numbered("if_match", versions)}
    params.update({f"new_{field}": value for field, value in values.items()})
    async with db.transaction() if "tags" in changes else db.connect() as connection:
        task = await connection.fetch_one(statement, params)
        if task is None:
            await _explain_miss(connection, user_id, task_id)
        if "tags" in changes:
            await connection.execute(DELETE_TAGS, {"task_id": task_id})
            await _insert_tags(connection, task)
    return task


async def delete_task(db: Database, user_id: str, task_id: int, if_match: "Precondition") -> None:
    if not 1 <= task_id <= MAX_TASK_ID:
        raise TaskNotFound()
    versions = if_match.versions(task_id)
    params = {"task_id": task_id, "owner": user_id, **_numbered("if_match", versions)}
    async with db.connect() as connection:  # task_tag rows go with it (ON DELETE CASCADE)
        if await connection.execute(_delete_statement(_count(versions)), params) == 0:
            await _explain_miss(connection, user_id, task_id)


PRIORITY_RANK = sa.case({"low": 1, "medium": 2, "high": 3}, value=task_table.c.priority)  # high > medium > low
SORT_KEYS = {
    "created_at": task_table.c.created_at,
    "updated_at": task_table.c.updated_at,
    "due_date": task_table.c.due_date,
    "priority": PRIORITY_RANK,
    "title": sa.func.lower(task_table.c.title),
}


@dataclass
class TaskFilter:
    """The listing's filters. Its `shape()` (which conditions apply) picks a statement built once
    by `_conditions`; its `parameters()` are the values. Page and count share both."""

    user_id: str
    completed: bool | None = None
    text: str | None = None
    priorities: list[str] | None = None
    tags: list[str] | None = None
    due_before: datetime | None = None
    due_after: datetime | None = None
    overdue: bool | None = None

    def tag_keys(self) -> list[str]:
        return list(dict.fromkeys(tag.strip().lower() for tag in self.tags or ()))

    def shape(self) -> tuple[Any, ...]:
        return (
            self.completed is not None,
            bool(self.text),
            len(set(self.priorities or ())),
            len(self.tag_keys()),
            self.due_before is not None,
            self.due_after is not None,
            self.overdue,
        )

    def parameters(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "owner": self.user_id,
            "completed": self.completed,
            "priorities": self.priorities,
            "due_before": self.due_before,
            "due_after": self.due_after,
            "now": utc_now(),
        }
        if self.text:
            # % and _ (and the escape character /) in the text match literally.
            values["pattern"] = "%" + self.text.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"
        values.update(_numbered("priority", self.priorities and list(dict.fromkeys(self.priorities))))
        values.update(_numbered("tag", self.tag_keys()))
        return values


@functools.lru_cache(maxsize=512)
def _conditions(shape: tuple[Any, ...]) -> tuple[sa.ColumnElement[bool], ...]:
    has_completed, has_text, priority_count, tag_count, has_due_before, has_due_after, overdue = shape
    t = task_table.c
    conditions = [t.user_id == sa.bindparam("owner")]
    if has_completed:
        conditions.append(t.completed == sa.bindparam("completed"))
    if has_text:
        # The database lowers both sides: Python's lower() folds more than SQLite's built-in
        # (db.py registers a Unicode one), so a needle lowered here could miss "École" there.
        pattern = sa.func.lower(sa.bindparam("pattern", type_=sa.String))
        conditions.append(
            sa.or_(sa.func.lower(t.title).like(pattern, escape="/"), sa.func.lower(t.description).like(pattern, escape="/"))
        )
    if priority_count:
        conditions.append(t.priority.in_(_numbered_binds("priority", priority_count)))
    for index in range(tag_count):
        tagged = sa.select(tag_table.c.task_id).where(
            tag_table.c.user_id == sa.bindparam("owner"), tag_table.c.tag_key == sa.bindparam(f"tag_{index}")
        )
        conditions.append(t.id.in_(tagged))
    if has_due_before:
        conditions.append(t.due_date <= sa.bindparam("due_before", type_=UTCDateTime()))
    if has_due_after:
        conditions.append(t.due_date >= sa.bindparam("due_after", type_=UTCDateTime()))
    if overdue is not None:
        is_overdue = sa.and_(t.completed.is_(False), t.due_date < sa.bindparam("now", type_=UTCDateTime()))
        conditions.append(is_overdue if overdue else sa.not_(sa.func.coalesce(is_overdue, False)))
    return tuple(conditions)


@functools.lru_cache(maxsize=512)
def _page_statement(shape: tuple[Any, ...], sort: str, ascending: bool) -> sa.Select:
    direction = sa.asc if ascending else sa.desc
    primary = direction(SORT_KEYS[sort])
    if sort == "due_date":
        primary = primary.nulls_last()  # tasks without a due date come last in both orders
    return (
        sa.select(*PUBLIC_SELECTED)
        .where(*_conditions(shape))
        .order_by(primary, direction(task_table.c.id))  # ties broken by id: pages are stable
        .limit(sa.bindparam("limit"))
        .offset(sa.bindparam("offset"))
    )


@functools.lru_cache(maxsize=512)
def _count_statement(shape: tuple[Any, ...]) -> sa.Select:
    return sa.select(sa.func.count()).select_from(task_table).where(*_conditions(shape))


async def list_tasks(
    db: Database, filters: TaskFilter, sort: str, ascending: bool, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """One page (public fields only) and the total matching count, both from the same filter."""
    shape, parameters = filters.shape(), filters.parameters()
    async with db.connect() as connection:
        rows = await connection.fetch_all(
            _page_statement(shape, sort, ascending), {**parameters, "limit": limit, "offset": offset}
        )
        if (offset == 0 or rows) and len(rows) < limit:
            total = offset + len(rows)  # the last page: no count query needed
        else:
            total = await connection.fetch_value(_count_statement(shape), parameters)
    return rows, total


DELETE_COMPLETED = sa.delete(task_table).where(
    task_table.c.user_id == sa.bindparam("owner"), task_table.c.completed.is_(True)
)


async def delete_completed(db: Database, user_id: str) -> int:
    async with db.connect() as connection:
        return await connection.execute(DELETE_COMPLETED, {"owner": user_id})


def _count_where(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


# All the counters in one statement.
STATS = sa.select(
    sa.func.count().label("total"),
    _count_where(task_table.c.completed.is_(True)).label("completed"),
    _count_where(
        sa.and_(task_table.c.completed.is_(False), task_table.c.due_date < sa.bindparam("now", type_=UTCDateTime()))
    ).label("overdue"),
    *(_count_where(task_table.c.priority == priority).label(priority) for priority in PRIORITIES),
).where(task_table.c.user_id == sa.bindparam("owner"))


async def stats(db: Database, user_id: str) -> dict[str, Any]:
    async with db.connect() as connection:
        row = await connection.fetch_one(STATS, {"owner": user_id, "now": utc_now()})
    return {
        "total": row["total"],
        "completed": row["completed"],
        "pending": row["total"] - row["completed"],
        "overdue": row["overdue"],
        "by_priority": {priority: row[priority] for priority in PRIORITIES},
    }


_TAG_USES = sa.func.count().label("count")
# Tags grouped case-insensitively, most used first, then alphabetically.
TAG_COUNTS = (
    sa.select(sa.func.min(tag_table.c.tag).label("tag"), _TAG_USES)
    .where(tag_table.c.user_id == sa.bindparam("owner"))
    .group_by(tag_table.c.tag_key)
    .order_by(_TAG_USES.desc(), tag_table.c.tag_key)
)


async def tag_counts(db: Database, user_id: str) -> list[dict[str, Any]]:
    async with db.connect() as connection:
        return await connection.fetch_all(TAG_COUNTS, {"owner": user_id})


class Precondition:
    """An If-Match header: `*`, or a list of ETags (`"<id>.<version>"`). Absent means unconditional."""

    def __init__(self, header: str | None):
        self.header = header
        self._tags = {tag.strip() for tag in header.split(",")} if header else set()

    def versions(self, task_id: int) -> list[int] | None:
        """The versions the row may have for the write to happen; None: any (no If-Match, or `*`)."""
        if self.header is None or "*" in self._tags:
            return None
        prefix = f'"{task_id}.'
        versions = [tag[len(prefix):-1] for tag in self._tags if tag.startswith(prefix) and tag.endswith('"')]
        return sorted({int(v) for v in versions if v.isdigit() and len(v) < 10})


# Statements are built once (the values come as parameters): rebuilding and re-keying a statement
# on every call cost SQLAlchemy more CPU than the query itself (bench: 260 -> 120 us per read).
FIND_TASK = sa.select(*SELECTED_COLUMNS).where(
    task_table.c.id == sa.bindparam("task_id"), task_table.c.user_id == sa.bindparam("user_id")
)


INSERTED_COLUMNS = (*PUBLIC_COLUMNS[1:], "version")  # all but the id, which the database assigns
INSERT_TASK = (
    sa.insert(task_table).values({name: sa.bindparam(name) for name in INSERTED_COLUMNS}).returning(task_table.c.id)
)
DELETE_TAGS = sa.delete(tag_table).where(tag_table.c.task_id == sa.bindparam("task_id"))


@functools.lru_cache(maxsize=64)
def _insert_tags_statement(count: int) -> sa.Insert:
    rows = [
        {"task_id": sa.bindparam("task_id"), "user_id": sa.bindparam("owner"),
         "tag": sa.bindparam(f"tag_{index}"), "tag_key": sa.bindparam(f"tag_key_{index}")}
        for index in range(count)
    ]
    return sa.insert(tag_table).values(rows)


async def _find(connection: Connection, user_id: str, task_id: int) -> dict[str, Any] | None:
    if not 1 <= task_id <= MAX_TASK_ID:
        return None
    return await connection.fetch_one(FIND_TASK, {"task_id": task_id, "user_id": user_id})


async def _explain_miss(connection: Connection, user_id: str, task_id: int) -> None:
    """A conditional write matched no row: the task is not the caller's, or If-Match is stale."""
    if await _find(connection, user_id, task_id) is None:
        raise TaskNotFound()
    raise PreconditionFailed()


def _completion(completed: Any) -> str | None:
    """What a change does to completed/completed_at: flip, set (true), clear (false), or nothing."""
    if completed is FLIP:
        return "flip"
    if completed is True:
        return "set"
    if completed is False:
        return "clear"
    return None


def _count(values: list[Any] | None) -> int | None:
    return None if values is None else len(values)


def _numbered(prefix: str, values: list[Any] | None) -> dict[str, Any]:
    """Values for `_numbered_binds`: {"tag_0": ..., "tag_1": ...}."""
    return {f"{prefix}_{index}": value for index, value in enumerate(values or ())}


def _numbered_binds(prefix: str, count: int) -> list[sa.BindParameter]:
    """`IN (:tag_0, :tag_1)`: one bind per value, so a statement compiles once per count (an
    expanding IN would be re-rendered on every call)."""
    return [sa.bindparam(f"{prefix}_{index}") for index in range(count)]


def _version_matches(version_count: int | None) -> list[sa.ColumnElement[bool]]:
    """If-Match as a condition: the row's version is one of the ETags' (none given: no condition;
    none of them names this task: a condition no row meets)."""
    if version_count is None:
        return []
    if version_count == 0:
        return [sa.false()]
    return [task_table.c.version.in_(_numbered_binds("if_match", version_count))]


@functools.lru_cache(maxsize=256)
def _delete_statement(version_count: int | None) -> sa.Delete:
    t = task_table.c
    return sa.delete(task_table).where(
        t.id == sa.bindparam("task_id"), t.user_id == sa.bindparam("owner"), *_version_matches(version_count)
    )


@functools.lru_cache(maxsize=256)
def _update_statement(fields: tuple[str, ...], completion: str | None, version_count: int | None) -> sa.Update:
    """The UPDATE for one shape of change, built once (the values come as parameters): the client's
    fields plus what the server owns (completed_at, updated_at, version), written as expressions
    of the row's current values, so no read is needed first."""
    t = task_table.c
    now = sa.bindparam("now", type_=UTCDateTime())
    values: dict[str, Any] = {field: sa.bindparam(f"new_{field}", type_=t[field].type) for field in fields}
    if completion == "flip":
        values["completed"] = sa.not_(t.completed)
        values["completed_at"] = sa.case((t.completed, sa.null()), else_=now)
    elif completion == "set":
        values["completed_at"] = sa.case((t.completed, t.completed_at), else_=now)
    elif completion == "clear":
        values["completed_at"] = None
    values["updated_at"] = sa.case((t.updated_at < now, now), else_=t.updated_at)  # never backwards
    values["version"] = t.version + 1
    where = [t.id == sa.bindparam("task_id"), t.user_id == sa.bindparam("owner")]  # not `user_id`: a column name
    return sa.update(task_table).where(*where, *_version_matches(version_count)).values(values).returning(*SELECTED_COLUMNS)


async def _insert_tags(connection: Connection, task: Any) -> None:
    """All of a task's tag rows in one multi-row INSERT: one round trip."""
    if task["tags"]:
        rows = {}
        for index, tag in enumerate(task["tags"]):
            rows.update({f"tag_{index}": tag, f"tag_key_{index}": tag.lower()})
        await connection.execute(_insert_tags_statement(len(task["tags"])), {"task_id": task["id"], "owner": task["user_id"], **rows})
