"""Indexes for one user with many tasks (issue #15): every sort of the listing, the counts of its
filters, stats and tags read an index range of that user instead of all their rows.

PostgreSQL: index-only counts (a covering index on the counted columns) and expression indexes on
the exact expressions queries.py sorts by. No trigram index for `q=`: measured, it did not pay (README,
"A user with 100,000 tasks").
SQLite: the indexes it can use the same way; none on lower(), which the service replaces with a
Unicode-aware function of its own (drivers.py) that other connections would not have.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Exactly queries.PRIORITY_RANK as it compiles (models.PRIORITY_RANK_SQL then): an index on an
# expression serves only a query with the same expression. Spelt out here: a migration keeps its SQL.
PRIORITY_RANK = "(CASE WHEN (priority = 'low') THEN 1 WHEN (priority = 'medium') THEN 2 WHEN (priority = 'high') THEN 3 END)"


def upgrade() -> None:
    op.create_index("ix_task_user_id_updated_at", "task", ["user_id", "updated_at", "id"])
    op.create_index("ix_task_user_id_priority_rank", "task", ["user_id", sa.text(PRIORITY_RANK), "id"])
    if op.get_bind().dialect.name == "postgresql":
        op.create_index("ix_task_user_id_title", "task", ["user_id", sa.text("lower(title)"), "id"])
    # Counts of completed / overdue / due ranges / priority / top level / list, and stats: on
    # PostgreSQL an index-only scan (the included columns serve the filters; no table rows read).
    op.create_index(
        "ix_task_user_id_completed_due_date", "task", ["user_id", "completed", "due_date"],
        postgresql_include=["priority", "parent_id", "list_id"],
    )
    op.create_index("ix_task_tag_user_id_tag_key_tag", "task_tag", ["user_id", "tag_key", "tag"])


def downgrade() -> None:
    op.drop_index("ix_task_tag_user_id_tag_key_tag", "task_tag")
    op.drop_index("ix_task_user_id_completed_due_date", "task")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_task_user_id_title", "task")
    op.drop_index("ix_task_user_id_priority_rank", "task")
    op.drop_index("ix_task_user_id_updated_at", "task")
