"""The top level of each list in manual order, as its own (partial) index: finding the last position
of a list's top level (every create) walks it from one end instead of sorting all the list's tasks.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TOP_LEVEL = sa.text("parent_id IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_task_top_level_position", "task", ["list_id", "position", "id"],
        postgresql_where=TOP_LEVEL, sqlite_where=TOP_LEVEL,
    )


def downgrade() -> None:
    op.drop_index("ix_task_top_level_position", table_name="task")
