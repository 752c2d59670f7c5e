"""Every SQL statement about chat (contract §13): conversations, per user, and their messages.

A conversation is found through its owner, always: another user's is a ConversationNotFound, as a
conversation that does not exist. Messages are read and written only after their conversation was
found that way. A ChatKit thread is a conversation: `thread_id` is the name ChatKit knows it by,
and every message has an `item_id`, its ChatKit item id.
"""
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa

import dates
from db import Connection, Database, Row
from errors import ApiError
from models import MAX_ID, ChatMessage, Conversation, CONVERSATION_TITLE_LENGTH, UTCDateTime

conversation_table: sa.Table = Conversation.__table__
message_table: sa.Table = ChatMessage.__table__
_c, _m = conversation_table.c, message_table.c


class ConversationNotFound(ApiError):
    status_code, error_code, detail = 404, "CONVERSATION_NOT_FOUND", "Conversation not found"


CONVERSATION_COLUMNS = (_c.id, _c.thread_id, _c.title, _c.created_at, _c.updated_at)
MESSAGE_COLUMNS = (_m.id, _m.conversation_id, _m.role, _m.content, _m.tool_calls, _m.item_id, _m.item, _m.created_at)
_NOW = sa.bindparam("now", type_=UTCDateTime())
_OWNER = _c.user_id == sa.bindparam("owner")

FIND = sa.select(*CONVERSATION_COLUMNS).where(_c.id == sa.bindparam("conversation_id"), _OWNER)
FIND_BY_THREAD = sa.select(*CONVERSATION_COLUMNS).where(_c.thread_id == sa.bindparam("thread_id"), _OWNER)
NEWEST_FIRST, OLDEST_FIRST = (
    sa.select(*CONVERSATION_COLUMNS).where(_OWNER).order_by(*order)
    .limit(sa.bindparam("limit")).offset(sa.bindparam("offset"))
    for order in ((_c.updated_at.desc(), _c.id.desc()), (_c.updated_at, _c.id))
)
INSERT = sa.insert(conversation_table).values(
    user_id=sa.bindparam("owner"), thread_id=sa.bindparam("thread_id"), title=sa.bindparam("title"),
    created_at=_NOW, updated_at=_NOW,
).returning(*CONVERSATION_COLUMNS)
# A new message moves the conversation up the list; the first user message names an untitled one.
TOUCH = sa.update(conversation_table).where(_c.id == sa.bindparam("conversation_id")).values(
    updated_at=sa.case((_c.updated_at < _NOW, _NOW), else_=_c.updated_at),
    title=sa.func.coalesce(_c.title, sa.bindparam("title", type_=sa.String())),
)
RENAME = sa.update(conversation_table).where(_c.id == sa.bindparam("conversation_id"), _OWNER).values(
    title=sa.bindparam("title", type_=sa.String())
)
DELETE = sa.delete(conversation_table).where(_c.id == sa.bindparam("conversation_id"), _OWNER)
DELETE_MESSAGES = sa.delete(message_table).where(_m.conversation_id == sa.bindparam("conversation_id"))

INSERT_MESSAGE = sa.insert(message_table).values(
    conversation_id=sa.bindparam("conversation_id"), role=sa.bindparam("role"), content=sa.bindparam("content"),
    tool_calls=sa.bindparam("tool_calls", type_=sa.JSON()), item_id=sa.bindparam("item_id"),
    item=sa.bindparam("item", type_=sa.JSON()), created_at=_NOW,
).returning(*MESSAGE_COLUMNS)
SET_TOOL_CALLS = sa.update(message_table).where(_m.id == sa.bindparam("message_id")).values(
    tool_calls=sa.bindparam("tool_calls", type_=sa.JSON())
)
ALL_MESSAGES = (
    sa.select(*MESSAGE_COLUMNS).where(_m.conversation_id == sa.bindparam("conversation_id")).order_by(_m.id)
)
LAST_MESSAGES = (
    sa.select(*MESSAGE_COLUMNS).where(_m.conversation_id == sa.bindparam("conversation_id"))
    .order_by(_m.id.desc()).limit(sa.bindparam("limit"))
)
FIND_MESSAGE = sa.select(*MESSAGE_COLUMNS).where(
    _m.conversation_id == sa.bindparam("conversation_id"), _m.item_id == sa.bindparam("item_id")
)
FIND_MESSAGE_BY_ID = sa.select(*MESSAGE_COLUMNS).where(_m.id == sa.bindparam("message_id"))
DELETE_MESSAGE = sa.delete(message_table).where(
    _m.conversation_id == sa.bindparam("conversation_id"), _m.item_id == sa.bindparam("item_id")
)
_AFTER = sa.bindparam("after_id")
MESSAGES_AFTER = {
    "asc": sa.select(*MESSAGE_COLUMNS).where(_m.conversation_id == sa.bindparam("conversation_id"), _m.id > _AFTER)
    .order_by(_m.id).limit(sa.bindparam("limit")),
    "desc": sa.select(*MESSAGE_COLUMNS).where(_m.conversation_id == sa.bindparam("conversation_id"), _m.id < _AFTER)
    .order_by(_m.id.desc()).limit(sa.bindparam("limit")),
}


def new_id(prefix: str) -> str:
    """A ChatKit-style id (`thr_...`, `msg_...`): made before its row exists, unique for good."""
    return f"{prefix}_{uuid.uuid4().hex}"


def title_of(message: str) -> str:
    """A conversation's title: its first message's first line, shortened."""
    line = message.strip().splitlines()[0].strip() if message.strip() else ""
    limit = CONVERSATION_TITLE_LENGTH
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def public_conversation(row: Row) -> dict[str, Any]:
    return {name: row[name] for name in ("id", "title", "created_at", "updated_at")}


def public_message(row: Row) -> dict[str, Any]:
    return {name: row[name] for name in ("id", "role", "content", "tool_calls", "created_at")}


# ----------------------------------------------------------------------------------- conversations


async def create(connection: Connection, user_id: str, *, thread_id: str | None = None,
                 title: str | None = None, now: datetime | None = None) -> Row:
    return await connection.fetch_one(
        INSERT, {"owner": user_id, "thread_id": thread_id or new_id("thr"), "title": title, "now": now or dates.utc_now()}
    )


async def find(connection: Connection, user_id: str, conversation_id: int) -> Row:
    if not 1 <= conversation_id <= MAX_ID:
        raise ConversationNotFound()
    row = await connection.fetch_one(FIND, {"conversation_id": conversation_id, "owner": user_id})
    if row is None:
        raise ConversationNotFound()
    return row


async def find_by_thread(connection: Connection, user_id: str, thread_id: str) -> Row:
    row = await connection.fetch_one(FIND_BY_THREAD, {"thread_id": thread_id, "owner": user_id})
    if row is None:
        raise ConversationNotFound()
    return row


async def get(db: Database, user_id: str, conversation_id: int) -> Row:
    async with db.connect() as connection:
        return await find(connection, user_id, conversation_id)


async def newest_first(db: Database, user_id: str, limit: int, offset: int = 0, *, oldest_first: bool = False) -> list[Row]:
    """The user's conversations by their last message: newest first (or oldest first)."""
    statement = OLDEST_FIRST if oldest_first else NEWEST_FIRST
    async with db.connect() as connection:
        return await connection.fetch_all(statement, {"owner": user_id, "limit": limit, "offset": offset})


async def rename(db: Database, user_id: str, conversation_id: int, title: str | None) -> None:
    async with db.connect() as connection:
        await connection.execute(RENAME, {"conversation_id": conversation_id, "owner": user_id, "title": title})


async def delete(db: Database, user_id: str, conversation_id: int) -> None:
    """The conversation and its messages, or ConversationNotFound."""
    async with db.transaction() as connection:
        await find(connection, user_id, conversation_id)
        await connection.execute(DELETE_MESSAGES, {"conversation_id": conversation_id})
        await connection.execute(DELETE, {"conversation_id": conversation_id, "owner": user_id})


# ---------------------------------------------------------------------------------------- messages


async def add_message(
    connection: Connection, conversation_id: int, role: str, content: str, *, item_id: str | None = None,
    item: dict[str, Any] | None = None, tool_calls: list[dict[str, Any]] | None = None,
) -> Row:
    """A message at the end of the conversation (found through its owner before)."""
    now = dates.utc_now()
    async with connection.atomic():
        row = await connection.fetch_one(INSERT_MESSAGE, {
            "conversation_id": conversation_id, "role": role, "content": content, "tool_calls": tool_calls or [],
            "item_id": item_id or new_id("msg"), "item": item, "now": now,
        })
        await connection.execute(TOUCH, {
            "conversation_id": conversation_id, "now": now, "title": title_of(content) if role == "user" else None,
        })
    return row


async def record_tool_calls(db: Database, message_id: int, tool_calls: list[dict[str, Any]]) -> None:
    """The tools a turn ran so far, on its user message (what ran stays recorded if the turn fails)."""
    async with db.connect() as connection:
        await connection.execute(SET_TOOL_CALLS, {"message_id": message_id, "tool_calls": tool_calls})


async def answer(
    connection: Connection, conversation_id: int, user_message_id: int, content: str,
    tool_calls: list[dict[str, Any]], item_id: str,
) -> Row:
    """The turn's answer: the assistant message, which takes over the turn's tool calls."""
    async with connection.atomic():
        await connection.execute(SET_TOOL_CALLS, {"message_id": user_message_id, "tool_calls": []})
        return await add_message(connection, conversation_id, "assistant", content, item_id=item_id, tool_calls=tool_calls)


async def message(connection: Connection, message_id: int) -> Row | None:
    return await connection.fetch_one(FIND_MESSAGE_BY_ID, {"message_id": message_id})


async def all_messages(db: Database, conversation_id: int) -> list[Row]:
    async with db.connect() as connection:
        return await connection.fetch_all(ALL_MESSAGES, {"conversation_id": conversation_id})


async def last_messages(connection: Connection, conversation_id: int, limit: int) -> list[Row]:
    """The conversation's last `limit` messages, oldest first."""
    rows = await connection.fetch_all(LAST_MESSAGES, {"conversation_id": conversation_id, "limit": limit})
    return rows[::-1]


async def find_item(db: Database, conversation_id: int, item_id: str) -> Row | None:
    async with db.connect() as connection:
        return await connection.fetch_one(FIND_MESSAGE, {"conversation_id": conversation_id, "item_id": item_id})


async def delete_item(db: Database, conversation_id: int, item_id: str) -> None:
    async with db.connect() as connection:
        await connection.execute(DELETE_MESSAGE, {"conversation_id": conversation_id, "item_id": item_id})


async def messages_page(
    db: Database, conversation_id: int, after_item_id: str | None, limit: int, order: str
) -> tuple[list[Row], bool]:
    """A page of messages after the one named (ChatKit's paging), and whether more follow."""
    order = "desc" if order == "desc" else "asc"
    async with db.connect() as connection:
        after_id = 0 if order == "asc" else MAX_ID + 1
        if after_item_id is not None:
            after = await connection.fetch_one(FIND_MESSAGE, {"conversation_id": conversation_id, "item_id": after_item_id})
            if after is not None:
                after_id = after["id"]
        rows = await connection.fetch_all(
            MESSAGES_AFTER[order], {"conversation_id": conversation_id, "after_id": after_id, "limit": limit + 1}
        )
    return rows[:limit], len(rows) > limit
