"""Outbound events: how far each user's events went out to EVENTS_WEBHOOK_URL, and the lease that
lets one process at a time deliver them.

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-25
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from models import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEASE_NAME = "events-webhook"  # webhooks.LEASE_NAME (a migration does not import the app)


def upgrade() -> None:
    op.create_table(
        "webhook_delivery",
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("delivered_seq", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("retry_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_webhook_delivery")),
    )
    lease = op.create_table(
        "webhook_lease",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(255), nullable=True),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_webhook_lease")),
    )
    op.bulk_insert(lease, [{"name": LEASE_NAME, "holder": None, "token": 0}])


def downgrade() -> None:
    op.drop_table("webhook_lease")
    op.drop_table("webhook_delivery")
