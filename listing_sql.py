"""The statements of the listing (GET /api/tasks, the MCP list_tasks tool): filters, orders, the
manual order as a tree, pages and counts, each built once per shape (lru_cached builders) with bind
parameters; queries.py runs them. The page and the count are built from the same conditions, so they
never disagree.
"""
import functools
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

import access
import tree
from models import PRIORITIES, SEARCHED_TEXT_SQL, UTCDateTime
from task_sql import PUBLIC_SELECTED, numbered_binds, tag_table, task_table

# high > medium > low. Literals, not bind parameters: migrations 0007 and 0013 index this exact
# expression (ix_task_list_id_priority_rank), and PostgreSQL uses that index only for the same text.
PRIORITY_RANK = sa.case(
    *((task_table.c.priority == sa.literal_column(f"'{name}'"), sa.literal_column(str(rank))) for rank, name in enumerate(PRIORITIES, 1))
)
# The searched text as ix_task_search indexes it (models.SEARCHED_TEXT_SQL, the exact expression).
SEARCHED_TEXT = sa.literal_column(f"({SEARCHED_TEXT_SQL})", sa.String)
# The list's id as ix_task_search has it: a search names its lists this way too, so that it reads the
# index's part of each (models.SEARCH_SCOPE_SQL).
SEARCH_SCOPE = sa.cast(task_table.c.list_id, sa.BigInteger)
# The list's id as a one-element array, as ix_task_search has it too (models.SEARCH_LISTS_SQL): a count
# over several lists names them in one condition (`&&`), one scan of the index instead of one per list.
SEARCH_LISTS = postgresql.array([task_table.c.list_id])
SORT_KEYS = {
    "created_at": task_table.c.created_at,
    "updated_at": task_table.c.updated_at,
    "due_date": task_table.c.due_date,
    "priority": PRIORITY_RANK,
    "title": sa.func.lower(task_table.c.title),
    "position": None,  # the manual order, as a tree (tree.tree_order)
}


@functools.lru_cache(maxsize=512)
def filter_conditions(shape: tuple[Any, ...], scoped: bool = True, walked: bool = False) -> tuple[sa.ColumnElement[bool], ...]:
    """The filters of one shape. `scoped`: with the caller's lists as the scope (a statement that reads
    each of them on its own, `each_list`, leaves that out and names the list instead). `walked`: as
    one condition that no index serves (`Walked`)."""
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
        # join of its choice: a probe per task of a page, or the tag's entries read once. Walked: a
        # probe per task always (OFFSET 0 keeps PostgreSQL from reading all the tag's rows, every
        # user's, into a hash first: 400 ms).
        carries = sa.select(sa.literal_column("1")).where(tag_table.c.task_id == t.id, tag_table.c.tag_key == sa.bindparam(f"tag_{index}"))
        conditions.append((carries.offset(sa.literal_column("0")) if walked else carries).exists())
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
    if walked and conditions:
        # IS TRUE: no index can serve the filters, so walking the order's index is the only plan that
        # stops early, whatever the values (and a generic plan is that walk too).
        return (sa.and_(*conditions).is_(sa.true()),)
    return tuple(conditions)


def in_list(list_id: Any, shape: tuple[Any, ...], walked: bool = False) -> list[sa.ColumnElement[bool]]:
    """The task is in this list (a value or a column); named for the search index too when the
    listing searches it (not when it walks the list)."""
    conditions = [task_table.c.list_id == list_id]
    if shape[1] == "indexed" and not walked:
        conditions.append(SEARCH_SCOPE == sa.cast(list_id, sa.BigInteger))
    return conditions


# Where a page starts. "offset": the first page, or `offset=` (skipping rows costs as many reads;
# "deep_offset" reads only the index entries of the rows it skips: deep_offset below).
# "after": right after a cursor's task, in an index range. Sorting by due date reads two segments, the
# dated tasks (in an index range) then the undated ones (by id); "dated" / "undated" start a segment,
# "dated_after" / "undated_after" continue one after a cursor's task.
Start = str


# How a statement reaches the caller's lists (every read is of them: access.lists_of_caller):
# IN_SCOPE: `task.list_id IN (the caller's lists)` (SQLite; one list, `list_id=`).
# EACH_LIST: PostgreSQL, each of the caller's lists read in its own index range (a LATERAL join).
# A number k (at most queries.MAX_LIST_BRANCHES): PostgreSQL, a user with many tasks: the k lists access.lists_of gave, named as values
#   (`scope_list_0`...), one branch each, planned for those values: the planner knows each list's size
#   (inside the LATERAL join it takes every list for an average one, and sorted all of a 20,000-task
#   list's matches for a page of 100), and merges the branches in order (Merge Append), reading each
#   list's index range only as far as the page needs.
# After a count (queries.py counts a big user's filtered listing first, and chooses):
# AtOnce(k): a filter few of the tasks match: the k lists named as values in one condition, the
#   matches read at once and sorted (one plan instead of k).
# Walked(k): a filter many of the tasks match: one branch per list as with k, each walking the order's
#   index until the page is full, the filters one condition no index serves (`filter_conditions`):
#   the only plan is that walk, so the statement is prepared: after its first five calls on a
#   connection (PostgreSQL plans those for their values) it keeps one plan, where planning k branches
#   for their values cost 1-2 ms of each page.
# Remembered(k): as k, the lists those the caller was seen to have by an earlier listing (queries.py),
#   not looked up first (a round trip less): the statement reads them only if they are still exactly
#   the caller's lists (access.sees_exactly), else nothing. Pages only: never a count (an empty page is
#   read again, a count of 0 could not be told from a stale one).
IN_SCOPE, EACH_LIST = None, 0


@dataclass(frozen=True)
class AtOnce:
    lists: int


@dataclass(frozen=True)
class Walked:
    lists: int


@dataclass(frozen=True)
class Remembered:
    lists: int


Scope = int | AtOnce | Walked | Remembered | None


def lists_named(scope: Scope) -> int:
    """How many lists the listing names as values (0: it reaches them another way)."""
    return scope.lists if isinstance(scope, (AtOnce, Walked, Remembered)) else scope or 0


def reads_at_once(scope: Scope) -> bool:
    """One statement over all of the lists (no branch per list)."""
    return scope is IN_SCOPE or isinstance(scope, AtOnce)


@functools.lru_cache(maxsize=512)
def page_statement(shape: tuple[Any, ...], sort: str, ascending: bool, start: Start = "offset", scope: Scope = IN_SCOPE) -> sa.Select:
    """One page in one order. Read per list (`scope`, above), each list is read up to the page's end
    (`inner_limit`: limit + offset), and the page is cut from those rows in the same order."""
    if sort == "position":
        return tree_page_statement(shape)
    direction = sa.asc if ascending else sa.desc
    t = task_table.c
    key = SORT_KEYS[sort]
    conditions = list(filter_conditions(shape, scoped=scope is IN_SCOPE, walked=isinstance(scope, Walked)))
    if isinstance(scope, AtOnce):
        conditions += named_lists(shape, scope.lists)
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
    if start == "deep_offset":
        return _deep_page(sa.select(t.id, sort_key).where(*conditions).order_by(*order(sort_key.element, t.id)), scope, shape, order)
    rows = sa.select(*PUBLIC_SELECTED, sort_key).where(*conditions).order_by(*order(sort_key.element, t.id))
    if reads_at_once(scope):
        statement = rows.limit(sa.bindparam("limit"))
        return planned_per_call(statement.offset(sa.bindparam("offset")) if start == "offset" else statement, shape)
    page = each_list(rows, scope, shape)
    statement = (
        sa.select(*(page.c[column.key] for column in PUBLIC_SELECTED), page.c.sort_key)
        .order_by(*order(page.c.sort_key, page.c.id))
        .limit(sa.bindparam("limit"))
    )
    return planned_per_call(statement.offset(sa.bindparam("offset")) if start == "offset" else statement, shape, scope)


def _deep_page(ids: sa.Select, scope: Scope, shape: tuple[Any, ...], order: Any) -> sa.Select:
    """A page far down an unfiltered listing (`deep_offset`): the ids of the page first, from the
    order's index alone (the id and the sort key are in it), then those tasks' rows. Reading the
    skipped rows whole cost 58 ms at `offset=90000` of 100,000 tasks."""
    if reads_at_once(scope):
        skipped = ids
    else:
        each = each_list(ids, scope, shape)
        skipped = sa.select(each.c.id, each.c.sort_key).order_by(*order(each.c.sort_key, each.c.id))
    page = skipped.limit(sa.bindparam("limit")).offset(sa.bindparam("offset")).subquery("page")
    statement = (
        sa.select(*PUBLIC_SELECTED, page.c.sort_key)
        .select_from(page.join(task_table, task_table.c.id == page.c.id))
        .order_by(*order(page.c.sort_key, page.c.id))
    )
    return planned_per_call(statement, shape)


DEEP_OFFSET = 1000
DEEP_SORTS = ("created_at", "updated_at", "due_date")


def deep_offset(shape: tuple[Any, ...], sort: str, offset: int) -> bool:
    """Whether a page at `offset` reads its ids first (`_deep_page`): far down a listing filtered by
    nothing but its list, in an order an index keeps as plain columns."""
    return offset >= DEEP_OFFSET and sort in DEEP_SORTS and unfiltered_tree(shape) and shape[9] is False


def each_list(rows: sa.Select, scope: Scope, shape: tuple[Any, ...]) -> sa.FromClause:
    """`rows` of each of the caller's lists, in order, at most `inner_limit` of each: read through a
    LATERAL join (EACH_LIST), or one branch per list named as a value (a number)."""
    if scope is EACH_LIST:
        visible = access.lists_of_caller(access.SEE).subquery("visible")
        page = rows.where(*in_list(visible.c.list_id, shape)).limit(sa.bindparam("inner_limit")).lateral("page")
        return sa.select(page).select_from(visible.join(page, sa.true())).subquery("each_list")
    walked = isinstance(scope, Walked)
    named = [scope_list(index) for index in range(lists_named(scope))]
    branches = [rows.where(*in_list(list_id, shape, walked)).limit(sa.bindparam("inner_limit")) for list_id in named]
    if isinstance(scope, Remembered):
        # Checked once, above the branches (a one-time filter): the branches still merge in order.
        checked = sa.union_all(*branches).subquery("remembered")
        return sa.select(checked).where(access.sees_exactly(named)).subquery("each_list")
    return sa.union_all(*branches).subquery("each_list")


def scope_list(index: int) -> sa.BindParameter:
    return sa.bindparam(f"scope_list_{index}", type_=sa.Integer)


def planned_per_call(statement: sa.Select, shape: tuple[Any, ...], scope: Scope = IN_SCOPE) -> sa.Select:
    """For a user with many tasks, a listing is planned for its values on every call, never prepared:
    how many tasks a list, a word or a tag holds decides the plan (walk the order's index and probe
    each task, or read the matches and sort them). Generic plans read them all: after a few rare
    words, a common one cost 120 ms instead of 2; `tag=home` 33 ms instead of 3. Except where one plan
    fits every value: no filter but the list (`plan_fits_all_values`), or a walk (`Walked`)."""
    one_plan = plan_fits_all_values(shape) or isinstance(scope, Walked)
    return statement.execution_options(prepare=False) if shape[-1] and not one_plan else statement


def plan_fits_all_values(shape: tuple[Any, ...]) -> bool:
    """A listing filtered by nothing but its list, the top level or a parent: one plan serves every
    value (walk the order's index; a task's subtasks are few), so it is prepared like any statement
    and planned once per connection instead of on every call (1-2 ms of a big user's page)."""
    return unfiltered_tree(shape) or (shape[9] is True and unfiltered_tree((*shape[:9], False, *shape[10:])))


def unfiltered_tree(shape: tuple[Any, ...]) -> bool:
    """No filter but the list (or the top level only): every row of the tree is listed, so a page of
    n rows (after `offset` others) lies under the first n + offset top-level tasks."""
    completed, text, priorities, tags, due_before, due_after, overdue, due_on, _list, parent, assignee, _many = shape
    filtered = completed or text or priorities or tags or due_before or due_after or due_on or overdue is not None or assignee
    return not filtered and parent in (False, "top")


def tree_page_statement(shape: tuple[Any, ...]) -> sa.Select:
    """The manual order as a tree, in one query: every task of the list (of every list, in the
    lists' order, without `list_id`) with its path (tree.tree_order), the filters applied to the
    rows, sorted by path. A filtered-out task's matching subtasks still follow where it would be."""
    in_one_list, parent = shape[8], shape[9]
    if unfiltered_tree(shape) and parent is False:
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
    ordered = tree.tree_order(in_one_list, first_roots=unfiltered_tree(shape))
    return planned_per_call(
        sa.select(*PUBLIC_SELECTED)
        .select_from(task_table.join(ordered, ordered.c.id == task_table.c.id))
        .where(*filter_conditions(shape))
        .order_by(ordered.c.path)
        .limit(sa.bindparam("limit"))
        .offset(sa.bindparam("offset")),
        shape,
    )


@functools.lru_cache(maxsize=512)
def count_statement(shape: tuple[Any, ...], scope: Scope = IN_SCOPE) -> sa.Select:
    """The matching tasks, counted in the caller's lists (a number as `scope`, AtOnce or Walked: the
    lists named as values, in one condition)."""
    tag_count = shape[3]
    if tag_count and not any(shape[:3]) and not any(shape[4:6]) and shape[6] is None and not any(shape[7:11]):
        return tagged_count(tag_count)
    if isinstance(scope, Remembered):
        raise ValueError("a count never reads remembered lists (an empty result would not say whether they were stale)")
    named = lists_named(scope)
    conditions = [*filter_conditions(shape, scoped=not named), *named_lists(shape, named)]
    return planned_per_call(sa.select(sa.func.count()).select_from(task_table).where(*conditions), shape)


def named_lists(shape: tuple[Any, ...], count: int) -> list[sa.ColumnElement[bool]]:
    """The task is in one of the `count` lists named as values (`scope_list_0`...): one condition, read
    by one index scan, where `each_list` reads each list in its own branch."""
    if not count:
        return []
    named = [scope_list(index) for index in range(count)]
    if shape[1] == "indexed":
        # As the search index has them, alone: with `list_id IN` beside it, the planner took the two
        # for independent conditions and expected a quarter of the matches.
        return [SEARCH_LISTS.op("&&")(postgresql.array(named))]
    return [task_table.c.list_id.in_(named)]


def tagged_count(tag_count: int) -> sa.Select:
    """The count of several `tag=` and nothing else (one tag alone is a count the writes keep), from
    the tag index only, list by list: a task's tag rows carry its list, so a list's tasks carrying
    every tag are the task ids found in that list under each tag, merged in task id order. (All the
    caller's lists at once, a hash join of their rows: 56 ms for two tags of 100,000 tasks; list by
    list, 6.)"""
    visible = access.lists_of_caller(access.SEE).subquery("visible")
    tagged = [tag_table.alias(f"tagged_{index}") for index in range(tag_count)]
    joined: sa.FromClause = tagged[0]
    for other in tagged[1:]:
        joined = joined.join(other, other.c.task_id == tagged[0].c.task_id)
    in_the_list = (
        sa.select(sa.func.count())
        .select_from(joined)
        .where(*(t.c.list_id == visible.c.list_id for t in tagged))
        .where(*(t.c.tag_key == sa.bindparam(f"tag_{index}") for index, t in enumerate(tagged)))
        .scalar_subquery()
    )
    return sa.select(sa.func.coalesce(sa.func.sum(in_the_list), 0)).select_from(visible)


@functools.lru_cache(maxsize=512)
def segments_statement(
    shape: tuple[Any, ...], sort: str, ascending: bool, starts: tuple[Start, ...], scope: Scope = IN_SCOPE
) -> sa.Select:
    """A page that spans segments (due date: the dated tasks, then the undated ones) as ONE statement:
    each segment read in its own index range, at most `limit` rows each, then put in segment order.
    (One statement per segment cost a round trip more on every first page sorted by due date.)"""
    direction = sa.asc if ascending else sa.desc
    parts = [
        sa.select(page_statement(shape, sort, ascending, start, scope).subquery(f"segment_{number}"),
                  sa.literal_column(str(number)).label("segment"))
        for number, start in enumerate(starts)
    ]
    page = sa.union_all(*parts).subquery("page")
    return planned_per_call(
        sa.select(*(page.c[column.key] for column in PUBLIC_SELECTED), page.c.sort_key)
        .order_by(page.c.segment, direction(page.c.sort_key), direction(page.c.id))
        .limit(sa.bindparam("limit")),
        shape,
        scope,
    )
