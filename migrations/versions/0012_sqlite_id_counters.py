"""SQLite: each AUTOINCREMENT counter back above every id the database still remembers handing out.

Before this revision, 0003 (task) and 0010 (event) rebuilt their table on SQLite and left its
counter at the highest surviving id (migrations/sqlite_ids.py says why; they keep it now). On a
database upgraded that way, the next task got the id (and the ETag) of a task deleted before the
upgrade, and the next event the id (the webhooks' message id) of a purged one. The database still
remembers most ids it gave out:

- task: the feed (`entity_id` of task.* and reminder.due events; `parent_id` and
  `next_occurrence_id` in their data), references between rows (`parent_id`,
  `next_occurrence_id`, reminders, tags) and the Idempotency-Key rows of task creations.
- list: the feed (list.* events; `list_id` in task events' data), `task.list_id` and the
  Idempotency-Key rows of list creations.
- event: every event ever committed has a number in its user's feed, so the numbers given
  (user_event_counter) plus those still to be given bound the ids handed out (ids are 1, 2, 3...).
- reminder: nothing outside its own rows (reminder ids never leave the database).

Each counter is raised to at least the highest of those, never lowered. An id the database no longer
remembers anywhere (deleted, its events purged) cannot be recovered. PostgreSQL: nothing to do (its
sequences are not reset by ALTER TABLE).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.sqlite_ids import raise_counter

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TASK_EVENTS = "(type LIKE 'task.%' OR type = 'reminder.due')"
# Responses stored by Idempotency-Key: a task's has a title, a list's a name and no title.
KEYED_TASK = "json_valid(response_body) AND json_extract(response_body, '$.title') IS NOT NULL"
KEYED_LIST = "json_valid(response_body) AND json_extract(response_body, '$.title') IS NULL"

REMEMBERED_IDS: dict[str, list[str]] = {
    "task": [
        "SELECT max(id) FROM task",
        "SELECT max(parent_id) FROM task",
        "SELECT max(next_occurrence_id) FROM task",
        "SELECT max(task_id) FROM reminder",
        "SELECT max(task_id) FROM task_tag",
        f"SELECT max(entity_id) FROM event WHERE {TASK_EVENTS}",
        "SELECT max(json_extract(data, '$.parent_id')) FROM event WHERE type LIKE 'task.%'",
        "SELECT max(json_extract(data, '$.next_occurrence_id')) FROM event WHERE type LIKE 'task.%'",
        f"SELECT max(task_id) FROM idempotency_key WHERE {KEYED_TASK}",
    ],
    "list": [
        "SELECT max(id) FROM list",
        "SELECT max(list_id) FROM task",
        "SELECT max(entity_id) FROM event WHERE type LIKE 'list.%'",
        "SELECT max(json_extract(data, '$.list_id')) FROM event WHERE type LIKE 'task.%'",
        f"SELECT max(task_id) FROM idempotency_key WHERE {KEYED_LIST}",
    ],
    "event": [
        "SELECT max(id) FROM event",
        "SELECT (SELECT coalesce(sum(seq), 0) FROM user_event_counter) + (SELECT count(*) FROM event WHERE seq IS NULL)",
    ],
    "reminder": ["SELECT max(id) FROM reminder"],
}


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "sqlite":
        return
    for table_name, queries in REMEMBERED_IDS.items():
        remembered = [connection.execute(sa.text(query)).scalar() for query in queries]
        raise_counter(table_name, max((int(value) for value in remembered if value is not None), default=0))


def downgrade() -> None:
    pass  # a counter raised stays raised: lowering it would hand out ids again
