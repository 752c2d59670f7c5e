"""Reads over many tasks: the listing (filters, orders, the manual order as a tree, pages), stats
and tag counts. Every statement is built once per shape (lru_cached builders) with bind parameters,
like store.py's; the page and the total are built from the same conditions, so they never disagree.
"""
import functools
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

import dates
import settings_store
import tree
from db import Database
from models import PRIORITIES, UTCDateTime
from store import check_ids, check_scope, utc_now
from task_sql import PUBLIC_SELECTED, numbered, numbered_binds, tag_table, task_table


PRIORITY_RANK = sa.case({"low": 1, "medium": 2, "high": 3}, value=task_table.c.priority)  # high > medium > low
SORT_KEYS = {
    "created_at": task_table.c.created_at,
    "updated_at": task_table.c.updated_at,
    "due_date": task_table.c.due_date,
    "priority": PRIORITY_RANK,
    "title": sa.func.lower(task_table.c.title),
    "position": None,  # the manual order, as a tree (tree.tree_order)
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
    list_id: int | None = None
    parent_id: int | None = None
    top_level_only: bool = False
    due_on: date | None = None
    zone_name: str | None = None  # the zone of `due_on`; None: the user's setting

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
            self.due_on is not None,
            self.list_id is not None,
            "top" if self.top_level_only else self.parent_id is not None,
        )

    def parameters(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "owner": self.user_id,
            "completed": self.completed,
            "priorities": self.priorities,
            "due_before": self.due_before,
            "due_after": self.due_after,
            "now": utc_now(),
            "list_id": self.list_id,
            "parent_id": self.parent_id,
        }
        if self.due_on is not None:
            values["due_on_day"] = self.due_on.isoformat()
            values["due_on_start"], values["due_on_end"] = dates.day_bounds(self.due_on, self.zone_name or dates.UTC_NAME)
        if self.text:
            # % and _ (and the escape character /) in the text match literally.
            values["pattern"] = "%" + self.text.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"
        values.update(numbered("priority", self.priorities and list(dict.fromkeys(self.priorities))))
        values.update(numbered("tag", self.tag_keys()))
        return values


@functools.lru_cache(maxsize=512)
def _conditions(shape: tuple[Any, ...]) -> tuple[sa.ColumnElement[bool], ...]:
    has_completed, has_text, priority_count, tag_count, has_due_before, has_due_after, overdue, has_due_on, has_list, parent = shape
    t = task_table.c
    conditions = [t.user_id == sa.bindparam("owner")]
    if has_list:
        conditions.append(t.list_id == sa.bindparam("list_id"))
    if parent == "top":
        conditions.append(t.parent_id.is_(None))
    elif parent:
        conditions.append(t.parent_id == sa.bindparam("parent_id"))
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
        conditions.append(t.priority.in_(numbered_binds("priority", priority_count)))
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
    if has_due_on:  # all-day tasks of that date, and timed tasks due during that day in the zone
        timed_that_day = sa.and_(
            t.all_day.is_(None),
            t.due_date >= sa.bindparam("due_on_start", type_=UTCDateTime()),
            t.due_date < sa.bindparam("due_on_end", type_=UTCDateTime()),
        )
        conditions.append(sa.or_(t.all_day == sa.bindparam("due_on_day", type_=sa.String), timed_that_day))
    return tuple(conditions)


@functools.lru_cache(maxsize=512)
def _page_statement(shape: tuple[Any, ...], sort: str, ascending: bool) -> sa.Select:
    if sort == "position":
        return _tree_page_statement(shape)
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


def _tree_page_statement(shape: tuple[Any, ...]) -> sa.Select:
    """The manual order as a tree, in one query: every task of the list (of every list, in the
    lists' order, without `list_id`) with its path (tree.tree_order), the filters applied to the
    rows, sorted by path. A filtered-out task's matching subtasks still follow where it would be."""
    in_one_list = shape[-2]
    ordered = tree.tree_order(in_one_list)
    return (
        sa.select(*PUBLIC_SELECTED)
        .select_from(task_table.join(ordered, ordered.c.id == task_table.c.id))
        .where(*_conditions(shape))
        .order_by(ordered.c.path)
        .limit(sa.bindparam("limit"))
        .offset(sa.bindparam("offset"))
    )


@functools.lru_cache(maxsize=512)
def _count_statement(shape: tuple[Any, ...]) -> sa.Select:
    return sa.select(sa.func.count()).select_from(task_table).where(*_conditions(shape))


async def list_tasks(
    db: Database, filters: TaskFilter, sort: str, ascending: bool, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """One page (public fields only) and the total matching count, both from the same filter. A
    `list_id` / `parent_id` that is not the caller's is a 404 (looked up only when nothing matched)."""
    check_ids(filters.list_id, filters.parent_id)
    async with db.connect() as connection:
        if filters.due_on is not None and filters.zone_name is None:
            filters.zone_name = await settings_store.zone_of(connection, filters.user_id)
        shape, parameters = filters.shape(), filters.parameters()
        rows = await connection.fetch_all(
            _page_statement(shape, sort, ascending), {**parameters, "limit": limit, "offset": offset}
        )
        rows = [dates.show_due(row) for row in rows]
        if (offset == 0 or rows) and len(rows) < limit:
            total = offset + len(rows)  # the last page: no count query needed
        else:
            total = await connection.fetch_value(_count_statement(shape), parameters)
        if total == 0:
            await check_scope(connection, filters.user_id, filters.list_id, filters.parent_id)
    return rows, total


def _count_where(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


# All the counters in one statement (of all tasks, or of one list's).
STATS = sa.select(
    sa.func.count().label("total"),
    _count_where(task_table.c.completed.is_(True)).label("completed"),
    _count_where(
        sa.and_(task_table.c.completed.is_(False), task_table.c.due_date < sa.bindparam("now", type_=UTCDateTime()))
    ).label("overdue"),
    *(_count_where(task_table.c.priority == priority).label(priority) for priority in PRIORITIES),
).where(task_table.c.user_id == sa.bindparam("owner"))
LIST_STATS = STATS.where(task_table.c.list_id == sa.bindparam("list_id"))


async def stats(db: Database, user_id: str, list_id: int | None = None) -> dict[str, Any]:
    check_ids(list_id, None)
    async with db.connect() as connection:
        statement = STATS if list_id is None else LIST_STATS
        row = await connection.fetch_one(statement, {"owner": user_id, "now": utc_now(), "list_id": list_id})
        if row["total"] == 0:
            await check_scope(connection, user_id, list_id, None)
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
