"""The user's settings (§9): their time zone, in `user_settings` keyed by the token's `sub`.

No row means the defaults. Changing the zone moves the due moment (and the reminders) of the
all-day tasks the user created that follow the setting (`time_zone` null), in the same transaction,
with a task.updated event for each task moved, for every member of its list (§10).
"""
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

import dates
import events
import reminders
from db import Connection, Database
from models import Task, UserSettings, UTCDateTime
from task_sql import public

settings_table: sa.Table = UserSettings.__table__
task_table: sa.Table = Task.__table__
DEFAULTS = {"time_zone": dates.UTC_NAME}

FIND_ZONE = sa.select(settings_table.c.time_zone).where(settings_table.c.user_id == sa.bindparam("user_id"))
# In a write: PostgreSQL waits for a settings change in flight (FOR SHARE), so a task written
# meanwhile gets the new zone, not the one that change is moving tasks away from. SQLite's single
# writer gives the same.
FIND_ZONE_TO_WRITE = FIND_ZONE.with_for_update(read=True)
_SETTINGS_VALUES = {
    "user_id": sa.bindparam("user_id"),
    "time_zone": sa.bindparam("time_zone"),
    "updated_at": sa.bindparam("now", type_=UTCDateTime()),
}
UPSERT = {
    "postgresql": postgresql.insert(settings_table).values(_SETTINGS_VALUES).on_conflict_do_update(
        index_elements=["user_id"], set_={"time_zone": sa.bindparam("time_zone"), "updated_at": sa.bindparam("now", type_=UTCDateTime())}
    ),
    "sqlite": sqlite.insert(settings_table).values(_SETTINGS_VALUES).on_conflict_do_update(
        index_elements=["user_id"], set_={"time_zone": sa.bindparam("time_zone"), "updated_at": sa.bindparam("now", type_=UTCDateTime())}
    ),
}
_t = task_table.c
FOLLOWING_TASKS = (
    sa.select(_t.id, _t.user_id, _t.assignee_id, _t.all_day, _t.reminders)
    .where(_t.user_id == sa.bindparam("user_id"), _t.all_day.is_not(None), _t.time_zone.is_(None))
    .order_by(_t.id)
    .with_for_update()
)
_NOW = sa.bindparam("now", type_=UTCDateTime())
MOVE_DUE = (
    sa.update(task_table)
    .where(_t.id == sa.bindparam("task_id"))
    .values(due_date=sa.bindparam("due_date", type_=UTCDateTime()), reminders=sa.bindparam("new_reminders", type_=sa.JSON()),
            version=_t.version + 1, updated_at=sa.case((_t.updated_at < _NOW, _NOW), else_=_t.updated_at))
    .returning(*task_table.c)
)


async def zone_of(connection: Connection, user_id: str, *, to_write: bool = False) -> str:
    statement = FIND_ZONE_TO_WRITE if to_write else FIND_ZONE
    return await connection.fetch_value(statement, {"user_id": user_id}) or DEFAULTS["time_zone"]


async def get_settings(db: Database, user_id: str) -> dict[str, Any]:
    async with db.connect() as connection:
        return {"time_zone": await zone_of(connection, user_id)}


async def set_time_zone(db: Database, user_id: str, zone_name: str) -> dict[str, Any]:
    async with db.transaction(writer=user_id) as connection:
        if await zone_of(connection, user_id) == zone_name:
            return {"time_zone": zone_name}  # nothing moves: the tasks keep their ETags
        now = dates.utc_now()
        await connection.execute(UPSERT[connection.dialect], {"user_id": user_id, "time_zone": zone_name, "now": now})
        moved = [await _move_all_day(connection, task, zone_name, now)
                 for task in await connection.fetch_all(FOLLOWING_TASKS, {"user_id": user_id})]
        await events.record(
            connection, user_id, [events.to_members(task["list_id"], events.TASK_UPDATED, task["id"], public(task)) for task in moved]
        )
    return {"time_zone": zone_name}


async def _move_all_day(connection: Connection, task: dict[str, Any], zone_name: str, now: datetime) -> dict[str, Any]:
    """The task with its due moment in the new zone (and its reminders after it): the row written."""
    due_moment = dates.end_of_day(date.fromisoformat(task["all_day"]), zone_name)
    task["reminders"] = reminders.compose(task["reminders"], due_moment, saturate=True)
    written = await connection.fetch_one(
        MOVE_DUE, {"task_id": task["id"], "due_date": due_moment, "new_reminders": task["reminders"], "now": now}
    )
    if task["reminders"]:
        await reminders.replace_rows(connection, task)
    return written
