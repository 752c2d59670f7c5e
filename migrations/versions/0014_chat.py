"""Chat (contract §13): conversations per user and their messages.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-27
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from models import UTCDateTime

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "conversation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("thread_id", sa.String(64), nullable=False),
        sa.Column("title", sa.String(100), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversation")),
        sqlite_autoincrement=True,  # a deleted conversation's id is never handed out again
    )
    op.create_index("ix_conversation_user_id_updated_at", "conversation", ["user_id", "updated_at", "id"])
    op.create_index("uq_conversation_thread_id", "conversation", ["thread_id"], unique=True)
    op.create_table(
        "chat_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(9), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("tool_calls", sa.JSON(), nullable=False),
        sa.Column("item_id", sa.String(64), nullable=False),
        sa.Column("item", sa.JSON(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("role IN ('user', 'assistant')", name=op.f("ck_chat_message_role_known")),
        sa.ForeignKeyConstraint(
            ["conversation_id"], ["conversation.id"],
            name=op.f("fk_chat_message_conversation_id_conversation"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_message")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_chat_message_conversation_id_id", "chat_message", ["conversation_id", "id"])
    op.create_index(
        "uq_chat_message_conversation_id_item_id", "chat_message", ["conversation_id", "item_id"], unique=True
    )


def downgrade() -> None:
    op.drop_table("chat_message")
    op.drop_table("conversation")
