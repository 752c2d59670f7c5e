"""Dates (§9): all-day dates, time zones, recurrence, reminders, user settings.

`task.due_date` becomes the derived due moment; existing due dates are moments and stay as they
are (`all_day` null).

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-25
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.sqlite_ids import batch_alter_keeping_ids
from models import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with batch_alter_keeping_ids("task") as batch:
        batch.add_column(sa.Column("all_day", sa.String(10), nullable=True))
        batch.add_column(sa.Column("time_zone", sa.String(64), nullable=True))
        batch.add_column(sa.Column("recurrence", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("series_start", sa.String(40), nullable=True))
        batch.add_column(sa.Column("series_index", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("next_occurrence_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("reminders", sa.JSON(), nullable=False, server_default="[]"))
    op.create_index("ix_task_user_id_due_date", "task", ["user_id", "due_date", "id"])
    op.create_table(
        "user_settings",
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_settings")),
    )
    op.create_table(
        "reminder",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("before_minutes", sa.Integer(), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=True),
        sa.Column("fire_at", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(8), nullable=True),
        sa.Column("fired_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["task.id"], name=op.f("fk_reminder_task_id_task"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reminder")),
        sqlite_autoincrement=True,
    )
    pending = sa.text("state IS NULL")
    op.create_index("ix_reminder_fire_at", "reminder", ["fire_at"], postgresql_where=pending, sqlite_where=pending)
    op.create_index("ix_reminder_user_id_fire_at", "reminder", ["user_id", "fire_at"])
    op.create_index("ix_reminder_task_id", "reminder", ["task_id"])


def downgrade() -> None:
    op.drop_table("reminder")
    op.drop_table("user_settings")
    op.drop_index("ix_task_user_id_due_date", "task")
    # SQLite rebuilds the table to drop columns: keep AUTOINCREMENT and its counter (sqlite_ids.py).
    with batch_alter_keeping_ids("task") as batch:
        for column in ("reminders", "next_occurrence_id", "series_index", "series_start", "recurrence", "time_zone", "all_day"):
            batch.drop_column(column)
