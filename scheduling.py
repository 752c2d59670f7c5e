"""A task's dates on the write path (§9): the stored columns of its due date, time zone,
recurrence and reminders, and the next occurrence of a recurring task that was just completed.

store.py calls `dated_columns` for a create or an update that touches a dated field, and
`next_occurrence` after a completion, both inside the writing transaction. The rules themselves
are pure (dates.py, recurrence.py, reminders.py); this module reads what they need (the task's
zone falls back to the user's setting) and turns their answers into columns or a 422.
Expanding a rule runs in a thread (`_off_the_loop`): it is bounded (recurrence.py), but other
requests of the worker never wait on it.
"""
import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import dates
import recurrence
import reminders
import settings_store
from db import Connection, Row
from errors import ValidationFailed

T = TypeVar("T")
DATED_FIELDS = frozenset({"due_date", "time_zone", "recurrence", "reminders"})
# The columns `dated_columns` returns, always all of them (one UPDATE shape for every dated change).
def needs_transaction(fields: dict[str, Any]) -> bool:
    """A new task whose columns depend on the user's zone, or that writes reminder rows."""
    due = fields.get("due_date")
    return bool(fields.get("recurrence") or fields.get("reminders") or (due is not None and not isinstance(due, datetime)))


DATED_COLUMNS = ("due_date", "all_day", "time_zone", "recurrence", "series_start", "series_index", "reminders")


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed([{"field": field, "message": message}])


async def zone_name_of(connection: Connection, user_id: str, time_zone: str | None, *, to_write: bool = True) -> str:
    return time_zone or await settings_store.zone_of(connection, user_id, to_write=to_write)


def series_of(task: Row, zone_name: str) -> recurrence.Series:
    rule = task["recurrence"]
    anchor = recurrence_anchor(task["series_start"])
    return recurrence.Series(
        rule=recurrence.parse_rule(rule["rrule"]),
        anchor=anchor,
        zone_name=zone_name,
        from_completion=rule.get("from") == "completion",
        index=task["series_index"] or 1,
    )


def recurrence_anchor(text: str) -> recurrence.Due:
    day = dates.parse_all_day(text)
    return day if day is not None else datetime.fromisoformat(text)


def _anchor_text(due: recurrence.Due) -> str:
    return due.isoformat() if not isinstance(due, datetime) else dates.format_moment(due)


async def dated_columns(connection: Connection, user_id: str, current: Row | None, changes: dict[str, Any]) -> dict[str, Any]:
    """The dated columns after `changes` (a create when `current` is None), validated together:
    a recurrence needs a due date and an occurrence after it; a relative reminder needs a due date."""
    def field(name: str, default: Any) -> Any:
        if name in changes:
            return changes[name]
        return current[name] if current is not None else default

    due = changes["due_date"] if "due_date" in changes else (dates.stored_due(current) if current else None)
    time_zone = field("time_zone", None)
    rule = field("recurrence", None)
    needs_zone = rule is not None or (due is not None and not isinstance(due, datetime))
    zone_name = await zone_name_of(connection, user_id, time_zone) if needs_zone else dates.UTC_NAME
    try:
        columns = {**dates.due_columns(due, zone_name), "time_zone": time_zone}
    except dates.OutOfRange as error:
        raise _invalid("due_date", str(error)) from None
    columns.update(await _series_columns(current, changes, rule, due, zone_name))
    try:
        columns["reminders"] = reminders.compose(field("reminders", []), columns["due_date"])
    except ValueError as error:
        raise _invalid("reminders", str(error)) from None
    return columns


async def _series_columns(current: Row | None, changes: dict[str, Any], rule: dict | None, due: Any, zone_name: str) -> dict[str, Any]:
    if rule is None:
        return {"recurrence": None, "series_start": None, "series_index": None}
    if due is None:
        raise _invalid("recurrence", "a recurring task needs a due_date; set one, or send recurrence: null")
    rule = {"rrule": rule["rrule"], "from": rule.get("from") or "due"}
    # The series is anchored at its first due date: set when the rule is given (or the due date
    # changes between all-day and timed), kept when only the due date of an occurrence moves.
    kept = current is not None and "recurrence" not in changes and current["series_start"] is not None
    if kept and isinstance(recurrence_anchor(current["series_start"]), datetime) != isinstance(due, datetime):
        kept = False
    columns = {
        "recurrence": rule,
        "series_start": current["series_start"] if kept else _anchor_text(due),
        "series_index": current["series_index"] if kept else 1,
    }
    series = series_of(columns, zone_name)
    as_from_due = recurrence.Series(series.rule, series.anchor, zone_name)
    try:
        following = await _off_the_loop(recurrence.next_due, as_from_due, due, as_from_due.moment_of(due))
    except dates.OutOfRange as error:
        raise _invalid("due_date", f"{error}, where this recurring task's dates are computed") from None
    if following is None:
        raise _invalid("recurrence", "the rule has no occurrence after the due date; check COUNT and UNTIL")
    return columns


async def next_occurrence(connection: Connection, task: Row) -> dict[str, Any] | None:
    """The columns of the task that follows a recurring task just completed, or None (not
    recurring, already followed, or the series has ended)."""
    if not task["completed"] or task["recurrence"] is None or task["next_occurrence_id"] is not None:
        return None
    zone_name = await zone_name_of(connection, task["user_id"], task["time_zone"])
    series = series_of(task, zone_name)
    previous = dates.stored_due(task)
    try:
        due = await _off_the_loop(recurrence.next_due, series, previous, task["completed_at"])
    except dates.OutOfRange:  # its zone changed since, and its dates are past the calendar's edge there
        return None
    if due is None:
        return None
    columns = dates.due_columns(due, zone_name)
    delta = columns["due_date"] - series.moment_of(previous)
    return {
        "title": task["title"],
        "description": task["description"],
        "priority": task["priority"],
        "tags": task["tags"],
        "time_zone": task["time_zone"],
        "recurrence": task["recurrence"],
        "series_start": task["series_start"],
        "series_index": series.index + 1,
        "reminders": reminders.compose(reminders.shifted(task["reminders"], delta), columns["due_date"], saturate=True),
        **columns,
    }


async def preview(task: Row, zone_name: str, count: int) -> list[Any]:
    """`GET /api/tasks/{id}/occurrences`: the next due dates after the task's own."""
    if task["recurrence"] is None:
        return []
    upcoming = await _off_the_loop(recurrence.upcoming, series_of(task, zone_name), dates.stored_due(task), count)
    return [due if isinstance(due, datetime) else due.isoformat() for due in upcoming]


async def _off_the_loop(function: Callable[..., T], *args: Any) -> T:
    """Run a pure, CPU-bound function in a thread, so the event loop keeps serving meanwhile."""
    return await asyncio.to_thread(function, *args)
