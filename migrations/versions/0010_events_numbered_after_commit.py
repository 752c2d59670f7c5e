"""Events are numbered after they commit (events.sequence), so a write no longer takes its user's
counter lock: `event.seq` may be NULL until then, and a partial index finds the events still to
be numbered.

Existing events keep their numbers; the counters stay as they are.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.sqlite_ids import batch_alter_keeping_ids

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNSEQUENCED = sa.text("seq IS NULL")


def upgrade() -> None:
    # SQLite rebuilds the table for the column change: keep AUTOINCREMENT and its counter (ids never
    # reused: they are the webhooks' message ids; sqlite_ids.py).
    with batch_alter_keeping_ids("event") as batch:
        batch.alter_column("seq", existing_type=sa.BigInteger(), nullable=True)
    op.create_index(
        "ix_event_unsequenced", "event", ["user_id", "id"], postgresql_where=UNSEQUENCED, sqlite_where=UNSEQUENCED
    )


def downgrade() -> None:
    _number_pending()
    op.drop_index("ix_event_unsequenced", table_name="event")
    with batch_alter_keeping_ids("event") as batch:
        batch.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)


def _number_pending() -> None:
    """Number what is pending the old way: in id order after each user's last number, and each
    counter at its user's last number. Two statements, whatever the number of events."""
    op.execute(SET_COUNTERS_PAST_PENDING)  # first: it counts the pending events
    op.execute(NUMBER_PENDING)


LAST_GIVEN = "coalesce((SELECT max(given.seq) FROM event AS given WHERE given.user_id = pending.user_id), 0)"
SET_COUNTERS_PAST_PENDING = f"""
INSERT INTO user_event_counter (user_id, seq)
SELECT pending.user_id, {LAST_GIVEN} + count(*) FROM event AS pending WHERE pending.seq IS NULL GROUP BY pending.user_id
ON CONFLICT (user_id) DO UPDATE SET seq = excluded.seq
"""
NUMBER_PENDING = f"""
UPDATE event SET seq = numbered.seq
FROM (
    SELECT pending.id AS id, {LAST_GIVEN} + row_number() OVER (PARTITION BY pending.user_id ORDER BY pending.id) AS seq
    FROM event AS pending WHERE pending.seq IS NULL
) AS numbered
WHERE event.id = numbered.id
"""
