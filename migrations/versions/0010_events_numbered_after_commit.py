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
    # Number what is pending the old way first: in id order after each user's counter.
    connection = op.get_bind()
    pending = connection.execute(
        sa.text("SELECT user_id, id FROM event WHERE seq IS NULL ORDER BY user_id, id")
    ).all()
    last: dict[str, int] = {}
    for user_id, event_id in pending:
        if user_id not in last:
            last[user_id] = connection.execute(
                sa.text("SELECT coalesce(max(seq), 0) FROM event WHERE user_id = :user_id"), {"user_id": user_id}
            ).scalar_one()
        last[user_id] += 1
        connection.execute(sa.text("UPDATE event SET seq = :seq WHERE id = :id"), {"seq": last[user_id], "id": event_id})
    for user_id, seq in last.items():
        connection.execute(
            sa.text("INSERT INTO user_event_counter (user_id, seq) VALUES (:user_id, :seq)"
                    " ON CONFLICT (user_id) DO UPDATE SET seq = excluded.seq"),
            {"seq": seq, "user_id": user_id},
        )
    op.drop_index("ix_event_unsequenced", table_name="event")
    with batch_alter_keeping_ids("event") as batch:
        batch.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
