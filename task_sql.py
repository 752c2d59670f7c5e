"""The statements of task writes, built once (module constants or lru_cached builders keyed by the
shape of a change) with bind parameters for the values; db.Database compiles each once per dialect.
store.py runs them; queries.py builds the reads of the listing from the same column sets."""
import functools
from typing import Any

import sqlalchemy as sa

import access
import dates
import events
import tree
from models import Task, TaskTag, UTCDateTime

task_table: sa.Table = Task.__table__
tag_table: sa.Table = TaskTag.__table__
PUBLIC_COLUMNS = (
    "id", "user_id", "title", "description", "completed", "priority", "tags",
    "due_date", "time_zone", "recurrence", "reminders", "next_occurrence_id",
    "list_id", "parent_id", "position", "assignee_id", "completed_at", "created_at", "updated_at",
)
# `all_day` is read with every task: when set, it is what the task shows as `due_date` (§9).
PUBLIC_SELECTED = [task_table.c[name] for name in (*PUBLIC_COLUMNS, "all_day")]
SERIES_COLUMNS = [task_table.c.series_start, task_table.c.series_index]
SELECTED_COLUMNS = [*PUBLIC_SELECTED, *SERIES_COLUMNS, task_table.c.version]


def public(task: dict[str, Any]) -> dict[str, Any]:
    """A task row as the API shows it."""
    shown = {name: task[name] for name in PUBLIC_COLUMNS}
    shown["due_date"] = dates.due_value(task)
    return shown


# Statements are built once (the values come as parameters): rebuilding and re-keying a statement
# on every call cost SQLAlchemy more CPU than the query itself (bench: 260 -> 120 us per read).
# A task the caller sees (a member of its list, any role: access.py).
FIND_TASK = sa.select(*SELECTED_COLUMNS).where(
    task_table.c.id == sa.bindparam("task_id"), access.may(access.SEE, task_table.c.list_id)
)
FIND_TASK_FOR_UPDATE = FIND_TASK.with_for_update(of=task_table)  # SQLite: no clause; BEGIN IMMEDIATE already serialises
LINK_NEXT_OCCURRENCE = (
    sa.update(task_table)
    .where(task_table.c.id == sa.bindparam("task_id"), task_table.c.next_occurrence_id.is_(None))
    .values(next_occurrence_id=sa.bindparam("next_id"))
)


# All but the id, which the database assigns.
INSERTED_COLUMNS = (*PUBLIC_COLUMNS[1:], "all_day", "series_start", "series_index", "version")


def _guarded_insert() -> sa.Insert:
    """The new task's row, written only if the caller may put tasks in its list: the check is part of
    the write (a member removed a moment ago inserts nothing; store.py then says why)."""
    values = sa.select(*(sa.bindparam(name, type_=task_table.c[name].type) for name in INSERTED_COLUMNS)).where(
        access.may(access.EDIT_TASKS, sa.bindparam("list_id", type_=sa.Integer))
    )
    return sa.insert(task_table).from_select(list(INSERTED_COLUMNS), values)


INSERT_TASK = _guarded_insert().returning(task_table.c.id)


def task_json(row: Any) -> sa.ColumnElement:
    """PostgreSQL: a written row as the API returns it (public fields, in order), for its event's data."""
    times = {"completed_at", "created_at", "updated_at"}
    pairs = []
    for name in PUBLIC_COLUMNS:
        if name == "due_date":  # dates.due_value: the all-day date, else the moment
            value = sa.func.coalesce(row.all_day, events.api_timestamp(row.due_date))
        else:
            value = events.api_timestamp(row[name]) if name in times else row[name]
        pairs += [sa.literal_column(f"'{name}'"), value]
    return sa.func.json_build_object(*pairs, type_=sa.JSON)


_INSERT_TASK_RETURNING_ALL = _guarded_insert().returning(*SELECTED_COLUMNS)
DELETE_TAGS = sa.delete(tag_table).where(tag_table.c.task_id == sa.bindparam("task_id"))


def _tag_values(count: int) -> list[tuple[sa.BindParameter, sa.BindParameter]]:
    """(tag_0, tag_key_0), ...: the values of a task's tag rows (store._insert_tags fills them)."""
    return [(sa.bindparam(f"tag_{index}"), sa.bindparam(f"tag_key_{index}")) for index in range(count)]


@functools.lru_cache(maxsize=64)
def insert_tags_statement(count: int) -> sa.Insert:
    rows = [
        {"task_id": sa.bindparam("task_id"), "list_id": sa.bindparam("list_id"), "tag": tag, "tag_key": key}
        for tag, key in _tag_values(count)
    ]
    return sa.insert(tag_table).values(rows)


@functools.lru_cache(maxsize=64)
def insert_task_with_event(tag_count: int) -> sa.Select:
    """PostgreSQL: a new task, its tag rows and its task.created event in ONE statement (one round
    trip in autocommit: a create with tags took four, BEGIN to COMMIT)."""

    def tag_rows(created: Any) -> sa.Insert:
        tags = sa.values(sa.column("tag", sa.String), sa.column("tag_key", sa.String), name="new_tag").data(
            _tag_values(tag_count)
        )
        rows = sa.select(created.c.id, created.c.list_id, tags.c.tag, tags.c.tag_key).select_from(created.join(tags, sa.true()))
        return sa.insert(tag_table).from_select(["task_id", "list_id", "tag", "tag_key"], rows)

    return events.with_event(_INSERT_TASK_RETURNING_ALL, events.TASK_CREATED, task_json, tag_rows if tag_count else None)


def numbered(prefix: str, values: list[Any] | None) -> dict[str, Any]:
    """Values for `numbered_binds`: {"tag_0": ..., "tag_1": ...}."""
    return {f"{prefix}_{index}": value for index, value in enumerate(values or ())}


def numbered_binds(prefix: str, count: int) -> list[sa.BindParameter]:
    """`IN (:tag_0, :tag_1)`: one bind per value, so a statement compiles once per count (an
    expanding IN would be re-rendered on every call)."""
    return [sa.bindparam(f"{prefix}_{index}") for index in range(count)]


def version_matches(version_count: int | None, table: sa.FromClause = task_table) -> list[sa.ColumnElement[bool]]:
    """If-Match as a condition: the row's version is one of the ETags' (none given: no condition;
    none of them names this task: a condition no row meets)."""
    if version_count is None:
        return []
    if version_count == 0:
        return [sa.false()]
    return [table.c.version.in_(numbered_binds("if_match", version_count))]


@functools.lru_cache(maxsize=256)
def delete_statement(version_count: int | None) -> sa.Delete:
    """The task (if the caller may delete it and If-Match allows) and its whole subtree, in one statement."""
    t = task_table.c
    root = sa.and_(t.id == sa.bindparam("task_id"), access.may(access.EDIT_TASKS, t.list_id), *version_matches(version_count))
    doomed = tree.locked_in_id_order(tree.subtree_of(root, "doomed"), "locked")
    # The subtree is in its root's list. The ids alone let the database find the rows by primary key.
    return sa.delete(task_table).where(t.id.in_(sa.select(doomed.c.id))).returning(t.id, t.list_id)


def now_never_backwards(now: sa.ColumnElement) -> sa.ColumnElement:
    return sa.case((task_table.c.updated_at < now, now), else_=task_table.c.updated_at)


_moved_below = tree.subtree_of(task_table.c.parent_id == sa.bindparam("task_id"), "moved")
# A task moved to another list: its subtasks (all levels) follow it there, and so do their tag rows
# (RELIST_TAGS, for the task and its subtree).
RELIST_SUBTREE = (
    sa.update(task_table)
    .where(task_table.c.id.in_(sa.select(_moved_below.c.id)))
    .values(
        list_id=sa.bindparam("new_list_id"),
        # An assignee who may not work on the destination list's tasks loses the assignment (§12).
        assignee_id=sa.case(
            (access.assignable(sa.bindparam("new_list_id", type_=sa.Integer), task_table.c.assignee_id), task_table.c.assignee_id),
            else_=sa.null(),
        ),
        updated_at=now_never_backwards(sa.bindparam("now", type_=UTCDateTime())),
        version=task_table.c.version + 1,
    )
    .returning(*SELECTED_COLUMNS)
)
_relisted = tree.subtree_of(task_table.c.id == sa.bindparam("task_id"), "relisted")
RELIST_TAGS = (
    sa.update(tag_table)
    .where(tag_table.c.task_id.in_(sa.select(_relisted.c.id)))
    .values(list_id=sa.bindparam("new_list_id"))
)
@functools.lru_cache(maxsize=256)
def update_statement(
    fields: tuple[str, ...], completion: str | None, version_count: int | None, unless_recurring: bool = False
) -> sa.Update:
    """The UPDATE for one shape of change, built once (the values come as parameters): the client's
    fields plus what the server owns (completed_at, updated_at, version), written as expressions
    of the row's current values, so no read is needed first. A change that completes the task
    (set or flip) also completes its open subtasks, all levels, in the same statement."""
    t = task_table.c
    now = sa.bindparam("now", type_=UTCDateTime())
    is_task = t.id == sa.bindparam("task_id")
    cascades = completion in ("set", "flip")
    values: dict[str, Any] = {}
    for field in fields:
        new = sa.bindparam(f"new_{field}", type_=t[field].type)
        # In a cascade the subtasks get only the completion; `completed` is true for all of them.
        values[field] = sa.case((is_task, new), else_=t[field]) if cascades and field != "completed" else new
    if completion == "flip":
        values["completed"] = sa.case((is_task, sa.not_(t.completed)), else_=sa.true()) if cascades else sa.not_(t.completed)
        values["completed_at"] = sa.case((t.completed, sa.null()), else_=now)
    elif completion == "set":
        values["completed_at"] = sa.case((t.completed, t.completed_at), else_=now)
    elif completion == "clear":
        values["completed_at"] = None
    values["updated_at"] = now_never_backwards(now)
    values["version"] = t.version + 1
    may_edit = access.may(access.EDIT_TASKS, t.list_id)
    where = sa.and_(is_task, *version_matches(version_count))
    if cascades:  # the subtree starts at a task the caller may edit (its subtasks are in its list)
        # One walk of the subtree serves both conditions (a CTE named twice is computed once).
        family = tree.subtree_of(sa.and_(is_task, may_edit), "family")
        conditions = task_or_its_open_subtasks(family, tree.locked_in_id_order(family, "locked"), where, version_count)
        if unless_recurring:
            conditions.append(sa.not_(open_recurring_in(family)))
        return sa.update(task_table).where(*conditions).values(values).returning(*SELECTED_COLUMNS)
    return sa.update(task_table).where(may_edit, where).values(values).returning(*SELECTED_COLUMNS)


def task_or_its_open_subtasks(
    family: sa.CTE, locked: sa.CTE, task_condition: sa.ColumnElement[bool], version_count: int | None
) -> list[sa.ColumnElement[bool]]:
    """The task (if `task_condition`), and the open tasks below it (`family`: its subtree, `locked`:
    the same ids, locked in id order) when this statement completes it (it is open now, and If-Match
    allows the write). Reopening completes nothing; completing a completed task neither. Rows are
    found through the subtree's ids (primary key lookups)."""
    t = task_table.c
    task = task_table.alias("completing")
    completes = (
        sa.exists()
        .where(task.c.id == sa.bindparam("task_id"), access.may(access.EDIT_TASKS, task.c.list_id), task.c.completed.is_(False))
        .where(*version_matches(version_count, task))
    )
    return [t.id.in_(sa.select(locked.c.id)), sa.or_(task_condition, sa.and_(t.completed.is_(False), completes))]


def open_recurring_in(family: sa.CTE) -> sa.ColumnElement[bool]:
    """An open recurring task among the task and its subtasks (`family`; completing it continues its series)."""
    member = task_table.alias("member")
    return (
        sa.exists()
        .where(member.c.id.in_(sa.select(family.c.id)), member.c.recurrence.is_not(None), member.c.completed.is_(False))
    )
