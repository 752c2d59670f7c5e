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
from fractional_indexing import generate_key_between

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
task_table = sa.table(
    "task",
    sa.column("id", sa.Integer), sa.column("user_id", sa.String), sa.column("created_at", UTCDateTime()),
    sa.column("list_id", sa.Integer), sa.column("position", sa.String),
)


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
    """A default list for every user with tasks; each task into it, positions in created order."""
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
    default_list = (
        sa.select(list_table.c.id)
        .where(list_table.c.user_id == task_table.c.user_id, list_table.c.is_default)
        .scalar_subquery()
    )
    connection.execute(sa.update(task_table).values(list_id=default_list))
    ordered = connection.execute(
        sa.select(task_table.c.id, task_table.c.user_id).order_by(
            task_table.c.user_id, task_table.c.created_at, task_table.c.id
        )
    )
    positions, user, last = [], None, None
    for task_id, user_id in ordered:
        if user_id != user:
            user, last = user_id, None
        last = generate_key_between(last, None)
        positions.append({"task_id": task_id, "new_position": last})
    if positions:
        connection.execute(
            sa.update(task_table)
            .where(task_table.c.id == sa.bindparam("task_id"))
            .values(position=sa.bindparam("new_position")),
            positions,
        )


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
