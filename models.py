"""The tables, and nothing else. Client-facing rules live in schemas.py."""
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

# Same constraint and index names on SQLite and PostgreSQL, so migrations can name them.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

PRIORITIES = ("low", "medium", "high")
# The listing's priority order (high > medium > low), spelt as listing_sql.PRIORITY_RANK compiles: an
# index on an expression serves only a query with exactly that expression.
PRIORITY_RANK_SQL = "(CASE WHEN (priority = 'low') THEN 1 WHEN (priority = 'medium') THEN 2 WHEN (priority = 'high') THEN 3 END)"
# A task's searched text (`q=`: a substring of the title or of the description): both lowered,
# joined by a control character. A search text without that character is in one of the two exactly
# when it is in this (listing_sql.py uses the plain OR for a text with it). Migration 0009 indexes it.
SEARCH_SEPARATOR = "\x1f"
SEARCHED_TEXT_SQL = f"lower(title) || '{SEARCH_SEPARATOR}' || lower(coalesce(description, ''))"
SEARCH_SCOPE_SQL = "(CAST(list_id AS BIGINT))"
SEARCH_LISTS_SQL = "(ARRAY[list_id])"
USER_ID_LENGTH = 255
TAG_LENGTH = 50
ZONE_LENGTH = 64
# Lower-casing can lengthen a string ("İ" becomes two code points); leave room.
TAG_KEY_LENGTH = 4 * TAG_LENGTH
# Fractional-indexing keys (README, "Manual order"): 1,000 moves into one gap make a key of ~200
# characters; this leaves room for ~5,000.
POSITION_LENGTH = 1024
# The largest id an Integer column holds: a larger one names nothing (and must not reach the database).
MAX_ID = 2**31 - 1
LIST_NAME_LENGTH = 100
# Positions compare byte-wise: "C" on PostgreSQL (a locale would reorder them); SQLite's default
# BINARY collation already does.
PositionType = sa.String(POSITION_LENGTH).with_variant(sa.String(POSITION_LENGTH, collation="C"), "postgresql")


class UTCDateTime(sa.TypeDecorator):
    """Aware UTC datetimes in and out, on both databases.

    SQLite has no time zones: it stores naive UTC text, which also sorts correctly.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None or value.tzinfo is timezone.utc:
            return value
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


ROLES = ("owner", "editor", "viewer")
EMAIL_LENGTH = 320


class Task(SQLModel, table=True):
    """A task lives in a list; who may see or change it is decided by the list's members (access.py).
    Every listing and count reads one list's range of an index keyed by `list_id` (a user's view is
    the lists they are a member of, each read in its own range)."""

    __tablename__ = "task"
    __table_args__ = (
        sa.CheckConstraint("priority IN ('low', 'medium', 'high')", name="priority_known"),
        # A list's tasks in the default order, their count, a list's counts, and the foreign key check
        # when a list is deleted.
        sa.Index("ix_task_list_id_created_at", "list_id", "created_at", "id"),
        # A list's top level in manual order: its first and last positions (each create), the tree's
        # roots. Partial, because `parent_id IS NULL` in the index above does not give PostgreSQL
        # the order of `position` (it sorted all of the list's tasks to find the last one).
        sa.Index(
            "ix_task_top_level_position", "list_id", "position", "id",
            postgresql_where=sa.text("parent_id IS NULL"), sqlite_where=sa.text("parent_id IS NULL"),
        ),
        # Subtasks of a task in manual order (the tree query, `?parent_id=`, subtree walks).
        sa.Index("ix_task_parent_id_position", "parent_id", "position", "id"),
        # Sorting and filtering by the due moment (§9).
        sa.Index("ix_task_list_id_due_date", "list_id", "due_date", "id"),
        # The other sorts, on the exact expressions queries.py sorts by.
        sa.Index("ix_task_list_id_updated_at", "list_id", "updated_at", "id"),
        # Not compared by `alembic check`: PostgreSQL reflects the expression in its own spelling.
        sa.Index("ix_task_list_id_priority_rank", "list_id", sa.text(PRIORITY_RANK_SQL), "id", info={"compared": False}),
        # PostgreSQL only (migrations/env.py): on SQLite the service replaces lower() (drivers.py).
        sa.Index("ix_task_list_id_title", "list_id", sa.text("lower(title)"), "id", info={"dialects": ["postgresql"]}),
        # Counts (completed, overdue, due ranges, priority, top level, assignee) and stats: PostgreSQL
        # reads only this index (the included columns are there for the filters).
        sa.Index(
            "ix_task_list_id_completed_due_date", "list_id", "completed", "due_date",
            postgresql_include=["priority", "parent_id", "assignee_id"],
        ),
        # `q=` (PostgreSQL only): trigrams of the searched text, with the list's id (btree_gin), so
        # that one list's matches are read, not every list's. The id as a bigint (SEARCH_SCOPE_SQL),
        # an expression only a search names: on plain `list_id`, listings chose this index over the
        # ordered ones (a bitmap of a whole list, then a sort). And as an array (SEARCH_LISTS_SQL):
        # a count over several lists names them all in one condition, one scan (migration 0016).
        sa.Index(
            "ix_task_search", sa.text(SEARCH_SCOPE_SQL), sa.text(SEARCH_LISTS_SQL), sa.text(f"({SEARCHED_TEXT_SQL})"),
            postgresql_using="gin", postgresql_ops={f"({SEARCHED_TEXT_SQL})": "gin_trgm_ops"},
            info={"dialects": ["postgresql"], "compared": False},
        ),
        # The all-day tasks that follow their creator's zone setting (settings_store.py moves them).
        sa.Index(
            "ix_task_user_id_following_zone", "user_id",
            postgresql_where=sa.text("all_day IS NOT NULL AND time_zone IS NULL"),
            sqlite_where=sa.text("all_day IS NOT NULL AND time_zone IS NULL"),
        ),
        # Never reuse the id of a deleted task (SQLite would otherwise hand out max(id) + 1 again).
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    # Who created it (the token's `sub`); never who may see it: that is the list's members.
    user_id: str = Field(sa_column=sa.Column(sa.String(USER_ID_LENGTH), nullable=False))
    title: str = Field(sa_column=sa.Column(sa.String(255), nullable=False))
    description: str | None = Field(default=None, sa_column=sa.Column(sa.String(1000), nullable=True))
    completed: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False))
    priority: str = Field(default="medium", sa_column=sa.Column(sa.String(6), nullable=False))
    # The tags as the client spelled them, in order, read with the row (no join on every list).
    # TaskTag below indexes them for filtering and counting; both are written in one transaction.
    tags: list[str] = Field(default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False))
    # The due moment: the task's moment, or for an all-day task the end of its day in its zone
    # (dates.py). Everything sorts and filters by it; `all_day` keeps the date the client sent.
    due_date: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime, nullable=True))
    list_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("list.id"), nullable=False))
    # No ON DELETE CASCADE: a task's subtree is deleted by the same statement (store.py), which so
    # returns every deleted id (SQLite would cascade row by row, and RETURNING would miss those).
    parent_id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, sa.ForeignKey("task.id"), nullable=True))
    position: str = Field(sa_column=sa.Column(PositionType, nullable=False))
    # A member of the task's list with the owner or editor role, or null (access.py keeps it so).
    assignee_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(USER_ID_LENGTH), nullable=True))
    all_day: str | None = Field(default=None, sa_column=sa.Column(sa.String(10), nullable=True))
    time_zone: str | None = Field(default=None, sa_column=sa.Column(sa.String(ZONE_LENGTH), nullable=True))
    recurrence: dict | None = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    # The series' first due date (in the API's due_date format) and which occurrence this task is.
    series_start: str | None = Field(default=None, sa_column=sa.Column(sa.String(40), nullable=True))
    series_index: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    next_occurrence_id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    # The reminders as the API shows them, each with its fire_at; the `reminder` table indexes them.
    reminders: list[dict] = Field(default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False))
    completed_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime, nullable=True))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))
    # Bumped by every write; the ETag is made from it (two writes in one millisecond differ).
    version: int = Field(default=1, sa_column=sa.Column(sa.Integer, nullable=False))


class TaskList(SQLModel, table=True):
    """A list of tasks, owned by one user and shared with the members of `list_member`. Exactly one
    list per user has `is_default` (the partial unique index); it is never shared."""

    __tablename__ = "list"
    __table_args__ = (
        sa.Index("ix_list_owner_id", "owner_id"),  # the lists a user owns count toward their limit
        sa.Index(
            "uq_list_owner_id_default", "owner_id", unique=True,
            sqlite_where=sa.text("is_default"), postgresql_where=sa.text("is_default"),
        ),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    owner_id: str = Field(sa_column=sa.Column(sa.String(USER_ID_LENGTH), nullable=False))
    name: str = Field(sa_column=sa.Column(sa.String(LIST_NAME_LENGTH), nullable=False))
    color: str | None = Field(default=None, sa_column=sa.Column(sa.String(7), nullable=True))
    is_default: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))
    version: int = Field(default=1, sa_column=sa.Column(sa.Integer, nullable=False))


class ListMember(SQLModel, table=True):
    """Who is in a list, with which role (the owner too: one row per member), where the list is in
    that member's own order of their lists, and their email and name as their token said at joining."""

    __tablename__ = "list_member"
    __table_args__ = (
        sa.CheckConstraint("role IN ('owner', 'editor', 'viewer')", name="role_known"),
        # A user's lists (every read starts from them: access.py), with the role, from the index alone.
        sa.Index("ix_list_member_user_id", "user_id", "list_id", "role"),
    )

    list_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("list.id", ondelete="CASCADE"), primary_key=True)
    )
    user_id: str = Field(sa_column=sa.Column(sa.String(USER_ID_LENGTH), primary_key=True))
    role: str = Field(sa_column=sa.Column(sa.String(6), nullable=False))
    position: str = Field(sa_column=sa.Column(PositionType, nullable=False))
    email: str | None = Field(default=None, sa_column=sa.Column(sa.String(EMAIL_LENGTH), nullable=True))
    name: str | None = Field(default=None, sa_column=sa.Column(sa.String(255), nullable=True))
    joined_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))


class ListInvitation(SQLModel, table=True):
    """A pending invitation to a list. Accepting, declining or revoking it deletes the row; only the
    hash of its secret `token` is kept (the invitee proves the address with the emailed link)."""

    __tablename__ = "list_invitation"
    __table_args__ = (
        sa.CheckConstraint("role IN ('editor', 'viewer')", name="role_known"),
        sa.UniqueConstraint("list_id", "email_key"),  # one pending invitation per address and list
        sa.Index("ix_list_invitation_email_key", "email_key"),  # GET /api/invitations
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    list_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("list.id", ondelete="CASCADE"), nullable=False))
    email: str = Field(sa_column=sa.Column(sa.String(EMAIL_LENGTH), nullable=False))
    # The address compared case-insensitively (lower case).
    email_key: str = Field(sa_column=sa.Column(sa.String(EMAIL_LENGTH), nullable=False))
    role: str = Field(sa_column=sa.Column(sa.String(6), nullable=False))
    invited_by: str = Field(sa_column=sa.Column(sa.String(USER_ID_LENGTH), nullable=False))
    token_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))
    expires_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))


class TaskTag(SQLModel, table=True):
    """One row per tag of a task, keyed case-insensitively, for `?tag=` filters and `/api/tags`; with
    the task's list, so a user's view reads only their lists' rows (a move updates it with the task)."""

    __tablename__ = "task_tag"
    __table_args__ = (
        sa.Index("ix_task_tag_list_id_tag_key", "list_id", "tag_key", "task_id"),
        sa.Index("ix_task_tag_list_id_tag_key_tag", "list_id", "tag_key", "tag"),  # /api/tags from the index alone
    )

    task_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("task.id", ondelete="CASCADE"), primary_key=True)
    )
    tag_key: str = Field(sa_column=sa.Column(sa.String(TAG_KEY_LENGTH), primary_key=True))
    list_id: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    tag: str = Field(sa_column=sa.Column(sa.String(TAG_LENGTH), nullable=False))


class ListTaskCount(SQLModel, table=True):
    """A list's tasks counted by state and priority, kept by triggers in every write's transaction
    (migration 0015 says how): stats and the totals of state, priority and list filters read these.
    A list's counts are the sum of its rows (one per `slot`: PostgreSQL spreads concurrent writers)."""

    __tablename__ = "list_task_count"

    list_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("list.id", ondelete="CASCADE"), primary_key=True)
    )
    slot: int = Field(default=0, sa_column=sa.Column(sa.SmallInteger, primary_key=True, server_default="0"))
    open_low: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    open_medium: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    open_high: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    done_low: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    done_medium: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    done_high: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    # Every write of the list's tasks that can change what a search finds (migration 0017 names them)
    # adds to it: while a list's sum is the same, its searches count the same (search_counts.py).
    changes: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0"))


class ListTagCount(SQLModel, table=True):
    """How many of a list's tasks carry a tag, per spelling, kept like ListTaskCount (from task_tag):
    /api/tags and the totals of `tag=` read these. A row may fall to 0 (it stays) or below (a tag added
    through one slot, removed through another): only the sum of a list's rows is its count."""

    __tablename__ = "list_tag_count"

    list_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("list.id", ondelete="CASCADE"), primary_key=True)
    )
    tag_key: str = Field(sa_column=sa.Column(sa.String(TAG_KEY_LENGTH), primary_key=True))
    tag: str = Field(sa_column=sa.Column(sa.String(TAG_LENGTH), primary_key=True))
    slot: int = Field(default=0, sa_column=sa.Column(sa.SmallInteger, primary_key=True, server_default="0"))
    tasks: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))


class IdempotencyKey(SQLModel, table=True):
    """The first response to a `POST /api/tasks` or `/api/lists` with an Idempotency-Key, written in
    the same transaction as what it created. Rows older than the retention window are purged."""

    __tablename__ = "idempotency_key"
    __table_args__ = (sa.Index("ix_idempotency_key_created_at", "created_at"),)

    user_id: str = Field(sa_column=sa.Column(sa.String(USER_ID_LENGTH), primary_key=True))
    key: str = Field(sa_column=sa.Column(sa.String(255), primary_key=True))
    request_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    task_id: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))  # or the list's id
    # The response body exactly as first sent, so a replay is byte-for-byte the same.
    response_body: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))


class UserSettings(SQLModel, table=True):
    """One row per user that changed a setting; no row means the defaults."""

    __tablename__ = "user_settings"

    user_id: str = Field(sa_column=sa.Column(sa.String(USER_ID_LENGTH), primary_key=True))
    time_zone: str = Field(sa_column=sa.Column(sa.String(ZONE_LENGTH), nullable=False))
    updated_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))


class Reminder(SQLModel, table=True):
    """One row per reminder of a task, for firing (by `fire_at`) and `GET /api/reminders`.
    `state` is null until the reminder fires (`fired`) or is too old to fire (`skipped`)."""

    __tablename__ = "reminder"
    __table_args__ = (
        # Only the reminders still waiting to fire: the firing loop's scans stay small however
        # many have fired (partial index, on both databases).
        sa.Index("ix_reminder_fire_at", "fire_at", postgresql_where=sa.text("state IS NULL"), sqlite_where=sa.text("state IS NULL")),
        sa.Index("ix_reminder_user_id_fire_at", "user_id", "fire_at"),
        sa.Index("ix_reminder_task_id", "task_id"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    task_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("task.id", ondelete="CASCADE"), nullable=False))
    user_id: str = Field(sa_column=sa.Column(sa.String(USER_ID_LENGTH), nullable=False))
    before_minutes: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime, nullable=True))
    fire_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))
    state: str | None = Field(default=None, sa_column=sa.Column(sa.String(8), nullable=True))
    fired_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime, nullable=True))


UNSEQUENCED = sa.text("seq IS NULL")


class Event(SQLModel, table=True):
    """One change of a task or list (or a due reminder) in one user's feed, written in the same
    transaction as the change (events.py; a change of a shared list is one row per member). `seq`
    numbers one user's events 1, 2, 3... in commit order: the cursor of
    /api/changes. It is NULL until `events.sequence` numbers the event, after its commit. `id` is
    global, for consumers that read every user's events (the webhook outbox)."""

    __tablename__ = "event"
    __table_args__ = (
        sa.UniqueConstraint("user_id", "seq"),  # also the index of the per-user feed
        sa.Index("ix_event_created_at", "created_at"),  # retention
        # The events still to be numbered, per user (small: numbering empties it).
        sa.Index("ix_event_unsequenced", "user_id", "id", postgresql_where=UNSEQUENCED, sqlite_where=UNSEQUENCED),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True))
    user_id: str = Field(sa_column=sa.Column(sa.String(USER_ID_LENGTH), nullable=False))
    seq: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    type: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    entity_id: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    # Who made the change (the token's `sub`); null when the service did (a reminder firing).
    actor: str | None = Field(default=None, sa_column=sa.Column(sa.String(USER_ID_LENGTH), nullable=True))
    # The entity after the change, exactly as the REST API returns it; null for a delete.
    data: dict | None = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))


class UserEventCounter(SQLModel, table=True):
    """The last `seq` given out per user. `events.sequence` numbers a user's new events under this
    row's lock, so two numberings of one user never interleave."""

    __tablename__ = "user_event_counter"

    user_id: str = Field(sa_column=sa.Column(sa.String(USER_ID_LENGTH), primary_key=True))
    seq: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))


class WebhookDelivery(SQLModel, table=True):
    """How far each user's events have gone out to EVENTS_WEBHOOK_URL (webhooks.py): every event
    with `seq <= delivered_seq` was acknowledged with a 2xx. After a failure, `retry_at` holds the
    user's queue back (the events after it wait: they go out in order)."""

    __tablename__ = "webhook_delivery"

    user_id: str = Field(sa_column=sa.Column(sa.String(USER_ID_LENGTH), primary_key=True))
    delivered_seq: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    failures: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    retry_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime, nullable=True))
    # Why the last attempt failed ("HTTP 500", "ConnectError"), for an operator looking at the table.
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.String(200), nullable=True))
    updated_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))


class WebhookLease(SQLModel, table=True):
    """Who delivers webhooks: one process across all workers and instances. The holder bumps
    `token` every few seconds; another process takes over when it has seen the same token for a
    whole lease period (measured on its own monotonic clock, so clocks need not agree)."""

    __tablename__ = "webhook_lease"

    name: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    holder: str | None = Field(default=None, sa_column=sa.Column(sa.String(255), nullable=True))
    token: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False))


CHAT_ROLES = ("user", "assistant")
CONVERSATION_TITLE_LENGTH = 100
CHAT_ITEM_ID_LENGTH = 64


class Conversation(SQLModel, table=True):
    """A user's chat with the assistant (contract §13); a ChatKit thread is one (`thread_id`)."""

    __tablename__ = "conversation"
    __table_args__ = (
        sa.Index("ix_conversation_user_id_updated_at", "user_id", "updated_at", "id"),  # newest first
        sa.Index("uq_conversation_thread_id", "thread_id", unique=True),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(sa_column=sa.Column(sa.String(USER_ID_LENGTH), nullable=False))
    # ChatKit names threads with strings it gets from the server before the row exists.
    thread_id: str = Field(sa_column=sa.Column(sa.String(CHAT_ITEM_ID_LENGTH), nullable=False))
    title: str | None = Field(default=None, sa_column=sa.Column(sa.String(CONVERSATION_TITLE_LENGTH), nullable=True))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))


class ChatMessage(SQLModel, table=True):
    """One message of a conversation. `tool_calls`: the tools the turn ran, `[{tool, arguments,
    result}]`, on the assistant message that answered, or on the user's message while the turn has
    no answer (it failed midway: what ran stays recorded). `item`: the ChatKit thread item as
    ChatKit sent it (a user message from ChatKit), else null."""

    __tablename__ = "chat_message"
    __table_args__ = (
        sa.CheckConstraint("role IN ('user', 'assistant')", name="role_known"),
        sa.Index("ix_chat_message_conversation_id_id", "conversation_id", "id"),
        sa.Index("uq_chat_message_conversation_id_item_id", "conversation_id", "item_id", unique=True),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("conversation.id", ondelete="CASCADE"), nullable=False)
    )
    role: str = Field(sa_column=sa.Column(sa.String(9), nullable=False))
    content: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    tool_calls: list[dict] = Field(default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False))
    item_id: str = Field(sa_column=sa.Column(sa.String(CHAT_ITEM_ID_LENGTH), nullable=False))
    item: dict | None = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))
