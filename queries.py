"""Reads over many tasks: the listing (its filters, a page and its count; the statements are in
listing_sql.py; its total, where the writes keep it, from counts.py), stats and tag counts.

Every read is of the caller's lists (access.lists_of_caller): the tasks of the lists they are a
member of. On PostgreSQL a sorted page reads each of those lists in its own index range, in order,
and takes the first rows of them all, as fast for one list of 100,000 tasks as it was when a user's
tasks had an index range of their own (listing_sql.py says how it reaches each list).
"""
import dataclasses
import time as clock
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import access
import counts
import dates
import keyset
import listing_sql
import search_counts
import settings_store
from db import Database
from listing_sql import EACH_LIST, IN_SCOPE, Scope, Start
from models import PRIORITIES, SEARCH_SEPARATOR
from store import check_ids, check_scope, utc_now
from task_sql import numbered, task_table

DUE_ON_MARGIN = timedelta(hours=15)  # more than any zone's offset from UTC
ASSIGNEE_NONE = ""  # no user id is empty: "unassigned" (`assignee=none`)
MAX_LIST_BRANCHES = 16  # past it, EACH_LIST
# Tasks a walk may pass probing their tags (two tags over 9 lists of 100,000 tasks: 5,700 passed in
# 13 ms; each list planned for its values, 17-23).
WALK_PAST_TAGGED = 10_000


@dataclass
class TaskFilter:
    """The listing's filters. Its `shape()` (which conditions apply) picks a statement built once
    by `listing_sql.filter_conditions`; its `parameters()` are the values. Page and count share both."""

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
    # PostgreSQL, a user with many tasks (list_tasks decides, for every listing): `text` is looked up
    # in the trigram index, the user's lists are named one branch each (listing_sql.each_list), and
    # the statements are planned for their values on every call.
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


# A user with more tasks than this has "many tasks" (TaskFilter.many_tasks). A smaller user's search
# reads their tasks as they are (0.5 ms for 100 tasks, where the index took 1.5 ms for a common word).
SEARCH_INDEX_FROM = 2000

_tasks_seen: dict[str, tuple[float, int]] = {}  # user -> (when, tasks): listings come in bursts (paging, typing)
_TASKS_SEEN_FOR_SECONDS = 60.0


async def _tasks_seen_by(connection: Any, user_id: str) -> int:
    """How many tasks the user's lists hold (the counts the writes keep), as of the last minute."""
    now = clock.monotonic()
    seen = _tasks_seen.get(user_id)
    if seen is not None and now - seen[0] < _TASKS_SEEN_FOR_SECONDS:
        return seen[1]
    tasks = int(await connection.fetch_value(counts.TASKS_SEEN, {"caller": user_id}))
    if len(_tasks_seen) >= 10_000:
        _tasks_seen.clear()
    _tasks_seen[user_id] = (now, tasks)
    return tasks


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


_lists_seen: dict[str, list[int]] = {}  # a user with many tasks -> their lists, as their last listing found them


async def _scope_of(
    connection: Any, filters: TaskFilter, counted: bool, *, remembered: bool = True,
) -> tuple[Scope, list[int], search_counts.Changes | None]:
    """How a PostgreSQL listing reaches the caller's lists (see IN_SCOPE), the lists it names, and for
    a search whose count is remembered, the sum of their changes (search_counts.py). A task's
    subtasks are in its list: `parent_id` reads them from the parent index, then checks the list. A
    listing that counts nothing over the named lists names the lists its user had last time, if
    `remembered`, without looking them up (Remembered: its page checks them)."""
    if filters.list_id is not None or filters.parent_id is not None:
        return IN_SCOPE, [], None
    if not filters.many_tasks:
        return EACH_LIST, [], None
    changes = None
    shape = filters.shape()
    if search_counts.remembers(shape):
        rows = await connection.fetch_all(counts.LISTS_AND_CHANGES, {"caller": filters.user_id})
        lists = [row["list_id"] for row in rows]
        changes = search_counts.Changes(rows[0]["counts_file"], sum(row["changes"] for row in rows)) if rows else None
    elif remembered and _reads_lists_once(shape, counted) and filters.user_id in _lists_seen:
        lists = _lists_seen[filters.user_id]
        return listing_sql.Remembered(len(lists)), lists, None
    else:
        lists = await access.lists_of(connection, filters.user_id)
    if 0 < len(lists) <= MAX_LIST_BRANCHES:
        if len(_lists_seen) >= 10_000:
            _lists_seen.clear()
        _lists_seen[filters.user_id] = lists
        return len(lists), lists, changes
    _lists_seen.pop(filters.user_id, None)
    return EACH_LIST, [], None


def _reads_lists_once(shape: tuple[Any, ...], counted: bool) -> bool:
    """Whether the page is the listing's only statement over the named lists, read in one way: no
    count over them (none asked for, or the one the writes keep), and none choosing how the page is
    read (`_counted_first`: a filtered page with a count asked for or kept)."""
    kept = counts.answers(shape)
    counts_the_lists = counted and not kept
    chooses_the_way = not listing_sql.plan_fits_all_values(shape) and (counted or kept)
    return not counts_the_lists and not chooses_the_way


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
    the page itself shows the total (a first or last offset page that ends the result), except where
    it comes first to choose how the page is read (`_counted_first`). A `list_id` / `parent_id` that
    is not the caller's is a 404 (looked up only when nothing matched)."""
    check_ids(filters.list_id, filters.parent_id)
    # A copy: the zone and the user's size are worked out here, while the caller's filters stay as the
    # client sent them (a cursor is bound to those: keyset.identity).
    filters = dataclasses.replace(filters)
    async with db.connect() as connection:
        if filters.due_on is not None and filters.zone_name is None:
            filters.zone_name = await settings_store.zone_of(connection, filters.user_id)
        scope, lists, changes, tasks_seen = IN_SCOPE, [], None, 0
        if connection.dialect == "postgresql":
            tasks_seen = await _tasks_seen_by(connection, filters.user_id)
            filters.many_tasks = tasks_seen > SEARCH_INDEX_FROM
            scope, lists, changes = await _scope_of(connection, filters, counted=count)
        shape, parameters = filters.shape(), {**filters.parameters(), **numbered("scope_list", lists)}
        total = None
        if _counted_first(shape, sort, scope):
            matches = await _matches(connection, shape, scope, parameters, changes, count)
            total = matches if count else None
            if matches is not None:
                scope = _read_way(shape, matches, offset + limit + 1, tasks_seen, len(lists))
        rows = await _page_rows(connection, shape, sort, ascending, parameters, limit + 1, offset, after, scope)
        if not rows and isinstance(scope, listing_sql.Remembered):
            # Nothing: no match, or the caller's lists changed since. Looked up, and read again.
            scope, lists, changes = await _scope_of(connection, filters, counted=count, remembered=False)
            parameters.update(numbered("scope_list", lists))
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
        if count and total is None:
            if after is None and not has_more and (offset == 0 or tasks):
                total = offset + len(tasks)  # the last page: no count query needed
            else:
                total = await _count(connection, shape, scope, parameters, changes)
        if not tasks and not total:
            await check_scope(connection, filters.user_id, filters.list_id, filters.parent_id)
    return Page(tasks, total, start, has_more, next_cursor)


def _counted_first(shape: tuple[Any, ...], sort: str, scope: Scope) -> bool:
    """Whether the count comes before the page, to choose how the page reads the lists (`_read_way`):
    a big user's filtered listing in a sorted order, its lists named one branch each (never lists
    remembered: only their own page checks them). (A page with more after it needs the count anyway.)"""
    return (
        bool(scope) and not isinstance(scope, listing_sql.Remembered)
        and sort != "position" and not listing_sql.plan_fits_all_values(shape)
    )


async def _matches(
    connection: Any, shape: tuple[Any, ...], scope: Scope, parameters: dict[str, Any],
    changes: search_counts.Changes | None, counted: bool,
) -> int | None:
    """How many tasks match: counted if the listing is `counted`; else where it is known without
    counting them (the counts the writes keep, a search's remembered count), to choose how an uncounted
    page is read as a counted one's is; else None."""
    if counted or counts.answers(shape):
        return await _count(connection, shape, scope, parameters, changes)
    if changes is not None:
        return search_counts.known(shape, parameters, changes)
    return None


def _read_way(shape: tuple[Any, ...], matches: int, page_end: int, tasks: int, lists: int) -> Scope:
    """How a counted page reads the lists (listing_sql.py: AtOnce, Walked). A walk of each list in the
    order until the page is full passes about `page_end * tasks / matches` tasks (the matches spread
    evenly). Few matches are read at once and sorted instead, when that reads fewer rows than the
    walk passes (a due-date range of 1,269 among 100,000 tasks: 7-9 -> 3-5 ms). Not by tags: read at
    once, a tag's tasks are found through all of its rows, every user's (two tags: 75 ms); there the
    walk probes each task it passes for its tags, and past WALK_PAST_TAGGED tasks each list is planned
    for its values instead (which can read a rare tag's rows first)."""
    passed = page_end * tasks / max(matches, 1)
    if shape[3]:
        return listing_sql.Walked(lists) if passed <= WALK_PAST_TAGGED else lists
    return listing_sql.AtOnce(lists) if matches <= passed else listing_sql.Walked(lists)


async def _count(
    connection: Any, shape: tuple[Any, ...], scope: Scope, parameters: dict[str, Any], changes: search_counts.Changes | None,
) -> int:
    """The listing's total: from the counts the writes keep where they give it, else counted, a search
    over named lists whose changes were read (`changes`) counted once while they stay the same."""
    if counts.answers(shape):
        return await connection.fetch_value(counts.count_statement(shape), parameters)
    if changes is not None and listing_sql.lists_named(scope):
        return await search_counts.count(connection, shape, scope, parameters, changes)
    return await connection.fetch_value(listing_sql.count_statement(shape, scope), parameters)


async def _page_rows(
    connection: Any, shape: tuple[Any, ...], sort: str, ascending: bool, parameters: dict[str, Any],
    wanted: int, offset: int, after: keyset.Cursor | None, scope: Scope,
) -> list[dict[str, Any]]:
    if offset or sort == "position":
        start = "deep_offset" if listing_sql.deep_offset(shape, sort, offset) else "offset"
        statement = listing_sql.page_statement(shape, sort, ascending, start, scope)
        values = {"limit": wanted, "offset": offset, "roots": wanted + offset, "inner_limit": wanted + offset}
        return await connection.fetch_all(statement, {**parameters, **values})
    segments = _segments(sort, after)
    starts = tuple(start for start, _ in segments)
    if len(starts) == 1:
        statement = listing_sql.page_statement(shape, sort, ascending, starts[0], scope)
    else:
        statement = listing_sql.segments_statement(shape, sort, ascending, starts, scope)
    values = {name: value for _, segment_values in segments for name, value in segment_values.items()}
    return await connection.fetch_all(statement, {**parameters, **values, "limit": wanted, "inner_limit": wanted})


async def cursor_at(db: Database, filters: TaskFilter, sort: str, ascending: bool, offset: int) -> keyset.Cursor | None:
    """The cursor of the page at `offset` (for the bench: reaching a deep page without walking to it)."""
    page = await list_tasks(db, filters, sort, ascending, limit=offset, count=False)
    return page.next_cursor


async def stats(db: Database, user_id: str, list_id: int | None = None) -> dict[str, Any]:
    check_ids(list_id, None)
    async with db.connect() as connection:
        statement = counts.stats_statement(list_id is not None)
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


async def tag_counts(db: Database, user_id: str) -> list[dict[str, Any]]:
    async with db.connect() as connection:
        return await connection.fetch_all(counts.TAG_COUNTS, {"caller": user_id})
