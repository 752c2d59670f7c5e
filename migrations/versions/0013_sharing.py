"""Sharing a list (contract §12): members with roles, invitations, assignees, and the actor of each event.

- `list_member`: one row per member of a list, the owner included. Every existing list gets its
  owner as `owner` member, with the list's position as that member's own position (a member orders
  their lists for themselves, so `list.position` moves there). `list.user_id` becomes `owner_id`.
- `list_invitation`: pending invitations by email.
- `task.assignee_id`; `event.actor` (existing events: their user made them, except `reminder.due`,
  which the service did).
- What a user sees is no longer "the rows with my user_id" but "the rows of my lists": the task
  indexes that led with `user_id` lead with `list_id` now (a listing reads each of the caller's lists
  in its own index range), and `task_tag` carries the task's list instead of its user.

Every backfill is one set-based statement.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from models import PositionType, UTCDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# models.PRIORITY_RANK_SQL and models.SEARCHED_TEXT_SQL as of this revision (a migration keeps its SQL).
PRIORITY_RANK = "(CASE WHEN (priority = 'low') THEN 1 WHEN (priority = 'medium') THEN 2 WHEN (priority = 'high') THEN 3 END)"
SEARCHED_TEXT = "lower(title) || E'\\x1f' || lower(coalesce(description, ''))"
FOLLOWING_ZONE = sa.text("all_day IS NOT NULL AND time_zone IS NULL")
IS_DEFAULT = sa.text("is_default")


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "list_member",
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("role", sa.String(6), nullable=False),
        sa.Column("position", PositionType, nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("joined_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("role IN ('owner', 'editor', 'viewer')", name=op.f("ck_list_member_role_known")),
        sa.ForeignKeyConstraint(["list_id"], ["list.id"], name=op.f("fk_list_member_list_id_list"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("list_id", "user_id", name=op.f("pk_list_member")),
    )
    op.create_index("ix_list_member_user_id", "list_member", ["user_id", "list_id", "role"])
    op.execute(
        "INSERT INTO list_member (list_id, user_id, role, position, joined_at)"
        " SELECT id, user_id, 'owner', position, created_at FROM list"
    )
    op.create_table(
        "list_invitation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("email_key", sa.String(320), nullable=False),
        sa.Column("role", sa.String(6), nullable=False),
        sa.Column("invited_by", sa.String(255), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("role IN ('editor', 'viewer')", name=op.f("ck_list_invitation_role_known")),
        sa.ForeignKeyConstraint(["list_id"], ["list.id"], name=op.f("fk_list_invitation_list_id_list"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_list_invitation")),
        sa.UniqueConstraint("list_id", "email_key", name=op.f("uq_list_invitation_list_id_email_key")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_list_invitation_email_key", "list_invitation", ["email_key"])

    # The list: its owner, and no position of its own (each member has theirs).
    op.drop_index("ix_list_user_id_position", "list")
    op.drop_index("uq_list_user_id_default", "list")
    op.execute("ALTER TABLE list DROP COLUMN position")
    op.execute("ALTER TABLE list RENAME COLUMN user_id TO owner_id")
    op.create_index("ix_list_owner_id", "list", ["owner_id"])
    op.create_index("uq_list_owner_id_default", "list", ["owner_id"], unique=True, sqlite_where=IS_DEFAULT, postgresql_where=IS_DEFAULT)

    op.add_column("task", sa.Column("assignee_id", sa.String(255), nullable=True))
    op.add_column("event", sa.Column("actor", sa.String(255), nullable=True))
    op.execute("UPDATE event SET actor = user_id WHERE type <> 'reminder.due'")

    _tags_by_list()
    _task_indexes_by_list(postgresql)


def _tags_by_list() -> None:
    op.add_column("task_tag", sa.Column("list_id", sa.Integer(), nullable=True))
    op.execute("UPDATE task_tag SET list_id = (SELECT task.list_id FROM task WHERE task.id = task_tag.task_id)")
    op.drop_index("ix_task_tag_user_id_tag_key", "task_tag")
    op.drop_index("ix_task_tag_user_id_tag_key_tag", "task_tag")
    with op.batch_alter_table("task_tag") as batch:  # SQLite: a rebuild (task_tag has no AUTOINCREMENT)
        batch.alter_column("list_id", existing_type=sa.Integer(), nullable=False)
        batch.drop_column("user_id")
    op.create_index("ix_task_tag_list_id_tag_key", "task_tag", ["list_id", "tag_key", "task_id"])
    op.create_index("ix_task_tag_list_id_tag_key_tag", "task_tag", ["list_id", "tag_key", "tag"])


def _task_indexes_by_list(postgresql: bool) -> None:
    for name in (
        "ix_task_user_id_created_at", "ix_task_list_id_user_id_created_at", "ix_task_user_id_due_date",
        "ix_task_user_id_updated_at", "ix_task_user_id_priority_rank", "ix_task_user_id_completed_due_date",
    ):
        op.drop_index(name, "task")
    op.create_index("ix_task_list_id_created_at", "task", ["list_id", "created_at", "id"])
    op.create_index("ix_task_list_id_due_date", "task", ["list_id", "due_date", "id"])
    op.create_index("ix_task_list_id_updated_at", "task", ["list_id", "updated_at", "id"])
    op.create_index("ix_task_list_id_priority_rank", "task", ["list_id", sa.text(PRIORITY_RANK), "id"])
    op.create_index(
        "ix_task_list_id_completed_due_date", "task", ["list_id", "completed", "due_date"],
        postgresql_include=["priority", "parent_id", "assignee_id"],
    )
    op.create_index("ix_task_user_id_following_zone", "task", ["user_id"], postgresql_where=FOLLOWING_ZONE, sqlite_where=FOLLOWING_ZONE)
    if postgresql:
        op.drop_index("ix_task_user_id_title", "task")
        op.create_index("ix_task_list_id_title", "task", ["list_id", sa.text("lower(title)"), "id"])
        op.execute("DROP STATISTICS IF EXISTS st_task_user_key")
        op.execute("DROP INDEX ix_task_search")
        # The list's id as a bigint: an expression only a search names (models.SEARCH_SCOPE_SQL), so
        # plain `list_id =` listings never pick this index, as lower(user_id) did before.
        op.execute(f"CREATE INDEX ix_task_search ON task USING gin ((CAST(list_id AS BIGINT)), ({SEARCHED_TEXT}) gin_trgm_ops)")
        if op.get_bind().dialect.server_version_info >= (14,):
            # A search names its list twice (list_id, and the bigint for this index): one condition,
            # not two independent ones, or the planner thinks a common word matches almost nothing.
            op.execute("CREATE STATISTICS st_task_list_key (dependencies) ON list_id, (CAST(list_id AS BIGINT)) FROM task")


def downgrade() -> None:
    """Back to one user per list: every share is dropped (members, invitations, assignees)."""
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute("DROP STATISTICS IF EXISTS st_task_list_key")
        op.execute("DROP INDEX ix_task_search")
        op.execute(f"CREATE INDEX ix_task_search ON task USING gin (lower(user_id), ({SEARCHED_TEXT}) gin_trgm_ops)")
        if op.get_bind().dialect.server_version_info >= (14,):
            op.execute("CREATE STATISTICS st_task_user_key (dependencies) ON user_id, lower(user_id) FROM task")
        op.drop_index("ix_task_list_id_title", "task")
        op.create_index("ix_task_user_id_title", "task", ["user_id", sa.text("lower(title)"), "id"])
    for name in (
        "ix_task_list_id_created_at", "ix_task_list_id_due_date", "ix_task_list_id_updated_at",
        "ix_task_list_id_priority_rank", "ix_task_list_id_completed_due_date", "ix_task_user_id_following_zone",
    ):
        op.drop_index(name, "task")
    op.create_index("ix_task_user_id_created_at", "task", ["user_id", "created_at", "id"])
    op.create_index("ix_task_list_id_user_id_created_at", "task", ["list_id", "user_id", "created_at", "id"])
    op.create_index("ix_task_user_id_due_date", "task", ["user_id", "due_date", "id"])
    op.create_index("ix_task_user_id_updated_at", "task", ["user_id", "updated_at", "id"])
    op.create_index("ix_task_user_id_priority_rank", "task", ["user_id", sa.text(PRIORITY_RANK), "id"])
    op.create_index(
        "ix_task_user_id_completed_due_date", "task", ["user_id", "completed", "due_date"],
        postgresql_include=["priority", "parent_id", "list_id"],
    )
    # Tasks of shared lists go back to the list's owner.
    op.execute("UPDATE task SET user_id = (SELECT owner_id FROM list WHERE list.id = task.list_id)")
    op.add_column("task_tag", sa.Column("user_id", sa.String(255), nullable=True))
    op.execute("UPDATE task_tag SET user_id = (SELECT task.user_id FROM task WHERE task.id = task_tag.task_id)")
    op.drop_index("ix_task_tag_list_id_tag_key", "task_tag")
    op.drop_index("ix_task_tag_list_id_tag_key_tag", "task_tag")
    with op.batch_alter_table("task_tag") as batch:
        batch.alter_column("user_id", existing_type=sa.String(255), nullable=False)
        batch.drop_column("list_id")
    op.create_index("ix_task_tag_user_id_tag_key", "task_tag", ["user_id", "tag_key", "task_id"])
    op.create_index("ix_task_tag_user_id_tag_key_tag", "task_tag", ["user_id", "tag_key", "tag"])
    op.drop_column("event", "actor")
    op.drop_column("task", "assignee_id")
    op.drop_index("uq_list_owner_id_default", "list")
    op.drop_index("ix_list_owner_id", "list")
    op.execute("ALTER TABLE list RENAME COLUMN owner_id TO user_id")
    op.add_column("list", sa.Column("position", PositionType, nullable=True))
    op.execute(
        "UPDATE list SET position = (SELECT m.position FROM list_member m WHERE m.list_id = list.id AND m.user_id = list.user_id)"
    )
    op.create_index("ix_list_user_id_position", "list", ["user_id", "position", "id"])
    op.create_index("uq_list_user_id_default", "list", ["user_id"], unique=True, sqlite_where=IS_DEFAULT, postgresql_where=IS_DEFAULT)
    op.drop_table("list_invitation")
    op.drop_index("ix_list_member_user_id", "list_member")
    op.drop_table("list_member")
