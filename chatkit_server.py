"""`POST /chatkit`: OpenAI ChatKit's server protocol (the `openai-chatkit` SDK's ChatKitServer) over
the same assistant, tools, limits and conversations as `/api/chat` (contract §13).

A ChatKit thread is a conversation (its `thread_id`), a thread item a message (its `item_id`): the
SDK's Store is implemented on our tables, through the caller's identity. The answer comes from the
same turn as /api/chat (chat.Turn), so ChatKit gets the same tools, window, cap, deadline and
"what happened stays true". Two things the SDKs would get wrong together, done here instead:
- every assistant message gets its own id (the SDK's Agents stream converter reuses the Chat
  Completions model's placeholder id, `__fake_id__`, for every message; the store replaces it too);
- the thread's history reaches the model as chat_model.history builds it from our rows (ChatKit's
  simple conversion hands earlier assistant messages to the Chat Completions converter in a shape
  it refuses on the second turn).
Attachments are not supported (no AttachmentStore): a message with one is a 422 at the route.
"""
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agents.models.fake_id import FAKE_RESPONSES_ID
from chatkit.errors import CustomStreamError
from chatkit.server import ChatKitServer, NonStreamingResult
from chatkit.store import Store, StoreItemType
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageContentPartAdded,
    AssistantMessageContentPartTextDelta,
    AssistantMessageItem,
    Attachment,
    AttachmentsCreateReq,
    AttachmentsDeleteReq,
    ChatKitReq,
    InferenceOptions,
    InputTranscribeReq,
    Page,
    ThreadItem,
    ThreadsAddClientToolOutputReq,
    ThreadsAddStructuredInputReq,
    ThreadsCustomActionReq,
    ThreadsSyncCustomActionReq,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
    UserMessageTagContent,
    UserMessageTextContent,
    is_streaming_req,
)
from pydantic import TypeAdapter, ValidationError

import chat
import conversations
import settings_store
from auth import Principal
from db import DuplicateKey, Row
from errors import ValidationFailed, field_error
from ratelimit import UserLimit

THREAD_ITEM = TypeAdapter(ThreadItem)
REQUEST = TypeAdapter(ChatKitReq)
# What this server does not offer: files, dictation, widgets' actions, client tools.
UNSUPPORTED = (
    AttachmentsCreateReq, AttachmentsDeleteReq, InputTranscribeReq, ThreadsSyncCustomActionReq, ThreadsCustomActionReq,
    ThreadsAddClientToolOutputReq, ThreadsAddStructuredInputReq,
)
ID_PREFIXES: dict[str, str] = {
    "thread": "thr", "message": "msg", "tool_call": "tc", "workflow": "wf", "task": "tsk", "attachment": "atc",
    "sdk_hidden_context": "shcx",
}


@dataclass(frozen=True)
class Caller:
    """The request context the SDK hands to every Store call: who asks (from the verified token)."""

    principal: Principal

    @property
    def user_id(self) -> str:
        return self.principal.user_id


def message_text(item: UserMessageItem | AssistantMessageItem) -> str:
    parts = []
    for content in item.content:
        if isinstance(content, UserMessageTextContent | AssistantMessageContent):
            parts.append(content.text)
        elif isinstance(content, UserMessageTagContent):
            parts.append(f"@{content.text}")
    return "".join(parts)


class ConversationStore(Store[Caller]):
    """ChatKit's Store on the conversation tables, every call through the caller's own rows."""

    def __init__(self, assistant: chat.Assistant):
        self.db = assistant.database

    def generate_thread_id(self, context: Caller) -> str:
        return conversations.new_id("thr")

    def generate_item_id(self, item_type: StoreItemType, thread: ThreadMetadata, context: Caller) -> str:
        return conversations.new_id(ID_PREFIXES.get(item_type, "itm"))

    async def conversation(self, thread_id: str, context: Caller) -> Row:
        async with self.db.connect() as connection:
            return await conversations.find_by_thread(connection, context.user_id, thread_id)

    # --------------------------------------------------------------------------------------- threads

    async def load_thread(self, thread_id: str, context: Caller) -> ThreadMetadata:
        return thread_of(await self.conversation(thread_id, context))

    async def save_thread(self, thread: ThreadMetadata, context: Caller) -> None:
        async with self.db.connect() as connection:
            try:
                found = await conversations.find_by_thread(connection, context.user_id, thread.id)
            except conversations.ConversationNotFound:
                try:
                    await conversations.create(connection, context.user_id, thread_id=thread.id, title=thread.title)
                except DuplicateKey:  # the id is another user's thread
                    raise conversations.ConversationNotFound() from None
                return
        if thread.title != found["title"]:
            await conversations.rename(self.db, context.user_id, found["id"], thread.title)

    async def load_threads(self, limit: int, after: str | None, order: str, context: Caller) -> Page[ThreadMetadata]:
        """Newest first (by the last message); `after` is the page cursor handed out before."""
        offset = int(after) if after is not None and after.isdigit() else 0
        rows = await conversations.newest_first(self.db, context.user_id, limit + 1, offset, oldest_first=order == "asc")
        more = len(rows) > limit
        return Page(data=[thread_of(row) for row in rows[:limit]], has_more=more, after=str(offset + limit) if more else None)

    async def delete_thread(self, thread_id: str, context: Caller) -> None:
        conversation = await self.conversation(thread_id, context)
        await conversations.delete(self.db, context.user_id, conversation["id"])

    # ----------------------------------------------------------------------------------------- items

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: Caller
    ) -> Page[ThreadItem]:
        conversation = await self.conversation(thread_id, context)
        rows, more = await conversations.messages_page(self.db, conversation["id"], after, limit, order)
        items = [item_of(row, thread_id) for row in rows]
        return Page(data=items, has_more=more, after=items[-1].id if more and items else None)

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: Caller) -> None:
        """User and assistant messages become messages; the SDK's other items (a hidden note that a
        stream was cancelled...) are not kept. An assistant message a turn stored already is left as is."""
        if not isinstance(item, UserMessageItem | AssistantMessageItem):
            return
        conversation = await self.conversation(thread_id, context)
        if item.id == FAKE_RESPONSES_ID:  # a placeholder id is no id: every message gets its own
            item = item.model_copy(update={"id": conversations.new_id("msg")})
        if await conversations.find_item(self.db, conversation["id"], item.id) is not None:
            return
        role, stored = ("user", item.model_dump(mode="json")) if isinstance(item, UserMessageItem) else ("assistant", None)
        async with self.db.connect() as connection:
            await conversations.add_message(connection, conversation["id"], role, message_text(item), item_id=item.id, item=stored)

    async def save_item(self, thread_id: str, item: ThreadItem, context: Caller) -> None:
        await self.add_thread_item(thread_id, item, context)

    async def load_item(self, thread_id: str, item_id: str, context: Caller) -> ThreadItem:
        conversation = await self.conversation(thread_id, context)
        row = await conversations.find_item(self.db, conversation["id"], item_id)
        if row is None:
            raise conversations.ConversationNotFound("No such item in this thread.")
        return item_of(row, thread_id)

    async def delete_thread_item(self, thread_id: str, item_id: str, context: Caller) -> None:
        conversation = await self.conversation(thread_id, context)
        await conversations.delete_item(self.db, conversation["id"], item_id)

    # ----------------------------------------------------------------------------------- attachments

    async def save_attachment(self, attachment: Attachment, context: Caller) -> None:
        raise NotImplementedError("attachments are not supported")

    async def load_attachment(self, attachment_id: str, context: Caller) -> Attachment:
        raise NotImplementedError("attachments are not supported")

    async def delete_attachment(self, attachment_id: str, context: Caller) -> None:
        raise NotImplementedError("attachments are not supported")


def thread_of(row: Row) -> ThreadMetadata:
    return ThreadMetadata(id=row["thread_id"], title=row["title"], created_at=row["created_at"])


def item_of(row: Row, thread_id: str) -> ThreadItem:
    if row["role"] == "user":
        if row["item"]:
            return THREAD_ITEM.validate_python({**row["item"], "thread_id": thread_id})
        return UserMessageItem(
            id=row["item_id"], thread_id=thread_id, created_at=row["created_at"],
            content=[UserMessageTextContent(text=row["content"])], inference_options=InferenceOptions(),
        )
    return AssistantMessageItem(
        id=row["item_id"], thread_id=thread_id, created_at=row["created_at"],
        content=[AssistantMessageContent(text=row["content"])],
    )


class TaskChatKitServer(ChatKitServer[Caller]):
    def __init__(self, assistant: chat.Assistant):
        super().__init__(ConversationStore(assistant))
        self.assistant = assistant
        self.conversations: ConversationStore = self.store  # type: ignore[assignment]

    async def respond(
        self, thread: ThreadMetadata, input_user_message: UserMessageItem | None, context: Caller
    ) -> AsyncIterator[ThreadStreamEvent]:
        if input_user_message is None:  # client tool outputs, actions: nothing of ours asks for them
            return
        turn = await self._turn(thread, input_user_message, context)
        answer = AssistantMessageItem(id=turn.answer_item_id, thread_id=thread.id, created_at=datetime.now(), content=[])
        text_started, last_segment = False, 0
        async for event in turn.events():
            if isinstance(event, chat.TextDelta):
                delta = event.text if event.segment == last_segment or not text_started else "\n\n" + event.text
                if not text_started:
                    yield ThreadItemAddedEvent(item=answer)
                    yield _update(answer, AssistantMessageContentPartAdded(content_index=0, content=AssistantMessageContent(text="")))
                text_started, last_segment = True, event.segment
                yield _update(answer, AssistantMessageContentPartTextDelta(content_index=0, delta=delta))
            elif isinstance(event, chat.Finished):
                stored = event.message
                done = answer.model_copy(update={
                    "created_at": stored["created_at"], "content": [AssistantMessageContent(text=stored["content"])],
                })
                if not text_started:
                    yield ThreadItemAddedEvent(item=done)
                yield ThreadItemDoneEvent(item=done)
                if thread.title is None:
                    thread.title = turn.start.conversation["title"] or conversations.title_of(message_text(input_user_message))
            elif isinstance(event, chat.Failed):
                raise CustomStreamError(event.error.detail, allow_retry=True)

    async def handle_stream_cancelled(self, thread: ThreadMetadata, pending_items: list[ThreadItem], context: Caller) -> None:
        """The user stopped the answer (or went away): as on /api/chat, the turn ends unanswered (its
        message and the tools that ran are stored; no partial answer is)."""

    async def _turn(self, thread: ThreadMetadata, message: UserMessageItem, context: Caller) -> chat.Turn:
        db = self.assistant.database
        async with db.connect() as connection:
            conversation = await conversations.find_by_thread(connection, context.user_id, thread.id)
            zone = await settings_store.zone_of(connection, context.user_id)
        stored = await conversations.find_item(db, conversation["id"], message.id)
        if stored is None:  # the SDK stores the message before it asks for an answer
            raise conversations.ConversationNotFound("The message to answer is not in this thread.")
        start = chat.TurnStart(conversation, stored["id"], zone, list(stored["tool_calls"] or []))
        answer_id = self.store.generate_item_id("message", thread, context)
        return chat.Turn(self.assistant, context.principal, start, stream_model=True, answer_item_id=answer_id)


def _update(item: AssistantMessageItem, update: Any) -> ThreadItemUpdatedEvent:
    return ThreadItemUpdatedEvent(item_id=item.id, update=update)


def parse(body: bytes) -> Any:
    try:
        return REQUEST.validate_json(body)
    except ValidationError as exc:
        errors = [field_error({**error, "loc": ("body", *error["loc"])}) for error in exc.errors()]
        raise ValidationFailed(errors[:20]) from None


async def serve(
    server: TaskChatKitServer, body: bytes, caller: Principal, chat_limit: UserLimit
) -> bytes | AsyncGenerator[bytes, None]:
    """One ChatKit request: its JSON answer, or its event stream. What can be refused is refused
    before anything streams (a JSON error with its status): a malformed or unsupported request,
    another user's thread, attachments, the chat rate limit."""
    parsed = parse(body)
    context = Caller(caller)
    if isinstance(parsed, UNSUPPORTED):
        raise ValidationFailed([{"field": "type", "message": f"{parsed.type} is not supported by this server"}])
    thread_id = getattr(parsed.params, "thread_id", None)
    if thread_id is not None:
        await server.conversations.conversation(thread_id, context)  # another user's thread: 404
    if is_streaming_req(parsed):
        if getattr(getattr(parsed.params, "input", None), "attachments", None):
            raise ValidationFailed([{"field": "params.input.attachments", "message": "attachments are not supported"}])
        await chat_limit.check(caller.user_id, "chat turns")
    result = await server.process(body, context)
    if isinstance(result, NonStreamingResult):
        return result.json
    events = result.json_events
    first = await anext(events)  # a failure before the first event is a JSON error with its status
    return _prepend(first, events)


async def _prepend(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()
