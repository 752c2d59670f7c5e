"""The chat routes (contract §13). Mounted twice by main.py, at `/api` and `/api/{user_id}`."""
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

import chat_stream
import conversations
from auth import CurrentUser
from chat_events import ChatNotConfigured, Failed, Finished
from chat_schemas import ChatAnswer, ChatRequest, ConversationDetail, ConversationSummary
from db import database_of
from idempotency import check_key
from responses import FastJSONResponse
from routes.tasks import BODY_ERRORS, _error
from schemas import ErrorBody

if TYPE_CHECKING:
    import chat

router = APIRouter()

TurnKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Any unique string (a UUID): a retry with the same key and body returns the first answer and "
        "runs nothing again; the same key with another body is 422; while the first is running, 409; after it "
        "failed, the retry takes the same turn up (the tools that ran are not run again).",
        json_schema_extra={"pattern": "^[!-~]{1,255}$"},
    ),
]
ConversationId = Annotated[int, Path(description="The conversation's id.", examples=[12])]
NOT_FOUND = {404: _error("No such conversation of yours (CONVERSATION_NOT_FOUND); another user's looks the same.")}
CHAT_ERRORS: dict[int | str, dict[str, Any]] = {
    **BODY_ERRORS,
    **NOT_FOUND,
    409: _error("A turn with this Idempotency-Key is still running (CONFLICT); retry shortly."),
    429: _error("Too many requests, or too many chat turns (CHAT_RATE_LIMIT_PER_MINUTE) (RATE_LIMITED); see Retry-After."),
    503: {
        "model": ErrorBody,
        "description": "CHAT_NOT_CONFIGURED: no model is configured (OPENAI_API_KEY / OPENAI_BASE_URL). "
        "CHAT_UNAVAILABLE: the model failed (an error status, no connection, no answer within CHAT_TIMEOUT_SECONDS, "
        "an answer that is not Chat Completions JSON); your message and the tool calls that ran are stored, no "
        "answer is; see Retry-After. SERVICE_UNAVAILABLE: the database.",
    },
}
CHAT_DOC = """One turn of the assistant: it reads your message (and the conversation's last 20 messages),
may run up to 10 tools on **your** tasks (the MCP tools: add_task, list_tasks, complete_task, ...), and
answers. The tools act for the token's user only: nothing in a message or a task can make it act for
another. Without `conversation_id`, a new conversation starts.

With `Accept: text/event-stream` the answer is streamed as the Vercel AI SDK's UI message stream
(header `x-vercel-ai-ui-message-stream: v1`): `start`, `data-conversation` (`{"conversation_id"}`),
`text-start` / `text-delta` / `text-end`, `tool-input-available` / `tool-output-available` (or
`tool-output-error`), `finish`, then `data: [DONE]`; a failure after the stream started is an
`error` part. A failure before anything was streamed is the JSON error with its status, as without
streaming.

`Idempotency-Key`: a retry with the same key and body returns the first answer and runs nothing again;
a retry after a failed attempt takes the same turn up where it stopped (the tools that ran are not run
again)."""


def load_assistant(app: FastAPI) -> "chat.Assistant":
    """The app's assistant. The SDKs behind it (openai, openai-agents, openai-chatkit: ~40 MiB and
    ~2 s per process) are imported here, so a server without chat configured never loads them;
    with chat configured, the app's lifespan calls this at start."""
    if not app.state.settings.chat_configured:
        raise ChatNotConfigured()
    if app.state.assistant is None:
        import chat  # the first use: see above

        app.state.assistant = chat.Assistant(app.state.settings, app.state.database)
    return app.state.assistant


async def require_chat(request: Request) -> None:
    load_assistant(request.app)


def wants_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


class ClosingStreamingResponse(StreamingResponse):
    """Closes its body when the response ends, also when the client went away mid-stream: the
    turn behind it is cancelled now, not when the garbage collector gets to it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]


@router.post(
    "/chat",
    response_model=ChatAnswer,
    summary="Talk to the assistant (one turn)",
    description=CHAT_DOC,
    dependencies=[Depends(require_chat)],
    responses={
        200: {
            "headers": {"Idempotent-Replayed": {"description": "`true` when this is a stored answer replayed.",
                                                "schema": {"type": "string"}}},
            "content": {"text/event-stream": {"schema": {"type": "string"}, "example": (
                'data: {"type":"start","messageId":"msg_5f..."}\n\n'
                'data: {"type":"data-conversation","data":{"conversation_id":12}}\n\n'
                'data: {"type":"tool-input-available","toolCallId":"call_1","toolName":"add_task",'
                '"input":{"title":"Buy milk"},"providerExecuted":true}\n\n'
                'data: {"type":"tool-output-available","toolCallId":"call_1","output":{"task_id":17,"status":"created",'
                '"title":"Buy milk","task":{}},"providerExecuted":true}\n\n'
                'data: {"type":"text-start","id":"msg_5f...-text-0"}\n\n'
                'data: {"type":"text-delta","id":"msg_5f...-text-0","delta":"Added."}\n\n'
                'data: {"type":"text-end","id":"msg_5f...-text-0"}\n\n'
                'data: {"type":"finish","finishReason":"stop"}\n\ndata: [DONE]\n\n'
            )}},
        },
        **CHAT_ERRORS,
    },
)
async def post_chat(
    request: Request, user: CurrentUser, body: ChatRequest, idempotency_key: TurnKeyHeader = None
) -> Response:
    import chat  # loaded by require_chat already: a lookup

    assistant = load_assistant(request.app)
    key = check_key(idempotency_key) if idempotency_key is not None else None
    await request.app.state.chat_limit.check(user.user_id, "chat turns")
    turn = await chat.begin(assistant, user, body.message, body.conversation_id, key)
    stream = wants_stream(request)
    if isinstance(turn, bytes):  # a stored answer
        return _replay(turn, stream)
    if not stream:
        answer = await chat.collect(turn)
        return FastJSONResponse(answer, headers={"Idempotent-Replayed": "false"} if key else None)
    turn.stream_model = True
    events = turn.events()
    first = await anext(events)  # a failure before anything was said is a plain JSON error
    if isinstance(first, Failed):
        await events.aclose()
        raise first.error
    encoder = chat_stream.UiMessageStream(turn.answer_item_id, turn.conversation_id)
    return ClosingStreamingResponse(
        encoder.encode_all([first], events), media_type=chat_stream.MEDIA_TYPE, headers=chat_stream.HEADERS
    )


def _replay(body: bytes, stream: bool) -> Response:
    headers = {"Idempotent-Replayed": "true"}
    if not stream:
        return Response(body, headers=headers, media_type="application/json")
    answer = orjson.loads(body)
    message_id = conversations.new_id("msg")
    encoder = chat_stream.UiMessageStream(message_id, answer["conversation_id"])
    events = [*chat_stream.replayed(answer, message_id), Finished(answer, {})]
    chunks = [*encoder.opening(), *(chunk for event in events for chunk in encoder.encode(event))]
    return Response(b"".join(chunks), media_type=chat_stream.MEDIA_TYPE, headers={**chat_stream.HEADERS, **headers})


@router.get(
    "/conversations",
    response_model=list[ConversationSummary],
    summary="List your conversations (newest first)",
    description="Ordered by the last message (`updated_at`), newest first; ChatKit threads are conversations too.",
)
async def list_conversations(
    request: Request,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="Conversations to skip.")] = 0,
) -> Response:
    rows = await conversations.newest_first(database_of(request), user.user_id, limit, offset)
    return FastJSONResponse([conversations.public_conversation(row) for row in rows])


@router.get(
    "/conversations/{conversation_id}",
    response_model=ConversationDetail,
    summary="Read a conversation with its messages",
    responses=NOT_FOUND,
)
async def read_conversation(conversation_id: ConversationId, request: Request, user: CurrentUser) -> Response:
    db = database_of(request)
    conversation = await conversations.get(db, user.user_id, conversation_id)
    messages = await conversations.all_messages(db, conversation_id)
    return FastJSONResponse({
        **conversations.public_conversation(conversation),
        "messages": [conversations.public_message(row) for row in messages],
    })


@router.delete(
    "/conversations/{conversation_id}",
    status_code=204,
    summary="Delete a conversation and its messages",
    description="The tasks the assistant changed stay as they are.",
    responses=NOT_FOUND,
)
async def delete_conversation(conversation_id: ConversationId, request: Request, user: CurrentUser) -> Response:
    await conversations.delete(database_of(request), user.user_id, conversation_id)
    return Response(status_code=204)
