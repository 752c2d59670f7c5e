"""Every SQL statement about tasks. Ownership is in every WHERE clause, never checked after loading.

Rows come back as plain dicts (no ORM objects): the routes serialise them directly.
"""
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from errors import Conflict, PreconditionFailed, TaskNotFound
from models import PRIORITIES, Task, TaskTag

task_table: sa.Table = Task.__table__
tag_table: sa.Table = TaskTag.__table__
PUBLIC_COLUMNS = (
    "id", "user_id", "title", "description", "completed", "priority", "tags",
    "due_date", "completed_at", "created_at", "updated_at",
)
SELECTED_COLUMNS = [task_table.c[name] for name in PUBLIC_COLUMNS] + [task_table.c.version]
# The largest id the `task.id` column can hold; a larger one cannot name a task.
MAX_TASK_ID = 2**31 - 1
# Concurrent writers without If-Match retry this often before the request answers 409.
WRITE_ATTEMPTS = 5

Changes = dict[str, Any]


def etag_of(task: dict[str, Any]) -> str:
    return f'"{task["id"]}.{task["version"]}"'


def public(task: dict[str, Any]) -> dict[str, Any]:
    return {name: task[name] for name in PUBLIC_COLUMNS}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def get_task(session: Session, user_id: str, task_id: int, *, for_update: bool = False) -> dict[str, Any]:
    task = _find(session, user_id, task_id, for_update=for_update)
    if task is None:
        raise TaskNotFound()
    return task


def create_task(session: Session, user_id: str, fields: Changes) -> dict[str, Any]:
    task = insert_task(session, user_id, fields)
    session.commit()
    return task


def insert_task(session: Session, user_id: str, fields: Changes) -> dict[str, Any]:
    """The INSERTs of a new task, in the caller's transaction (not committed)."""
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
    task["id"] = session.exec(sa.insert(task_table).values(task).returning(task_table.c.id)).scalar_one()
    _replace_tags(session, task)
    return task


def modify_task(
    session: Session,
    user_id: str,
    task_id: int,
    change: Callable[[dict[str, Any]], Changes],
    if_match: "Precondition",
) -> dict[str, Any]:
    """Apply `change(current)` as one conditional UPDATE (compare-and-set on `version`).

    With If-Match, a version that moved on is a 412. Without it, a concurrent write makes us
    re-read and re-apply (last write wins) rather than overwrite what we did not see.
    """
    for _ in range(WRITE_ATTEMPTS):
        # The row stays locked until commit (SQLite: the whole database), so concurrent writers queue
        # here and each reads the version the previous one wrote: the update below cannot lose.
        current = get_task(session, user_id, task_id, for_update=True)
        if_match.check(current)
        values = _with_bookkeeping(current, change(current))
        updated = session.exec(
            sa.update(task_table)
            .where(_owned(user_id, task_id), task_table.c.version == current["version"])
            .values(values)
        )
        if updated.rowcount == 1:
            task = {**current, **values}
            if "tags" in values:
                _replace_tags(session, task)
            session.commit()
            return task
        session.rollback()
    raise Conflict("The task is being changed by other requests right now. Retry the request.")


def delete_task(session: Session, user_id: str, task_id: int, if_match: "Precondition") -> None:
    if not 1 <= task_id <= MAX_TASK_ID:  # SQLite cannot even bind an id past 2**63 (OverflowError, a 500)
        raise TaskNotFound()
    condition = _owned(user_id, task_id)
    if if_match.is_conditional:
        current = get_task(session, user_id, task_id)
        if_match.check(current)
        condition = sa.and_(condition, task_table.c.version == current["version"])
    deleted = session.exec(sa.delete(task_table).where(condition))
    session.commit()
    if deleted.rowcount == 1:
        return
    # Gone, or changed between the check and the delete: say which.
    if if_match.is_conditional and _find(session, user_id, task_id) is not None:
        raise PreconditionFailed()
    raise TaskNotFound()


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
    session: Session, filters: TaskFilter, order_by: Iterable[sa.ColumnElement[Any]], limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """One page and the total matching count, both from the same filter."""
    where = filters.conditions()
    page = session.exec(
        sa.select(*SELECTED_COLUMNS).where(*where).order_by(*order_by).limit(limit).offset(offset)
    ).mappings().all()
    if offset == 0 and len(page) < limit:
        total = len(page)  # the whole result fits in this page: no count query needed
    else:
        total = session.exec(sa.select(sa.func.count()).select_from(task_table).where(*where)).scalar_one()
    return [dict(row) for row in page], total


def delete_completed(session: Session, user_id: str) -> int:
    deleted = session.exec(
        sa.delete(task_table).where(task_table.c.user_id == user_id, task_table.c.completed.is_(True))
    )
    session.commit()
    return deleted.rowcount


def stats(session: Session, user_id: str) -> dict[str, Any]:
    """All the counters in one statement."""
    t = task_table.c

    def count_where(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

    row = session.exec(
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


def tag_counts(session: Session, user_id: str) -> list[dict[str, Any]]:
    """Tags grouped case-insensitively, most used first, then alphabetically."""
    count = sa.func.count().label("count")
    rows = session.exec(
        sa.select(sa.func.min(tag_table.c.tag).label("tag"), count)
        .where(tag_table.c.user_id == user_id)
        .group_by(tag_table.c.tag_key)
        .order_by(count.desc(), tag_table.c.tag_key)
    ).all()
    return [{"tag": row.tag, "count": row.count} for row in rows]


class Precondition:
    """An If-Match header: `*`, or a list of ETags. Absent means unconditional."""

    def __init__(self, header: str | None):
        self.header = header
        self._tags = {tag.strip() for tag in header.split(",")} if header else set()

    @property
    def is_conditional(self) -> bool:
        return self.header is not None

    def check(self, task: dict[str, Any]) -> None:
        if self.is_conditional and "*" not in self._tags and etag_of(task) not in self._tags:
            raise PreconditionFailed()


def _owned(user_id: str, task_id: int) -> sa.ColumnElement[bool]:
    return sa.and_(task_table.c.id == task_id, task_table.c.user_id == user_id)


def _find(session: Session, user_id: str, task_id: int, *, for_update: bool = False) -> dict[str, Any] | None:
    if not 1 <= task_id <= MAX_TASK_ID:
        return None
    query = sa.select(*SELECTED_COLUMNS).where(_owned(user_id, task_id))
    if for_update and session.get_bind().dialect.name == "sqlite":
        # SQLite has no FOR UPDATE: a no-op UPDATE opens the transaction with the write lock (waiting
        # its turn, busy_timeout), so the read below is the latest and nobody writes until we commit.
        session.exec(sa.update(task_table).where(_owned(user_id, task_id)).values(version=task_table.c.version))
    elif for_update:
        query = query.with_for_update()
    row = session.exec(query).mappings().first()
    return dict(row) if row is not None else None


def _with_bookkeeping(current: dict[str, Any], changes: Changes) -> Changes:
    """Add what the server owns: completed_at, updated_at (never backwards), version."""
    values = dict(changes)
    now = utc_now()
    if "completed" in values and values["completed"] != current["completed"]:
        values["completed_at"] = now if values["completed"] else None
    values["updated_at"] = max(now, current["updated_at"] + timedelta(microseconds=1))
    values["version"] = current["version"] + 1
    return values


def _replace_tags(session: Session, task: dict[str, Any]) -> None:
    session.exec(sa.delete(tag_table).where(tag_table.c.task_id == task["id"]))
    if task["tags"]:
        session.exec(
            sa.insert(tag_table),
            params=[
                {"task_id": task["id"], "user_id": task["user_id"], "tag_key": tag.lower(), "tag": tag}
                for tag in task["tags"]
            ],
        )
