"""A list's tasks and `q=` for a user with many tasks (issue #15).

- ix_task_user_id_list_id_created_at (both databases): `?list_id=` in the default order walks the
  list's own range (100,000-task user, a list of 11,000: 32 -> 2 ms), its count and `stats&list_id`
  read only that range of this index, and a tree page's count too.

PostgreSQL only:
- ix_task_search: GIN on (lower(user_id), models.SEARCHED_TEXT_SQL with gin_trgm_ops). A rare word is
  found among that user's tasks only (100,000-task user: 107 -> ~2 ms); the count of a common word
  reads its matches instead of all the user's tasks. `lower(user_id)` (btree_gin), not `user_id`:
  only a search names that expression, so plain `user_id =` listings never pick this index (with
  `user_id` itself they did, and a two-tag listing hit the 5 s deadline).
- st_task_user_key: extended statistics saying user_id decides lower(user_id), so a search's two user
  conditions are not counted as independent (without it the planner thought a user had 1/3000 of
  their tasks, and read a common word's matches to sort them instead of walking an order's index).
  PostgreSQL 14 and later (statistics on expressions); older servers go without.

Every write of a title or description updates the index (GIN's pending list takes most of that).
The extensions pg_trgm and btree_gin (trusted: the database owner may create them) stay on downgrade.
SQLite: no search index (a search there reads the user's tasks, as before).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""
from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# models.SEARCHED_TEXT_SQL as of this revision (a migration keeps its SQL); the separator is chr(31).
SEARCHED_TEXT = "lower(title) || E'\\x1f' || lower(coalesce(description, ''))"


def upgrade() -> None:
    op.create_index("ix_task_user_id_list_id_created_at", "task", ["user_id", "list_id", "created_at", "id"])
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    op.execute(f"CREATE INDEX ix_task_search ON task USING gin (lower(user_id), ({SEARCHED_TEXT}) gin_trgm_ops)")
    if bind.dialect.server_version_info >= (14,):
        op.execute("CREATE STATISTICS st_task_user_key (dependencies) ON user_id, lower(user_id) FROM task")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP STATISTICS IF EXISTS st_task_user_key")
        op.execute("DROP INDEX ix_task_search")
    op.drop_index("ix_task_user_id_list_id_created_at", "task")
