"""Lists, subtasks and manual order: the `list` table; `list_id`, `parent_id`, `position` on tasks.

Every user who has tasks gets their default list (`Inbox`) here, and their tasks go into it, in the
order they were created (positions from fractional indexing, as the service makes them).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""
from collections.abc import Sequence
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op
from fractional_indexing import BASE_62_DIGITS, generate_key_between

from migrations.sqlite_ids import batch_alter_keeping_ids
from models import PositionType, UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_LIST_NAME = "Inbox"
FIRST_POSITION = generate_key_between(None, None)

list_table = sa.table(
    "list",
    sa.column("id", sa.Integer), sa.column("user_id", sa.String), sa.column("name", sa.String),
    sa.column("is_default", sa.Boolean), sa.column("position", sa.String),
    sa.column("created_at", UTCDateTime()), sa.column("updated_at", UTCDateTime()), sa.column("version", sa.Integer),
)
task_table = sa.table("task", sa.column("user_id", sa.String))


def upgrade() -> None:
    op.create_table(
        "list",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("color", sa.String(7), nullable=True),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("position", PositionType, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_list")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_list_user_id_position", "list", ["user_id", "position", "id"])
    op.create_index(
        "uq_list_user_id_default", "list", ["user_id"], unique=True,
        sqlite_where=sa.text("is_default"), postgresql_where=sa.text("is_default"),
    )
    op.add_column("task", sa.Column("list_id", sa.Integer(), nullable=True))
    op.add_column("task", sa.Column("parent_id", sa.Integer(), nullable=True))
    op.add_column("task", sa.Column("position", PositionType, nullable=True))
    _backfill()
    # SQLite rebuilds the table (batch mode): keep AUTOINCREMENT and its counter (sqlite_ids.py).
    with batch_alter_keeping_ids("task") as batch:
        batch.alter_column("list_id", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("position", existing_type=PositionType, nullable=False)
        batch.create_foreign_key(op.f("fk_task_list_id_list"), "list", ["list_id"], ["id"])
        batch.create_foreign_key(op.f("fk_task_parent_id_task"), "task", ["parent_id"], ["id"])
        batch.create_index("ix_task_list_id_parent_id_position", ["list_id", "parent_id", "position", "id"])
        batch.create_index("ix_task_parent_id_position", ["parent_id", "position", "id"])


def _backfill() -> None:
    """A default list for every user with tasks; each task into it, positions in created order.
    Two statements whatever the number of tasks (issue 23: a row at a time, 50,000 tasks kept the
    table locked 8 s of the upgrade on PostgreSQL)."""
    connection = op.get_bind()
    now = datetime.now(timezone.utc)
    defaults = sa.select(
        task_table.c.user_id,
        sa.literal(DEFAULT_LIST_NAME, sa.String),
        sa.literal(True, sa.Boolean),
        sa.literal(FIRST_POSITION, sa.String),
        sa.literal(now, UTCDateTime()),
        sa.literal(now, UTCDateTime()),
        sa.literal(1, sa.Integer),
    ).group_by(task_table.c.user_id)
    connection.execute(
        sa.insert(list_table).from_select(
            ["user_id", "name", "is_default", "position", "created_at", "updated_at", "version"], defaults
        )
    )
    connection.execute(sa.text(PLACE_IN_DEFAULT_LISTS))


def _nth_key(n: str) -> str:
    """SQL for the n-th (from 0) key that generate_key_between(previous, None) gives from 'a0' on:
    a0..az (62 keys), then b00..bzz (62**2), c000..czzz (62**3)...: the head letter says how many
    base-62 digits follow. Up to 'f' (57 billion keys: more than an int4 id can number)."""
    cases, first = [], 0
    for length in range(1, 7):
        head = chr(ord("a") + length - 1)
        digits = " || ".join(
            f"substr('{BASE_62_DIGITS}', CAST((({n}) - {first}) / {62 ** power} % 62 AS INTEGER) + 1, 1)"
            for power in reversed(range(length))
        )
        cases.append(f"WHEN ({n}) < {first + 62 ** length} THEN '{head}' || {digits}")
        first += 62**length
    return f"CASE {' '.join(cases)} END"


# Each task into its owner's default list, numbered in created order (ties by id) from 0 per user.
PLACE_IN_DEFAULT_LISTS = f"""
UPDATE task SET list_id = ranked.list_id, position = {_nth_key("ranked.n")}
FROM (
    SELECT task.id AS id, list.id AS list_id,
           row_number() OVER (PARTITION BY task.user_id ORDER BY task.created_at, task.id) - 1 AS n
    FROM task JOIN list ON list.user_id = task.user_id AND list.is_default
) AS ranked
WHERE task.id = ranked.id
"""


def downgrade() -> None:
    with batch_alter_keeping_ids("task") as batch:
        batch.drop_index("ix_task_parent_id_position")
        batch.drop_index("ix_task_list_id_parent_id_position")
        batch.drop_constraint(op.f("fk_task_parent_id_task"), type_="foreignkey")
        batch.drop_constraint(op.f("fk_task_list_id_list"), type_="foreignkey")
        batch.drop_column("position")
        batch.drop_column("parent_id")
        batch.drop_column("list_id")
    op.drop_table("list")
