"""`POST /chatkit`: OpenAI ChatKit's frontend (`@openai/chatkit-react` with a custom backend) talks to
the assistant here, with the same bearer token as the API (chatkit_server.py)."""
from typing import Any

from chatkit.server import NonStreamingResult
from chatkit.types import (
    AttachmentsCreateReq,
    AttachmentsDeleteReq,
    ChatKitReq,
    InputTranscribeReq,
    ThreadsAddClientToolOutputReq,
    ThreadsAddStructuredInputReq,
    ThreadsCustomActionReq,
    ThreadsSyncCustomActionReq,
    is_streaming_req,
)
from fastapi import APIRouter, Request, Response
from pydantic import TypeAdapter, ValidationError

from auth import CurrentUser
from chatkit_server import Caller, TaskChatKitServer
from errors import ValidationFailed, field_error
from routes.chat import CHAT_ERRORS, ClosingStreamingResponse

router = APIRouter(tags=["chat"])

REQUEST = TypeAdapter(ChatKitReq)
# What this server does not offer: files, dictation, widgets' actions, client tools.
UNSUPPORTED = (
    AttachmentsCreateReq, AttachmentsDeleteReq, InputTranscribeReq, ThreadsSyncCustomActionReq, ThreadsCustomActionReq,
    ThreadsAddClientToolOutputReq, ThreadsAddStructuredInputReq,
)
KINDS = [
    "threads.create", "threads.add_user_message", "threads.retry_after_item", "threads.get_by_id", "threads.list",
    "threads.update", "threads.delete", "items.list", "items.feedback",
]
CHATKIT_DOC = """The ChatKit server protocol (the `openai-chatkit` SDK's ChatKitServer), for OpenAI ChatKit's
frontend with a custom backend (`api.url` = this URL, `api.fetch` adding `Authorization: Bearer <JWT>`).
The body is a ChatKit request (`{"type": "threads.create", "params": {...}}`); streaming requests
(`threads.create`, `threads.add_user_message`, `threads.retry_after_item`) answer ChatKit's server-sent
events, the others JSON. The same assistant, tools, limits and conversations as `/api/chat`: a thread is
a conversation and shows in `/api/conversations`. Attachments, dictation, widget actions and client tools
are not supported (422)."""


def parse(body: bytes) -> Any:
    try:
        return REQUEST.validate_json(body)
    except ValidationError as exc:
        errors = [field_error({**error, "loc": ("body", *error["loc"])}) for error in exc.errors()]
        raise ValidationFailed(errors[:20]) from None


@router.post(
    "/chatkit",
    summary="OpenAI ChatKit's server protocol",
    description=CHATKIT_DOC,
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["type"],
            "properties": {"type": {"type": "string", "enum": KINDS}, "params": {"type": "object"},
                           "metadata": {"type": "object"}},
        }}}},
    },
    responses={
        200: {"description": "ChatKit's JSON answer, or its event stream for the streaming requests.",
              "content": {"application/json": {"schema": {"type": "object"}},
                          "text/event-stream": {"schema": {"type": "string"}}}},
        **CHAT_ERRORS,
    },
)
async def chatkit(request: Request, user: CurrentUser) -> Response:
    request.app.state.assistant.require_configured()
    server: TaskChatKitServer = request.app.state.chatkit
    body = await request.body()
    parsed = parse(body)
    context = Caller(user)
    if isinstance(parsed, UNSUPPORTED):
        raise ValidationFailed([{"field": "type", "message": f"{parsed.type} is not supported by this server"}])
    thread_id = getattr(parsed.params, "thread_id", None)
    if thread_id is not None:
        await server.conversations.conversation(thread_id, context)  # another user's thread: 404 before anything
    if is_streaming_req(parsed):
        if getattr(getattr(parsed.params, "input", None), "attachments", None):
            raise ValidationFailed([{"field": "params.input.attachments", "message": "attachments are not supported"}])
        await request.app.state.chat_limit.check(user.user_id, "chat turns")
    result = await server.process(body, context)
    if isinstance(result, NonStreamingResult):
        return Response(result.json, media_type="application/json")
    events = result.json_events
    first = await anext(events)  # a failure before the first event is a JSON error with its status
    return ClosingStreamingResponse(_prepend(first, events), media_type="text/event-stream",
                                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _prepend(first: bytes, rest: Any):
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()

