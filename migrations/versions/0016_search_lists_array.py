"""`q=`'s count over all of a user's lists reads the trigram index once (PostgreSQL only).

ix_task_search gains a column: the task's list as a one-element array (`ARRAY[list_id]`, GIN's
array_ops). The count of a search over the caller's lists names them as one array
(`ARRAY[list_id] && ARRAY[1, 2, ...]`): one scan of the index, where `CAST(list_id AS BIGINT) IN
(1, 2, ...)` made one scan per list, each reading the word's trigrams again (a common word, 9 lists,
100,000 tasks: the index scan 39 -> 14 ms, the count 75 -> 45 ms). A page still reads each list on its
own through the bigint column (as 0013 made it): there, the planner walks an order's index for a
common word, and reads the index only for a rare one.

One extra entry per task in the index; the trigrams are extracted once, as before. The new index's
expressions have no statistics until `task` is analyzed, and without them the planner takes every
word for a rare one (a common word's page: 4 -> 90 ms): both ways end with ANALYZE.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""
from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# models.SEARCHED_TEXT_SQL as of this revision (a migration keeps its SQL); the separator is chr(31).
SEARCHED_TEXT = "lower(title) || E'\\x1f' || lower(coalesce(description, ''))"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_task_search")
        op.execute(
            "CREATE INDEX ix_task_search ON task USING gin "
            f"((CAST(list_id AS BIGINT)), (ARRAY[list_id]), ({SEARCHED_TEXT}) gin_trgm_ops)"
        )
        op.execute("ANALYZE task")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_task_search")
        op.execute(f"CREATE INDEX ix_task_search ON task USING gin ((CAST(list_id AS BIGINT)), ({SEARCHED_TEXT}) gin_trgm_ops)")
        op.execute("ANALYZE task")
