"""Reminders (§9, §12): their `fire_at`, the `reminder` table that indexes them, `GET /api/reminders`,
and the loop that fires them.

A reminder is its task's, but it fires for one person: the task's assignee, or, when it has none, its
creator (`recipient`), and only while that person is a member of the task's list. The `reminder` row
keeps that recipient (`user_id`), rewritten whenever the task's assignee or list changes.

A task keeps its reminders as the API shows them (a JSON column read with the row, like tags);
the `reminder` table holds one row per reminder with its `fire_at`, written in the same
transaction, for the two queries that search by time.

Firing: every worker of every instance runs `fire_reminders_forever`. Each round claims due,
unfired reminders of open tasks in one short transaction (`FOR UPDATE SKIP LOCKED` on
PostgreSQL, so two workers never claim the same row; on SQLite `BEGIN IMMEDIATE` makes the whole
claim one writer's), marks them fired and records a `reminder.due` event for each (§10) in that
transaction: each fires exactly once, or not at all if the transaction fails (then the next round
claims it again). A reminder found more than `LATE_LIMIT` late (the service was down longer) is
marked skipped instead.
"""
import asyncio
import functools
import logging
import random
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

import access
import dates
import events
import tree
from db import Connection, Database, DatabaseUnavailable, Row
from models import Reminder, Task, UTCDateTime

log = logging.getLogger("task_api.reminders")

reminder_table: sa.Table = Reminder.__table__
task_table: sa.Table = Task.__table__
LATE_LIMIT = timedelta(hours=24)  # fire up to this late after downtime; older ones are skipped
LOOKBACK = timedelta(hours=24)  # GET /api/reminders lists those that fired this recently too
LIST_LIMIT = 500
CLAIM_BATCH = 100

# ----------------------------------------------------------------------------- fire_at (pure)


def compose(specs: list[dict[str, Any]], due_moment: datetime | None, *, saturate: bool = False) -> list[dict[str, Any]]:
    """Reminders as the task shows them, each with its fire_at. `specs` are request bodies or the
    stored JSON (then `at` is text). A relative reminder without a due moment, or one that would
    fire before the year 1, raises ValueError; with `saturate` (a change the client did not ask
    for, such as its zone's), that one fires at the first moment there is instead (long past)."""
    composed = []
    for spec in specs:
        at = _moment(spec.get("at"))
        if at is not None:
            composed.append({"at": dates.format_moment(at), "fire_at": dates.format_moment(at)})
            continue
        if due_moment is None:
            raise ValueError("a before_minutes reminder needs a due_date; set one, or use an absolute {\"at\": ...}")
        before = timedelta(minutes=spec["before_minutes"])
        if due_moment - dates.EARLIEST < before and not saturate:
            raise ValueError(f"{spec['before_minutes']} minutes before the due date is before 0001-01-01T00:00:00Z")
        fire_at = dates.plus(due_moment, -before)
        composed.append({"before_minutes": spec["before_minutes"], "fire_at": dates.format_moment(fire_at)})
    return composed


def shifted(reminders: list[dict[str, Any]], delta: timedelta) -> list[dict[str, Any]]:
    """For the next occurrence: relative reminders as they are, absolute ones moved by `delta` (at
    most to the last moment there is)."""
    return [
        {"at": dates.plus(_moment(reminder["at"]), delta)} if reminder.get("at") else {"before_minutes": reminder["before_minutes"]}
        for reminder in reminders
    ]


def _moment(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def public_reminder(row: Row) -> dict[str, Any]:
    if row["at"] is not None:
        return {"at": row["at"], "fire_at": row["fire_at"]}
    return {"before_minutes": row["before_minutes"], "fire_at": row["fire_at"]}


# ----------------------------------------------------------------------------- the reminder table

# Locked (PostgreSQL): a firing round that has marked one fired but not committed yet is waited for,
# so its state is read as fired, never as still waiting (which would fire it again).
EXISTING_ROWS = sa.select(
    reminder_table.c.before_minutes, reminder_table.c.at, reminder_table.c.fire_at,
    reminder_table.c.state, reminder_table.c.fired_at,
).where(reminder_table.c.task_id == sa.bindparam("task_id")).order_by(reminder_table.c.id).with_for_update()
DELETE_ROWS = sa.delete(reminder_table).where(reminder_table.c.task_id == sa.bindparam("task_id"))
ROW_FIELDS = ("before_minutes", "at", "fire_at", "state", "fired_at")


@functools.lru_cache(maxsize=8)
def _insert_rows_statement(count: int) -> sa.Insert:
    t = reminder_table.c
    rows = [
        {"task_id": sa.bindparam("task_id"), "user_id": sa.bindparam("recipient"),
         **{name: sa.bindparam(f"{name}_{index}", type_=t[name].type) for name in ROW_FIELDS}}
        for index in range(count)
    ]
    return sa.insert(reminder_table).values(rows)


def recipient(task: Row) -> str:
    """Whom a task's reminders fire for."""
    return task["assignee_id"] or task["user_id"]


async def replace_rows(connection: Connection, task: Row) -> None:
    """Make the task's reminder rows match its reminders. One that already fired (or was skipped)
    at the same moment keeps that, so editing a task never fires a reminder twice."""
    done = {}
    for row in await connection.fetch_all(EXISTING_ROWS, {"task_id": task["id"]}):
        if row["state"] is not None:
            done[(row["before_minutes"], row["at"], row["fire_at"])] = (row["state"], row["fired_at"])
    await connection.execute(DELETE_ROWS, {"task_id": task["id"]})
    if not task["reminders"]:
        return
    values: dict[str, Any] = {"task_id": task["id"], "recipient": recipient(task)}
    for index, reminder in enumerate(task["reminders"]):
        before, at, fire_at = reminder.get("before_minutes"), _moment(reminder.get("at")), _moment(reminder["fire_at"])
        state, fired_at = done.get((before, at, fire_at), (None, None))
        row = {"before_minutes": before, "at": at, "fire_at": fire_at, "state": state, "fired_at": fired_at}
        values.update({f"{name}_{index}": value for name, value in row.items()})
    await connection.execute(_insert_rows_statement(len(task["reminders"])), values)


_t_for_recipient = task_table.alias("addressed")
_RECIPIENT = (
    sa.select(sa.func.coalesce(_t_for_recipient.c.assignee_id, _t_for_recipient.c.user_id))
    .where(_t_for_recipient.c.id == reminder_table.c.task_id)
    .scalar_subquery()
)
_readdressed = tree.subtree_of(task_table.c.id == sa.bindparam("task_id"), "readdressed")
READDRESS_SUBTREE = (
    sa.update(reminder_table)
    .where(reminder_table.c.task_id.in_(sa.select(_readdressed.c.id)))
    .values(user_id=_RECIPIENT)
)
READDRESS_LIST = (
    sa.update(reminder_table)
    .where(reminder_table.c.task_id.in_(sa.select(task_table.c.id).where(task_table.c.list_id == sa.bindparam("list_id"))))
    .values(user_id=_RECIPIENT)
)


async def readdress_subtree(connection: Connection, task_id: int) -> None:
    """The reminders of a task and its subtree fire for their tasks' recipients (after a move)."""
    await connection.execute(READDRESS_SUBTREE, {"task_id": task_id})


async def readdress_list(connection: Connection, list_id: int) -> None:
    """The reminders of a list's tasks fire for their tasks' recipients (after assignments changed)."""
    await connection.execute(READDRESS_LIST, {"list_id": list_id})


# ----------------------------------------------------------------------------- GET /api/reminders

_r, _t = reminder_table.c, task_table.c
LISTED_COLUMNS = (
    _r.task_id, _t.title, _t.due_date, _t.all_day, _r.fire_at, _r.before_minutes, _r.at,
)
UPCOMING = (
    sa.select(*LISTED_COLUMNS)
    .join(task_table, _t.id == _r.task_id)
    .where(
        _r.user_id == sa.bindparam("caller"),
        _r.fire_at >= sa.bindparam("since", type_=UTCDateTime()),
        _r.fire_at <= sa.bindparam("until", type_=UTCDateTime()),
        access.may(access.SEE, _t.list_id),
        _t.completed.is_(False),
    )
    .order_by(_r.fire_at, _r.task_id, _r.id)
    .limit(LIST_LIMIT)
)


def listed(row: Row) -> dict[str, Any]:
    """A reminder as /api/reminders lists it, and as a `reminder.due` event carries it."""
    return {
        "task_id": row["task_id"],
        "title": row["title"],
        "due_date": dates.due_value(row),
        "fire_at": row["fire_at"],
        "reminder": public_reminder(row),
    }


async def upcoming(db: Database, user_id: str, now: datetime, until: datetime) -> list[dict[str, Any]]:
    async with db.connect() as connection:
        rows = await connection.fetch_all(UPCOMING, {"caller": user_id, "since": now - LOOKBACK, "until": until})
    return [listed(row) for row in rows]


# ----------------------------------------------------------------------------- firing

SKIP_STALE = (
    sa.update(reminder_table)
    .where(_r.state.is_(None), _r.fire_at < sa.bindparam("stale_before", type_=UTCDateTime()))
    .values(state="skipped")
)
CLAIM = (
    sa.select(_r.id, _r.user_id, *LISTED_COLUMNS)
    .join(task_table, _t.id == _r.task_id)
    .where(
        _r.state.is_(None),
        _r.fire_at <= sa.bindparam("now", type_=UTCDateTime()),
        _r.fire_at >= sa.bindparam("stale_before", type_=UTCDateTime()),
        _t.completed.is_(False),
        # Its recipient still sees the task (a creator who left the list does not).
        sa.exists().where(access.member_table.c.list_id == _t.list_id, access.member_table.c.user_id == _r.user_id),
    )
    .order_by(_r.fire_at, _r.id)
    .limit(CLAIM_BATCH)
    .with_for_update(of=reminder_table, skip_locked=True)  # PostgreSQL only; SQLite renders no clause
)


@functools.lru_cache(maxsize=CLAIM_BATCH + 1)
def _mark_fired_statement(count: int) -> sa.Update:
    ids = [sa.bindparam(f"id_{index}") for index in range(count)]
    return (
        sa.update(reminder_table)
        .where(_r.id.in_(ids))
        .values(state="fired", fired_at=sa.bindparam("now", type_=UTCDateTime()))
    )


async def fire_due(db: Database, now: datetime) -> int:
    """One round: claim what is due, mark it fired, record a `reminder.due` event per reminder (last,
    one user after the other in user id order, so two claimers never wait on each other's counter
    rows in opposite orders); the number fired."""
    async with db.transaction() as connection:
        await connection.execute(SKIP_STALE, {"stale_before": now - LATE_LIMIT})
        rows = await connection.fetch_all(CLAIM, {"now": now, "stale_before": now - LATE_LIMIT})
        if not rows:
            return 0
        ids = {f"id_{index}": row["id"] for index, row in enumerate(rows)}
        await connection.execute(_mark_fired_statement(len(rows)), {"now": now, **ids})
        for user_id in sorted({row["user_id"] for row in rows}):
            due = [events.to_user(user_id, events.REMINDER_DUE, row["task_id"], listed(row)) for row in rows if row["user_id"] == user_id]
            await events.record(connection, None, due)  # the service did it: no actor
    return len(rows)


async def fire_reminders_forever(db: Database, interval: float) -> None:
    """The background loop of one worker: a round every `interval` seconds (jittered, so workers
    started together do not poll in step), more at once while a round finds a full batch."""
    while True:
        await asyncio.sleep(interval * random.uniform(0.5, 1.0))
        try:
            while await fire_due(db, dates.utc_now()) == CLAIM_BATCH:
                pass
        except DatabaseUnavailable:
            log.warning("reminders not fired this round: the database is unavailable")
        except Exception:
            log.exception("reminders not fired this round")
