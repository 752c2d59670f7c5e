"""Counts the writes keep (migration 0015: triggers in every write's transaction), and the reads they
answer: stats, /api/tags, a list's task counts, and the total of a listing filtered by nothing but
state, priority, list and one tag. Each reads a few rows per list of the caller's
(access.lists_of_caller), however many tasks those lists hold. Everything else is counted from the
tasks (listing_sql.count_statement).
"""
import functools
from typing import Any

import sqlalchemy as sa

import access
from models import PRIORITIES, ListTagCount, ListTaskCount, Task, UTCDateTime
from task_sql import numbered_binds

task_counts: sa.Table = ListTaskCount.__table__
tag_counts: sa.Table = ListTagCount.__table__
task_table: sa.Table = Task.__table__

STATES = ("open", "done")


def _counter(state: str, priority: str) -> sa.Column:
    return task_counts.c[f"{state}_{priority}"]


def _sum(*terms: sa.ColumnElement[int]) -> sa.ColumnElement[int]:
    return sa.func.coalesce(sa.func.sum(sum(terms[1:], terms[0])), 0)


ALL_TASKS = tuple(_counter(state, priority) for state in STATES for priority in PRIORITIES)
COMPLETED_TASKS = tuple(_counter("done", priority) for priority in PRIORITIES)


def of_list(counters: tuple[sa.Column, ...], list_id: sa.ColumnElement) -> sa.ScalarSelect:
    """The sum of these counters of one list (a column of the outer statement: lists.py's counts)."""
    return sa.select(_sum(*counters)).where(task_counts.c.list_id == list_id).scalar_subquery()


def _in_scope(list_id_column: sa.ColumnElement, one_list: bool) -> list[sa.ColumnElement[bool]]:
    conditions = [access.may(access.SEE, list_id_column)]
    if one_list:
        conditions.append(list_id_column == sa.bindparam("list_id", type_=sa.Integer))
    return conditions


@functools.lru_cache(maxsize=4)
def stats_statement(one_list: bool) -> sa.Select:
    """Total, completed and by priority from the kept counts; overdue (it changes with the clock, not
    with a write) counted from the index of open tasks by due date: only the overdue ones are read."""
    t = task_table.c
    overdue = (
        sa.select(sa.func.count())
        .where(*_in_scope(t.list_id, one_list), t.completed.is_(False), t.due_date < sa.bindparam("now", type_=UTCDateTime()))
        .scalar_subquery()
    )
    return sa.select(
        _sum(*ALL_TASKS).label("total"),
        _sum(*COMPLETED_TASKS).label("completed"),
        overdue.label("overdue"),
        *(_sum(_counter("open", priority), _counter("done", priority)).label(priority) for priority in PRIORITIES),
    ).where(*_in_scope(task_counts.c.list_id, one_list))


# Every task of the caller's lists (queries.py: a big user's listing reads their lists its own way).
TASKS_SEEN = sa.select(_sum(*ALL_TASKS)).where(*_in_scope(task_counts.c.list_id, False))

# PostgreSQL: the file of the table of counts, a new one when the table is emptied (TRUNCATE) or the
# database made again, where `changes` start again from 0 (so the sums seen before mean nothing).
COUNTS_FILE = sa.func.pg_relation_filenode(sa.literal_column("'list_task_count'::regclass"))

# The caller's lists, in id order, each with the sum of its `changes` (search_counts.py).
_VISIBLE = access.lists_of_caller(access.SEE).subquery("visible")
LISTS_AND_CHANGES = sa.select(
    _VISIBLE.c.list_id,
    sa.select(sa.cast(sa.func.coalesce(sa.func.sum(task_counts.c.changes), 0), sa.BigInteger))
    .where(task_counts.c.list_id == _VISIBLE.c.list_id)
    .scalar_subquery()
    .label("changes"),
    COUNTS_FILE.label("counts_file"),
).order_by(_VISIBLE.c.list_id)


def changes_of(lists: tuple[sa.BindParameter, ...]) -> sa.ScalarSelect:
    """The sum of the `changes` of these lists (bound values)."""
    total = sa.cast(sa.func.coalesce(sa.func.sum(task_counts.c.changes), 0), sa.BigInteger)
    return sa.select(total).where(task_counts.c.list_id.in_(lists)).scalar_subquery()


# Each spelling's uses in the caller's lists (the sum of its rows), the spellings in use only.
_SPELLINGS = (
    sa.select(tag_counts.c.tag_key, tag_counts.c.tag, sa.func.sum(tag_counts.c.tasks).label("uses"))
    .where(access.may(access.SEE, tag_counts.c.list_id))
    .group_by(tag_counts.c.tag_key, tag_counts.c.tag)
    .having(sa.func.sum(tag_counts.c.tasks) > 0)
    .subquery("spellings")
)
_TAG_USES = sa.cast(sa.func.sum(_SPELLINGS.c.uses), sa.Integer)  # a sum of sums is numeric on PostgreSQL
# Tags grouped case-insensitively, each in its first spelling in use, most used first, then alphabetically.
TAG_COUNTS = (
    sa.select(sa.func.min(_SPELLINGS.c.tag).label("tag"), _TAG_USES.label("count"))
    .group_by(_SPELLINGS.c.tag_key)
    .order_by(_TAG_USES.desc(), _SPELLINGS.c.tag_key)
)


def answers(shape: tuple[Any, ...]) -> bool:
    """Whether the kept counts give this listing's total: no filter but state, priorities and list,
    or one tag and the list."""
    (has_completed, has_text, priority_count, tag_count, has_due_before, has_due_after, overdue, has_due_on,
     _has_list, parent, assignee, _many) = shape
    if has_text or has_due_before or has_due_after or overdue is not None or has_due_on or parent or assignee:
        return False
    return tag_count == 0 or (tag_count == 1 and not has_completed and not priority_count)


@functools.lru_cache(maxsize=64)
def count_statement(shape: tuple[Any, ...]) -> sa.Select:
    """The total of a listing `answers` says the kept counts give, with the listing's parameters."""
    has_completed, priority_count, tag_count, has_list = shape[0], shape[2], shape[3], shape[8]
    if tag_count:
        return sa.select(sa.func.coalesce(sa.func.sum(tag_counts.c.tasks), 0)).where(
            *_in_scope(tag_counts.c.list_id, has_list), tag_counts.c.tag_key == sa.bindparam("tag_0")
        )
    wanted = numbered_binds("priority", priority_count)
    terms = []
    for priority in PRIORITIES:
        open_, done = _counter("open", priority), _counter("done", priority)
        term: sa.ColumnElement[int] = open_ + done
        if has_completed:
            term = sa.case((sa.bindparam("completed", type_=sa.Boolean), done), else_=open_)
        if priority_count:
            term = sa.case((sa.literal(priority).in_(wanted), term), else_=0)
        terms.append(term)
    return sa.select(_sum(*terms)).where(*_in_scope(task_counts.c.list_id, has_list))


# A bulk load (the benches' COPY of 100,000s of tasks in one transaction, into a database no service
# reads yet) turns the triggers off and counts once afterwards: counted row by row, a list's row of
# counts was rewritten for every task in the same transaction, each rewrite a version more to step
# over (minutes for 400,000 tasks). Each task loaded is one of its list's `changes`.
BULK_LOAD_STARTS = [
    f"ALTER TABLE {table} DISABLE TRIGGER {counts}_{operation}"
    for table, counts in (("task", "list_task_count"), ("task_tag", "list_tag_count"))
    for operation in ("insert", "update", "delete")
]
_RECOUNTED = ", ".join(
    f"count(*) FILTER (WHERE {'NOT ' if column.name.startswith('open') else ''}completed"
    f" AND priority = '{column.name.split('_')[1]}')"
    for column in ALL_TASKS
)
BULK_LOAD_ENDS = [
    *(statement.replace("DISABLE", "ENABLE") for statement in BULK_LOAD_STARTS),
    "DELETE FROM list_task_count",
    f"INSERT INTO list_task_count (list_id, {', '.join(column.name for column in ALL_TASKS)}, changes)"
    f" SELECT list_id, {_RECOUNTED}, count(*) FROM task GROUP BY list_id",
    "DELETE FROM list_tag_count",
    "INSERT INTO list_tag_count (list_id, tag_key, tag, tasks)"
    " SELECT list_id, tag_key, tag, count(*) FROM task_tag GROUP BY list_id, tag_key, tag",
]
