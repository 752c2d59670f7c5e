"""Reads over many tasks: the listing (filters, orders, the manual order as a tree, pages), stats
and tag counts. Every statement is built once per shape (lru_cached builders) with bind parameters,
like store.py's; the page and the total are built from the same conditions, so they never disagree.

Every read is of the caller's lists (access.lists_of_caller): the tasks of the lists they are a
member of. On PostgreSQL a sorted page reads each of those lists in its own index range, in order,
and takes the first rows of them all (a LATERAL join): as fast for one list of 100,000 tasks as it
was when a user's tasks had an index range of their own.
"""
import dataclasses
import functools
import time as clock
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import sqlalchemy as sa

import access
import dates
import keyset
import settings_store
import tree
from db import Database
from models import PRIORITIES, SEARCH_SCOPE_SQL, SEARCH_SEPARATOR, SEARCHED_TEXT_SQL, UTCDateTime
from store import check_ids, check_scope, utc_now
from task_sql import PUBLIC_SELECTED, numbered, numbered_binds, tag_table, task_table


# high > medium > low. Literals, not bind parameters: the migration 0007 indexes this exact
# expression (ix_task_user_id_priority_rank), and PostgreSQL uses that index only for the same text.
PRIORITY_RANK = sa.case(
    *((task_table.c.priority == sa.literal_column(f"'{name}'"), sa.literal_column(str(rank))) for rank, name in enumerate(PRIORITIES, 1))
)
# The searched text as ix_task_search indexes it (models.SEARCHED_TEXT_SQL, the exact expression).
SEARCHED_TEXT = sa.literal_column(f"({SEARCHED_TEXT_SQL})", sa.String)
# The list's id as ix_task_search has it: a search names its lists this way too, so that it reads the
# index's part of each (models.SEARCH_SCOPE_SQL).
SEARCH_SCOPE = sa.cast(task_table.c.list_id, sa.BigInteger)
DUE_ON_MARGIN = timedelta(hours=15)  # more than any zone's offset from UTC
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
    assignee: str | None = None  # "none": unassigned tasks only; a user id: tasks assigned to them
    # PostgreSQL, a user with many tasks (list_tasks decides, for a search or tags): `text` is looked
    # up in the trigram index, and a statement with either is planned for its values on every call.
    many_tasks: bool = False

    def tag_keys(self) -> list[str]:
        return list(dict.fromkeys(tag.strip().lower() for tag in self.tags or ()))

    def shape(self) -> tuple[Any, ...]:
        return (
            self.completed is not None,
            self.text and ("indexed" if self.many_tasks and SEARCH_SEPARATOR not in self.text else "plain"),
            len(set(self.priorities or ())),
            len(self.tag_keys()),
            self.due_before is not None,
            self.due_after is not None,
            self.overdue,
            self.due_on is not None,
            self.list_id is not None,
            "top" if self.top_level_only else self.parent_id is not None,
            None if self.assignee is None else ("none" if self.assignee == ASSIGNEE_NONE else "someone"),
            self.many_tasks,
        )

    def parameters(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "caller": self.user_id,
            "assignee": self.assignee,
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
            # Every task due that day, in any zone (UTC-12 to UTC+14), is due within these bounds.
            midnight = datetime.combine(self.due_on, time(), timezone.utc)
            values["due_on_low"] = dates.plus(midnight, -DUE_ON_MARGIN)
            values["due_on_high"] = dates.plus(midnight, timedelta(days=1) + DUE_ON_MARGIN)
        if self.text:
            # % and _ (and the escape character /) in the text match literally.
            values["pattern"] = "%" + self.text.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"
        values.update(numbered("priority", self.priorities and list(dict.fromkeys(self.priorities))))
        values.update(numbered("tag", self.tag_keys()))
        return values


ASSIGNEE_NONE = ""  # no user id is empty: "unassigned" (`assignee=none`)


@functools.lru_cache(maxsize=512)
def _conditions(shape: tuple[Any, ...], scoped: bool = True) -> tuple[sa.ColumnElement[bool], ...]:
    """The filters of one shape. `scoped`: with the caller's lists as the scope (a statement that reads
    each of them on its own, `_per_list`, leaves that out and names the list instead)."""
    (has_completed, has_text, priority_count, tag_count, has_due_before, has_due_after, overdue, has_due_on,
     has_list, parent, assignee, _many) = shape
    t = task_table.c
    conditions = []
    if has_list:
        list_id = sa.bindparam("list_id", type_=sa.Integer)
        conditions += [*in_list(list_id, shape), access.may(access.SEE, list_id)]
    elif scoped:
        conditions.append(access.may(access.SEE, t.list_id))
        if has_text == "indexed":
            conditions.append(SEARCH_SCOPE.in_(sa.select(sa.cast(access.lists_of_caller().subquery().c.list_id, sa.BigInteger))))
    if parent == "top":
        conditions.append(t.parent_id.is_(None))
    elif parent:
        conditions.append(t.parent_id == sa.bindparam("parent_id"))
    if assignee == "none":
        conditions.append(t.assignee_id.is_(None))
    elif assignee:
        conditions.append(t.assignee_id == sa.bindparam("assignee"))
    if has_completed:
        conditions.append(t.completed == sa.bindparam("completed"))
    if has_text:
        # The database lowers both sides: Python's lower() folds more than SQLite's built-in
        # (db.py registers a Unicode one), so a needle lowered here could miss "École" there.
        pattern = sa.func.lower(sa.bindparam("pattern", type_=sa.String))
        if has_text == "indexed":
            # The same match, as the trigram index ix_task_search has it: the text is in the title or
            # in the description exactly when it is in both joined by a character it does not
            # contain. The list's id (in the index too) narrows it to one list's tasks.
            conditions.append(SEARCHED_TEXT.like(pattern, escape="/"))
        else:
            conditions.append(
                sa.or_(sa.func.lower(t.title).like(pattern, escape="/"), sa.func.lower(t.description).like(pattern, escape="/"))
            )
    if priority_count:
        conditions.append(t.priority.in_(numbered_binds("priority", priority_count)))
    for index in range(tag_count):
        # Does the task carry the tag: its own row of task_tag (the primary key). PostgreSQL makes it a
        # join of its choice: a probe per task of a page, or the tag's entries read once.
        carries = sa.exists().where(tag_table.c.task_id == t.id, tag_table.c.tag_key == sa.bindparam(f"tag_{index}"))
        conditions.append(carries)
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
        # Implied by the above, but a range an index on due_date serves (the OR above is not).
        conditions.append(t.due_date >= sa.bindparam("due_on_low", type_=UTCDateTime()))
        conditions.append(t.due_date < sa.bindparam("due_on_high", type_=UTCDateTime()))
    return tuple(conditions)


def in_list(list_id: Any, shape: tuple[Any, ...]) -> list[sa.ColumnElement[bool]]:
    """The task is in this list (a value or a column); named for the search index too when the
    listing searches it."""
    conditions = [task_table.c.list_id == list_id]
    if shape[1] == "indexed":
        conditions.append(SEARCH_SCOPE == sa.cast(list_id, sa.BigInteger))
    return conditions


# Where a page starts. "offset": the first page, or `offset=` (skipping rows costs as many reads).
# "after": right after a cursor's task, in an index range. Sorting by due date reads two segments, the
# dated tasks (in an index range) then the undated ones (by id); "dated" / "undated" start a segment,
# "dated_after" / "undated_after" continue one after a cursor's task.
Start = str


# How a statement reaches the caller's lists (every read is of them: access.lists_of_caller):
# IN_SCOPE: `task.list_id IN (the caller's lists)` (SQLite; one list, `list_id=`).
# EACH_LIST: PostgreSQL, each of the caller's lists read in its own index range (a LATERAL join).
# A number k: PostgreSQL, a user with many tasks: the k lists access.lists_of gave, named as values
#   (`scope_list_0`...), one branch each, planned for those values: the planner knows each list's size
#   (inside the LATERAL join it takes every list for an average one, and sorted all of a 20,000-task
#   list's matches for a page of 100), and merges the branches in order (Merge Append), reading each
#   list's index range only as far as the page needs.
IN_SCOPE, EACH_LIST = None, 0
Scope = int | None
MAX_LIST_BRANCHES = 16  # past it, EACH_LIST


@functools.lru_cache(maxsize=512)
def _page_statement(shape: tuple[Any, ...], sort: str, ascending: bool, start: Start = "offset", scope: Scope = IN_SCOPE) -> sa.Select:
    """One page in one order. Read per list (`scope`, above), each list is read up to the page's end
    (`inner_limit`: limit + offset), and the page is cut from those rows in the same order."""
    if sort == "position":
        return _tree_page_statement(shape)
    direction = sa.asc if ascending else sa.desc
    t = task_table.c
    key = SORT_KEYS[sort]
    conditions = list(_conditions(shape, scoped=scope is IN_SCOPE))
    nulls_last = False
    if start in ("after", "dated_after"):
        cursor = sa.tuple_(sa.bindparam("after_value", type_=key.type), sa.bindparam("after_id"))
        newer = sa.tuple_(key, t.id) > cursor if ascending else sa.tuple_(key, t.id) < cursor
        conditions.append(newer)  # a tuple comparison: one index range (and never true for a NULL due date)
    if start in ("dated", "dated_after"):
        conditions.append(t.due_date.is_not(None))  # no NULLS LAST: the index's own order serves both directions
    elif start in ("undated", "undated_after"):
        # Every due date here is NULL, so (due_date, id) is the order by id, and the one the list's
        # due-date index keeps: read in order instead of reading all the undated tasks to sort them.
        conditions.append(t.due_date.is_(None))
        if start == "undated_after":
            conditions.append(t.id > sa.bindparam("after_id") if ascending else t.id < sa.bindparam("after_id"))
    elif sort == "due_date":
        nulls_last = True  # tasks without a due date come last in both orders

    def order(sort_key: Any, task_id: Any) -> list[Any]:
        primary = direction(sort_key).nulls_last() if nulls_last else direction(sort_key)
        return [primary, direction(task_id)]  # ties broken by id: pages are stable

    sort_key = SORT_KEYS[sort].label("sort_key")
    rows = sa.select(*PUBLIC_SELECTED, sort_key).where(*conditions).order_by(*order(sort_key.element, t.id))
    if scope is IN_SCOPE:
        statement = rows.limit(sa.bindparam("limit"))
        return _planned_per_call(statement.offset(sa.bindparam("offset")) if start == "offset" else statement, shape)
    page = _each_list(rows, scope, shape)
    statement = (
        sa.select(*(page.c[column.key] for column in PUBLIC_SELECTED), page.c.sort_key)
        .order_by(*order(page.c.sort_key, page.c.id))
        .limit(sa.bindparam("limit"))
    )
    return _planned_per_call(statement.offset(sa.bindparam("offset")) if start == "offset" else statement, shape)


def _each_list(rows: sa.Select, scope: Scope, shape: tuple[Any, ...]) -> sa.FromClause:
    """`rows` of each of the caller's lists, in order, at most `inner_limit` of each: read through a
    LATERAL join (EACH_LIST), or one branch per list named as a value (a number)."""
    if scope is EACH_LIST:
        visible = access.lists_of_caller(access.SEE).subquery("visible")
        page = rows.where(*in_list(visible.c.list_id, shape)).limit(sa.bindparam("inner_limit")).lateral("page")
        return sa.select(page).select_from(visible.join(page, sa.true())).subquery("each_list")
    branches = [rows.where(*in_list(_scope_list(index), shape)).limit(sa.bindparam("inner_limit")) for index in range(scope)]
    return sa.union_all(*branches).subquery("each_list")


def _scope_list(index: int) -> sa.BindParameter:
    return sa.bindparam(f"scope_list_{index}", type_=sa.Integer)


def _planned_per_call(statement: sa.Select, shape: tuple[Any, ...]) -> sa.Select:
    """For a user with many tasks, a listing is planned for its values on every call, never prepared:
    how many tasks a list, a word or a tag holds decides the plan (walk the order's index and probe
    each task, or read the matches and sort them). Generic plans read them all: after a few rare
    words, a common one cost 120 ms instead of 2; `tag=home` 33 ms instead of 3."""
    return statement.execution_options(prepare=False) if shape[-1] else statement


def _unfiltered_tree(shape: tuple[Any, ...]) -> bool:
    """No filter but the list (or the top level only): every row of the tree is listed, so a page of
    n rows (after `offset` others) lies under the first n + offset top-level tasks."""
    completed, text, priorities, tags, due_before, due_after, overdue, due_on, _list, parent, assignee, _many = shape
    filtered = completed or text or priorities or tags or due_before or due_after or due_on or overdue is not None or assignee
    return not filtered and parent in (False, "top")


def _tree_page_statement(shape: tuple[Any, ...]) -> sa.Select:
    """The manual order as a tree, in one query: every task of the list (of every list, in the
    lists' order, without `list_id`) with its path (tree.tree_order), the filters applied to the
    rows, sorted by path. A filtered-out task's matching subtasks still follow where it would be."""
    in_one_list, parent = shape[8], shape[9]
    if _unfiltered_tree(shape) and parent is False:
        # Every row of the tree is listed: the page is cut from the tree (under its first roots),
        # then its tasks are read by id. The tree's own conditions (the owner's top-level tasks of
        # the list, and their subtasks, which are in their parent's list) are the filter; said
        # again on the tasks, they made PostgreSQL read all of the list's tasks to join 100 to them.
        ordered = tree.tree_order(in_one_list, first_roots=True)
        page = (
            sa.select(ordered.c.id, ordered.c.path)
            .order_by(ordered.c.path)
            .limit(sa.bindparam("limit"))
            .offset(sa.bindparam("offset"))
            .subquery("page")
        )
        return (
            sa.select(*PUBLIC_SELECTED)
            .select_from(page.join(task_table, task_table.c.id == page.c.id))
            .order_by(page.c.path)
        )
    ordered = tree.tree_order(in_one_list, first_roots=_unfiltered_tree(shape))
    return _planned_per_call(
        sa.select(*PUBLIC_SELECTED)
        .select_from(task_table.join(ordered, ordered.c.id == task_table.c.id))
        .where(*_conditions(shape))
        .order_by(ordered.c.path)
        .limit(sa.bindparam("limit"))
        .offset(sa.bindparam("offset")),
        shape,
    )


# A search uses the trigram index for a user with more tasks than this; a smaller user's tasks are
# read as they are (0.5 ms for 100 tasks, where the index took 1.5 ms for a common word).
SEARCH_INDEX_FROM = 2000
# Whether the user has more tasks than that: reads at most that many entries of an index.
_MANY_TASKS = sa.select(
    sa.select(sa.literal_column("1")).where(access.may(access.SEE, task_table.c.list_id))
    .offset(SEARCH_INDEX_FROM).limit(1).exists()
)


_many_tasks_seen: dict[str, tuple[float, bool]] = {}  # user -> (when, answer): searches come in bursts (typing)
_MANY_TASKS_FOR_SECONDS = 60.0


async def _has_many_tasks(connection: Any, user_id: str) -> bool:
    now = clock.monotonic()
    seen = _many_tasks_seen.get(user_id)
    if seen is not None and now - seen[0] < _MANY_TASKS_FOR_SECONDS:
        return seen[1]
    many = bool(await connection.fetch_value(_MANY_TASKS, {"caller": user_id}))
    if len(_many_tasks_seen) >= 10_000:
        _many_tasks_seen.clear()
    _many_tasks_seen[user_id] = (now, many)
    return many


@functools.lru_cache(maxsize=512)
def _count_statement(shape: tuple[Any, ...], scope: Scope = IN_SCOPE) -> sa.Select:
    """The matching tasks, counted in the caller's lists (a number as `scope`: the lists named as
    values, as `_page_statement`)."""
    tag_count = shape[3]
    if tag_count and not any(shape[:3]) and not any(shape[4:6]) and shape[6] is None and not any(shape[7:11]):
        return _tagged_count(tag_count)
    named = [_scope_list(index) for index in range(scope or 0)]
    scoped = [task_table.c.list_id.in_(named)] if named else []
    if named and shape[1] == "indexed":
        scoped.append(SEARCH_SCOPE.in_([sa.cast(list_id, sa.BigInteger) for list_id in named]))
    conditions = [*_conditions(shape, scoped=not scope), *scoped]
    return _planned_per_call(sa.select(sa.func.count()).select_from(task_table).where(*conditions), shape)


def _tagged_count(tag_count: int) -> sa.Select:
    """The count of `tag=` alone, from the tag index only: a task has one row per tag (its key is
    (task_id, tag_key)), with its list, so the tasks carrying every tag are the task ids found under
    each, in the caller's lists (joined to the user's 100,000 tasks instead: 50 ms)."""
    tagged = [tag_table.alias(f"tagged_{index}") for index in range(tag_count)]
    joined: sa.FromClause = tagged[0]
    for other in tagged[1:]:
        joined = joined.join(other, other.c.task_id == tagged[0].c.task_id)
    return sa.select(sa.func.count()).select_from(joined).where(
        access.may(access.SEE, tagged[0].c.list_id),
        *(t.c.tag_key == sa.bindparam(f"tag_{index}") for index, t in enumerate(tagged)),
    )


def _segments(sort: str, after: keyset.Cursor | None) -> list[tuple[Start, dict[str, Any]]]:
    """The statements a keyset page reads, in order, each with its cursor values."""
    if after is None:
        return [("dated", {}), ("undated", {})] if sort == "due_date" else [("offset", {"offset": 0})]
    values = {"after_value": after.value, "after_id": after.task_id}
    if sort != "due_date":
        return [("after", values)]
    if after.value is None:
        return [("undated_after", values)]
    return [("dated_after", values), ("undated", {})]


async def _scope_of(connection: Any, filters: TaskFilter) -> tuple[Scope, list[int]]:
    """How a PostgreSQL listing reaches the caller's lists (see IN_SCOPE), and the lists it names."""
    if filters.list_id is not None:
        return IN_SCOPE, []
    if not filters.many_tasks:
        return EACH_LIST, []
    lists = await access.lists_of(connection, filters.user_id)
    return (len(lists), lists) if 0 < len(lists) <= MAX_LIST_BRANCHES else (EACH_LIST, [])


@dataclass
class Page:
    tasks: list[dict[str, Any]]
    total: int | None  # every matching task, ignoring paging; None when not counted
    offset: int  # how many matching tasks come before this page (by a cursor: as they did then)
    has_more: bool
    next_cursor: keyset.Cursor | None  # where the next page starts (keyset sorts only)


async def list_tasks(
    db: Database, filters: TaskFilter, sort: str, ascending: bool, limit: int, offset: int = 0,
    *, after: keyset.Cursor | None = None, count: bool = True,
) -> Page:
    """One page (public fields only) and, if `count`, the total matching count, both from the same
    filter. The page starts at `offset`, or right after the cursor `after`. The count is skipped when
    the page itself shows the total (a first or last offset page that ends the result). A `list_id` /
    `parent_id` that is not the caller's is a 404 (looked up only when nothing matched)."""
    check_ids(filters.list_id, filters.parent_id)
    # A copy: the zone and the user's size are worked out here, while the caller's filters stay as the
    # client sent them (a cursor is bound to those: keyset.identity).
    filters = dataclasses.replace(filters)
    async with db.connect() as connection:
        if filters.due_on is not None and filters.zone_name is None:
            filters.zone_name = await settings_store.zone_of(connection, filters.user_id)
        scope, lists = IN_SCOPE, []
        if connection.dialect == "postgresql":
            filters.many_tasks = await _has_many_tasks(connection, filters.user_id)
            scope, lists = await _scope_of(connection, filters)
        shape, parameters = filters.shape(), {**filters.parameters(), **numbered("scope_list", lists)}
        rows = await _page_rows(connection, shape, sort, ascending, parameters, limit + 1, offset, after, scope)
        has_more = len(rows) > limit
        rows = rows[:limit]
        start = after.offset if after else offset
        next_cursor = None
        if has_more and sort != "position":
            next_cursor = keyset.Cursor(rows[-1]["sort_key"], rows[-1]["id"], start + len(rows))
        tasks = [dates.show_due(row) for row in rows]
        for task in tasks:
            task.pop("sort_key", None)
        total = None
        if count and after is None and not has_more and (offset == 0 or tasks):
            total = offset + len(tasks)  # the last page: no count query needed
        elif count:
            total = await connection.fetch_value(_count_statement(shape, scope), parameters)
        if not tasks and not total:
            await check_scope(connection, filters.user_id, filters.list_id, filters.parent_id)
    return Page(tasks, total, start, has_more, next_cursor)


async def _page_rows(
    connection: Any, shape: tuple[Any, ...], sort: str, ascending: bool, parameters: dict[str, Any],
    wanted: int, offset: int, after: keyset.Cursor | None, scope: Scope,
) -> list[dict[str, Any]]:
    if offset or sort == "position":
        statement = _page_statement(shape, sort, ascending, "offset", scope)
        values = {"limit": wanted, "offset": offset, "roots": wanted + offset, "inner_limit": wanted + offset}
        return await connection.fetch_all(statement, {**parameters, **values})
    segments = _segments(sort, after)
    starts = tuple(start for start, _ in segments)
    if len(starts) == 1:
        statement = _page_statement(shape, sort, ascending, starts[0], scope)
    else:
        statement = _segments_statement(shape, sort, ascending, starts, scope)
    values = {name: value for _, segment_values in segments for name, value in segment_values.items()}
    return await connection.fetch_all(statement, {**parameters, **values, "limit": wanted, "inner_limit": wanted})


@functools.lru_cache(maxsize=512)
def _segments_statement(
    shape: tuple[Any, ...], sort: str, ascending: bool, starts: tuple[Start, ...], scope: Scope = IN_SCOPE
) -> sa.Select:
    """A page that spans segments (due date: the dated tasks, then the undated ones) as ONE statement:
    each segment read in its own index range, at most `limit` rows each, then put in segment order.
    (One statement per segment cost a round trip more on every first page sorted by due date.)"""
    direction = sa.asc if ascending else sa.desc
    parts = [
        sa.select(_page_statement(shape, sort, ascending, start, scope).subquery(f"segment_{number}"),
                  sa.literal_column(str(number)).label("segment"))
        for number, start in enumerate(starts)
    ]
    page = sa.union_all(*parts).subquery("page")
    return _planned_per_call(
        sa.select(*(page.c[column.key] for column in PUBLIC_SELECTED), page.c.sort_key)
        .order_by(page.c.segment, direction(page.c.sort_key), direction(page.c.id))
        .limit(sa.bindparam("limit")),
        shape,
    )


async def cursor_at(db: Database, filters: TaskFilter, sort: str, ascending: bool, offset: int) -> keyset.Cursor | None:
    """The cursor of the page at `offset` (for the bench: reaching a deep page without walking to it)."""
    page = await list_tasks(db, filters, sort, ascending, limit=offset, count=False)
    return page.next_cursor


def _count_where(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    # count(*) FILTER (WHERE ...): no CASE and sum per row (stats of 100,000 tasks: 20.4 -> 18.1 ms).
    return sa.func.count().filter(condition)


# All the counters in one statement (of all tasks, or of one list's).
STATS = sa.select(
    sa.func.count().label("total"),
    _count_where(task_table.c.completed.is_(True)).label("completed"),
    _count_where(
        sa.and_(task_table.c.completed.is_(False), task_table.c.due_date < sa.bindparam("now", type_=UTCDateTime()))
    ).label("overdue"),
    *(_count_where(task_table.c.priority == priority).label(priority) for priority in PRIORITIES),
).where(access.may(access.SEE, task_table.c.list_id))
LIST_STATS = STATS.where(task_table.c.list_id == sa.bindparam("list_id"))


async def stats(db: Database, user_id: str, list_id: int | None = None) -> dict[str, Any]:
    check_ids(list_id, None)
    async with db.connect() as connection:
        statement = STATS if list_id is None else LIST_STATS
        row = await connection.fetch_one(statement, {"caller": user_id, "now": utc_now(), "list_id": list_id})
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
    .where(access.may(access.SEE, tag_table.c.list_id))
    .group_by(tag_table.c.tag_key)
    .order_by(_TAG_USES.desc(), tag_table.c.tag_key)
)


async def tag_counts(db: Database, user_id: str) -> list[dict[str, Any]]:
    async with db.connect() as connection:
        return await connection.fetch_all(TAG_COUNTS, {"caller": user_id})
