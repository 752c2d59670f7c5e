"""A search's exact count, remembered while the lists it counted have no new change (PostgreSQL, a
user with many tasks, their lists named: queries.py).

A common word's count reads every match and checks its text, wherever its rows lie (`q=report`,
18,786 matches of 100,000 tasks: 50 ms, where a page of it takes 4), and paging through the results,
or the same search again, asks for the same count. Each list's `changes` (migration 0017) grows with
every write of its tasks that can change what a search finds: an insert, a deletion, a change of
list, state, priority, title or description, in the write's transaction. So a count is remembered
with the lists it counted and the sum of their changes, both read by the count's own statement (one
snapshot); a later listing reads the sum with the caller's lists (the statement it makes anyway),
and the same lists with the same sum are the same tasks as far as this search can tell: the count is
still exact, whichever process counted it. (The sums start again from 0 in a table of counts emptied
or made again: they are kept with the table's file, which is then another.)

Only filters of those columns are remembered: the text, state and priority. Not tags, due dates, a
parent, an assignee (their writes are not counted as changes), nor `overdue` (the clock moves it).
"""
import functools
from collections import OrderedDict
from typing import Any, NamedTuple

import sqlalchemy as sa

import counts
import listing_sql
import metrics
from listing_sql import Scope


class Changes(NamedTuple):
    """The changes of some lists, as of one snapshot."""

    counts_file: int  # counts.COUNTS_FILE: which table of counts they were read from
    total: int  # the sum of the lists' `changes`


REMEMBERED = 2048  # counts per process, the least recently used forgotten first
_remembered: OrderedDict[tuple[Any, ...], int] = OrderedDict()


def remembers(shape: tuple[Any, ...]) -> bool:
    """Whether a listing of this shape has its count remembered: a search over the caller's lists,
    filtered by nothing but state and priorities besides."""
    (_completed, text, _priorities, tags, due_before, due_after, overdue, due_on, one_list, parent, assignee,
     many_tasks) = shape
    filtered_otherwise = (tags or due_before or due_after or due_on or one_list or parent
                          or overdue is not None or assignee is not None)
    return bool(many_tasks and text) and not filtered_otherwise


def _key(shape: tuple[Any, ...], parameters: dict[str, Any], changes: Changes) -> tuple[Any, ...]:
    """The shape, every value but the clock's (the named lists among them), and the lists' changes."""
    values = tuple(sorted((name, tuple(value) if isinstance(value, list) else value)
                          for name, value in parameters.items() if name != "now"))
    return shape, values, changes


@functools.lru_cache(maxsize=64)
def _count_with_changes(shape: tuple[Any, ...], scope: Scope) -> sa.Select:
    count = listing_sql.count_statement(shape, scope)
    named = tuple(listing_sql.scope_list(index) for index in range(listing_sql.lists_named(scope)))
    statement = sa.select(
        count.scalar_subquery().label("total"),
        counts.changes_of(named).label("changes"),
        counts.COUNTS_FILE.label("counts_file"),
    )
    return listing_sql.planned_per_call(statement, shape)  # as the count alone: for its values


async def count(
    connection: Any, shape: tuple[Any, ...], scope: Scope, parameters: dict[str, Any], changes: Changes,
) -> int:
    """The listing's count over its named lists, whose changes were `changes` when read with them."""
    total = known(shape, parameters, changes)
    metrics.record_search_count(remembered=total is not None)
    if total is not None:
        return total
    row = await connection.fetch_one(_count_with_changes(shape, scope), parameters)
    _remembered[_key(shape, parameters, Changes(row["counts_file"], row["changes"]))] = row["total"]
    if len(_remembered) > REMEMBERED:
        _remembered.popitem(last=False)
    return row["total"]


def known(shape: tuple[Any, ...], parameters: dict[str, Any], changes: Changes) -> int | None:
    """The listing's count if it is remembered (nothing is counted): for a page that sends no count,
    to choose how it is read, as a counted page's count does (queries._read_way)."""
    key = _key(shape, parameters, changes)
    total = _remembered.get(key)
    if total is not None:
        _remembered.move_to_end(key)
    return total


def forget() -> None:
    """Forget every count (the benches: a search asked for the first time)."""
    _remembered.clear()
