"""Every SQL statement about tasks. Ownership is in every WHERE clause, never checked after loading.

Writes are single statements where they can be: `UPDATE ... WHERE id AND user_id [AND version]
RETURNING` is both the ownership check and the compare-and-set of If-Match, atomic on both
databases (PostgreSQL locks the row and re-checks the WHERE after a concurrent commit; SQLite
runs one writer at a time). Only a change of tags needs a transaction (the task_tag rows).
Rows come back as plain dicts (no ORM objects): the routes serialise them directly.
"""
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from db import Database
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


def get_task(db: Database, user_id: str, task_id: int) -> dict[str, Any]:
    with db.connect() as connection:
        task = _find(connection, user_id, task_id)
    if task is None:
        raise TaskNotFound()
    return task


def create_task(db: Database, user_id: str, fields: Changes) -> dict[str, Any]:
    with db.transaction() if fields.get("tags") else db.connect() as connection:
        return insert_task(connection, user_id, fields)


def insert_task(connection: sa.Connection, user_id: str, fields: Changes) -> dict[str, Any]:
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
    task["id"] = connection.execute(sa.insert(task_table).values(task).returning(task_table.c.id)).scalar_one()
    _insert_tags(connection, task)
    return task


def modify_task(db: Database, user_id: str, task_id: int, changes: Changes, if_match: "Precondition") -> dict[str, Any]:
    """Apply `changes` (`completed` may be FLIP) in one conditional UPDATE; 404 or 412 if it matches
    no row. Without If-Match the last write wins; with it, a version that moved on is a 412."""
    if not 1 <= task_id <= MAX_TASK_ID:
        raise TaskNotFound()
    statement = (
        sa.update(task_table)
        .where(_owned(user_id, task_id), *if_match.conditions(task_id))
        .values(_with_bookkeeping(changes))
        .returning(*SELECTED_COLUMNS)
    )
    with db.transaction() if "tags" in changes else db.connect() as connection:
        row = connection.execute(statement).mappings().first()
        if row is not None and "tags" in changes:
            _delete_tags(connection, task_id)
            _insert_tags(connection, row)
        if row is None:
            _explain_miss(connection, user_id, task_id)
    return dict(row)


def delete_task(db: Database, user_id: str, task_id: int, if_match: "Precondition") -> None:
    if not 1 <= task_id <= MAX_TASK_ID:
        raise TaskNotFound()
    with db.connect() as connection:  # task_tag rows go with it (ON DELETE CASCADE)
        deleted = connection.execute(
            sa.delete(task_table).where(_owned(user_id, task_id), *if_match.conditions(task_id))
        )
        if deleted.rowcount == 0:
            _explain_miss(connection, user_id, task_id)


@dataclass
class TaskFilter:
    """The listing's filters; `conditions()` is the one place they become SQL, for the page and
    the count alike."""

    user_id: str
    completed: bool | None = None
    text: str | None = None
    priorities: list[str] | None = None
    tags: list[str] | None = None
    due_before: datetime | None = None
    due_after: datetime | None = None
    overdue: bool | None = None

    def conditions(self) -> list[sa.ColumnElement[bool]]:
        t = task_table.c
        conditions = [t.user_id == self.user_id]
        if self.completed is not None:
            conditions.append(t.completed == self.completed)
        if self.text:
            # % and _ (and the escape character /) in the text match literally. The database lowers
            # both sides: Python's lower() folds more than SQLite's (ASCII only), so a needle lowered
            # here would never match a non-ASCII capital ("École") there.
            escaped = self.text.replace("/", "//").replace("%", "/%").replace("_", "/_")
            pattern = sa.func.lower(sa.literal(f"%{escaped}%", sa.String))
            conditions.append(
                sa.or_(
                    sa.func.lower(t.title).like(pattern, escape="/"),
                    sa.func.lower(t.description).like(pattern, escape="/"),
                )
            )
        if self.priorities:
            conditions.append(t.priority.in_(self.priorities))
        for tag in dict.fromkeys(tag.strip().lower() for tag in self.tags or ()):
            tagged = sa.select(tag_table.c.task_id).where(tag_table.c.user_id == self.user_id, tag_table.c.tag_key == tag)
            conditions.append(t.id.in_(tagged))
        if self.due_before is not None:
            conditions.append(t.due_date <= self.due_before)
        if self.due_after is not None:
            conditions.append(t.due_date >= self.due_after)
        if self.overdue is not None:
            is_overdue = sa.and_(t.completed.is_(False), t.due_date < utc_now())
            conditions.append(is_overdue if self.overdue else sa.not_(sa.func.coalesce(is_overdue, False)))
        return conditions


def list_tasks(
    db: Database, filters: TaskFilter, order_by: list[sa.ColumnElement[Any]], limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """One page (public fields only) and the total matching count, both from the same filter."""
    where = filters.conditions()
    with db.connect() as connection:
        rows = connection.execute(
            sa.select(*PUBLIC_SELECTED).where(*where).order_by(*order_by).limit(limit).offset(offset)
        ).all()
        if (offset == 0 or rows) and len(rows) < limit:
            total = offset + len(rows)  # the last page: no count query needed
        else:
            total = connection.execute(sa.select(sa.func.count()).select_from(task_table).where(*where)).scalar_one()
    return [dict(zip(PUBLIC_COLUMNS, row)) for row in rows], total


def delete_completed(db: Database, user_id: str) -> int:
    with db.connect() as connection:
        deleted = connection.execute(
            sa.delete(task_table).where(task_table.c.user_id == user_id, task_table.c.completed.is_(True))
        )
    return deleted.rowcount


def stats(db: Database, user_id: str) -> dict[str, Any]:
    """All the counters in one statement."""
    t = task_table.c

    def count_where(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

    with db.connect() as connection:
        row = connection.execute(
            sa.select(
                sa.func.count().label("total"),
                count_where(t.completed.is_(True)).label("completed"),
                count_where(sa.and_(t.completed.is_(False), t.due_date < utc_now())).label("overdue"),
                *(count_where(t.priority == priority).label(priority) for priority in PRIORITIES),
            ).where(t.user_id == user_id)
        ).one()
    return {
        "total": row.total,
        "completed": row.completed,
        "pending": row.total - row.completed,
        "overdue": row.overdue,
        "by_priority": {priority: getattr(row, priority) for priority in PRIORITIES},
    }


def tag_counts(db: Database, user_id: str) -> list[dict[str, Any]]:
    """Tags grouped case-insensitively, most used first, then alphabetically."""
    count = sa.func.count().label("count")
    with db.connect() as connection:
        rows = connection.execute(
            sa.select(sa.func.min(tag_table.c.tag).label("tag"), count)
            .where(tag_table.c.user_id == user_id)
            .group_by(tag_table.c.tag_key)
            .order_by(count.desc(), tag_table.c.tag_key)
        ).all()
    return [{"tag": row.tag, "count": row.count} for row in rows]


class Precondition:
    """An If-Match header: `*`, or a list of ETags (`"<id>.<version>"`). Absent means unconditional."""

    def __init__(self, header: str | None):
        self.header = header
        self._tags = {tag.strip() for tag in header.split(",")} if header else set()

    def conditions(self, task_id: int) -> list[sa.ColumnElement[bool]]:
        """What the row must also match for the write to happen: its version is one of the tags'."""
        if self.header is None or "*" in self._tags:
            return []
        prefix = f'"{task_id}.'
        versions = [tag[len(prefix):-1] for tag in self._tags if tag.startswith(prefix) and tag.endswith('"')]
        return [task_table.c.version.in_([int(v) for v in versions if v.isdigit() and len(v) < 10])]


def _owned(user_id: str, task_id: int) -> sa.ColumnElement[bool]:
    return sa.and_(task_table.c.id == task_id, task_table.c.user_id == user_id)


def _find(connection: sa.Connection, user_id: str, task_id: int) -> dict[str, Any] | None:
    if not 1 <= task_id <= MAX_TASK_ID:
        return None
    row = connection.execute(sa.select(*SELECTED_COLUMNS).where(_owned(user_id, task_id))).mappings().first()
    return dict(row) if row is not None else None


def _explain_miss(connection: sa.Connection, user_id: str, task_id: int) -> None:
    """A conditional write matched no row: the task is not the caller's, or If-Match is stale."""
    if _find(connection, user_id, task_id) is None:
        raise TaskNotFound()
    raise PreconditionFailed()


def _with_bookkeeping(changes: Changes) -> dict[str, Any]:
    """The SET clause: the client's changes plus what the server owns (completed_at, updated_at,
    version), written as expressions of the row's current values, so no read is needed first."""
    t = task_table.c
    now = sa.literal(utc_now(), UTCDateTime())
    values: dict[str, Any] = dict(changes)
    if changes.get("completed") is FLIP:
        values["completed"] = sa.not_(t.completed)
        values["completed_at"] = sa.case((t.completed, sa.null()), else_=now)
    elif changes.get("completed") is True:
        values["completed_at"] = sa.case((t.completed, t.completed_at), else_=now)
    elif changes.get("completed") is False:
        values["completed_at"] = None
    values["updated_at"] = sa.case((t.updated_at < now, now), else_=t.updated_at)  # never backwards
    values["version"] = t.version + 1
    return values


def _delete_tags(connection: sa.Connection, task_id: int) -> None:
    connection.execute(sa.delete(tag_table).where(tag_table.c.task_id == task_id))


def _insert_tags(connection: sa.Connection, task: Any) -> None:
    if task["tags"]:  # one multi-row INSERT: one round trip whatever the number of tags
        connection.execute(
            sa.insert(tag_table).values(
                [
                    {"task_id": task["id"], "user_id": task["user_id"], "tag_key": tag.lower(), "tag": tag}
                    for tag in task["tags"]
                ]
            )
        )
