"""One index for a list's tasks instead of two: every task write updates one index less.

- ix_task_list_id_user_id_created_at (list_id, user_id, created_at, id) replaces both
  ix_task_user_id_list_id_created_at (user_id, list_id, created_at, id) and
  ix_task_list_id_parent_id_position (list_id, parent_id, position, id).
- `?list_id=` in the default order, its count and `stats&list_id` name both the list and the user:
  with both columns equal, their order in the index does not matter (100,000-task user, `make
  bench-scale`: list_id 1.2 -> 1.1 ms, stats&list_id 4.9 -> 3.2). A list's task counts (GET
  /api/lists) and the foreign key check when a list is deleted name only the list: the list comes
  first now, as it did in the dropped (list_id, parent_id, position) index. A list's top level in
  manual order has its own partial index (0008), subtasks theirs (parent_id, position).
- The write side (pgbench, the PATCH and toggle statements the service sends, 8 clients, fresh
  copies of the bench database, 3 alternating pairs): 7,460 -> 8,200 updates and 6,620 -> 7,010
  toggles per second.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26
"""
from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_task_list_id_user_id_created_at", "task", ["list_id", "user_id", "created_at", "id"])
    op.drop_index("ix_task_user_id_list_id_created_at", "task")
    op.drop_index("ix_task_list_id_parent_id_position", "task")


def downgrade() -> None:
    op.create_index("ix_task_list_id_parent_id_position", "task", ["list_id", "parent_id", "position", "id"])
    op.create_index("ix_task_user_id_list_id_created_at", "task", ["user_id", "list_id", "created_at", "id"])
    op.drop_index("ix_task_list_id_user_id_created_at", "task")
