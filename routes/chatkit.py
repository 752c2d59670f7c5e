"""`POST /chatkit`: OpenAI ChatKit's frontend (`@openai/chatkit-react` with a custom backend) talks to
the assistant here, with the same bearer token as the API (chatkit_server.py)."""
from fastapi import APIRouter, Request, Response

from auth import CurrentUser
from routes.chat import CHAT_ERRORS, ClosingStreamingResponse, load_assistant

router = APIRouter(tags=["chat"])

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


@router.post(
    "/chatkit",
    summary="OpenAI ChatKit's server protocol",
    description=CHATKIT_DOC,
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["type"],
            "properties": {
                "type": {"type": "string", "enum": KINDS},
                "params": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Json"}},
                "metadata": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Json"}},
            },
        }}}},
    },
    responses={
        200: {"description": "ChatKit's JSON answer, or its event stream for the streaming requests.",
              "content": {"application/json": {"schema": {"type": "object", "additionalProperties": {
                  "$ref": "#/components/schemas/Json"}}},
                          "text/event-stream": {"schema": {"type": "string"}}}},
        **CHAT_ERRORS,
    },
)
async def chatkit(request: Request, user: CurrentUser) -> Response:
    assistant = load_assistant(request.app)
    import chatkit_server  # loaded with the assistant (at start when chat is configured): a lookup

    if request.app.state.chatkit is None:
        request.app.state.chatkit = chatkit_server.TaskChatKitServer(assistant)
    answer = await chatkit_server.serve(request.app.state.chatkit, await request.body(), user, request.app.state.chat_limit)
    if isinstance(answer, bytes):
        return Response(answer, media_type="application/json")
    return ClosingStreamingResponse(answer, media_type="text/event-stream",
                                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
