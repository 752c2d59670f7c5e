"""The change feed (contract §10): `GET /changes` to poll with a cursor, `GET /events` to follow it
live as Server-Sent Events. Mounted by main.py at `/api` and at `/api/{user_id}`, like the tasks."""
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

import events
import live
from auth import CurrentUser, Principal, expiry_of, verify_token
from db import database_of
from errors import Forbidden, Unauthorized, ValidationFailed
from responses import FastJSONResponse
from schemas import ChangePage, ErrorBody

router = APIRouter()
stream_router = APIRouter()
PING_SECONDS = 15  # a comment line at least this often keeps proxies from closing an idle stream

Since = Annotated[
    str | None,
    Query(description="A `cursor` from an earlier response or event. Leave it out to get the current cursor only."),
]
EXPIRED = {410: {"model": ErrorBody, "description": "The cursor is older than the retained changes (CURSOR_EXPIRED): start over."}}


def parse_cursor(cursor: str, field: str = "since") -> int:
    seq = events.seq_of(cursor)
    if seq is None:
        raise ValidationFailed(
            [{"field": field, "message": "not a cursor this API handed out: pass back a `cursor` exactly as you got "
              "it, or leave it out to start from now"}]
        )
    return seq


@router.get(
    "/changes",
    response_model=ChangePage,
    summary="Your changes since a cursor (sync)",
    description="Every change of your tasks and lists after `since`, oldest first. Call again with the returned "
    "`cursor` (at once while `has_more`): you see every committed change exactly once, in commit order. Without "
    "`since`: no changes and the current cursor (fetch your tasks first, then follow from there).",
    responses=EXPIRED,
)
async def list_changes(
    user: CurrentUser,
    request: Request,
    since: Since = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many changes (1 to 1,000).")] = 500,
) -> Response:
    db = database_of(request)
    async with db.connect() as connection:
        if since is None:
            cursor = events.cursor_of(await events.current_seq(connection, user.user_id))
            return FastJSONResponse({"changes": [], "cursor": cursor, "has_more": False})
        rows, has_more = await events.changes_since(connection, user.user_id, parse_cursor(since), limit)
    changes = [events.as_change(row) for row in rows]
    cursor = changes[-1]["cursor"] if changes else since
    return FastJSONResponse({"changes": changes, "cursor": cursor, "has_more": has_more})


# The same security scheme as every route's (the OpenAPI document shows it), optional here: the
# token may come as ?access_token= instead.
optional_bearer = HTTPBearer(scheme_name="BetterAuthJWT", bearerFormat="JWT", auto_error=False)


async def stream_caller(
    request: Request,
    _scheme: Annotated[HTTPAuthorizationCredentials | None, Depends(optional_bearer)],
    access_token: Annotated[
        str | None,
        Query(description="The JWT, for a browser's EventSource (it cannot send headers). Never logged. "
              "Prefer the Authorization header where you can send one."),
    ] = None,
) -> Principal:
    """The caller of /events: `Authorization: Bearer` or `?access_token=`. Keeps the token's expiry."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization header must be 'Bearer <JWT>'.", token_given=False)
    elif access_token and access_token.strip():
        token = access_token
    else:
        raise Unauthorized(
            "No token: send Authorization: Bearer <JWT>, or ?access_token=<JWT> from a browser's EventSource.",
            token_given=False,
        )
    token = token.strip()  # once, for both the check and the expiry (blanks around a pasted token)
    principal = await verify_token(request, token)
    request.state.token_expires_at = expiry_of(token)
    return principal


StreamCaller = Annotated[Principal, Depends(stream_caller)]


async def require_path_stream_user(
    user: StreamCaller,
    user_id: Annotated[str, Path(description="Must equal the token's `sub` (else 403).", examples=["user_2x9"])],
) -> None:
    """`/api/{user_id}/events`: the path names the caller (the token may come as ?access_token=)."""
    if user_id != user.user_id:
        raise Forbidden("The user id in the path is not the one in your token. Use your own id, or /api/events.")


STREAM_DOC = """Your changes live, as Server-Sent Events (`text/event-stream`). Each event has `id:` (its
cursor), `event:` (its type) and `data:` (the change as `/api/changes` gives it). A reconnect with
`Last-Event-ID` (the browser sends it by itself) or `?since=` first replays what it missed; without
either, the stream starts at the current cursor. A `: ping` comment comes at least every 15 s. The
stream ends when the token expires: reconnect with a fresh one. A change made through any worker or
instance arrives within about a second. At most `EVENT_STREAMS_PER_USER` (default 5) open streams
per user and worker process; past it, 429."""


@stream_router.get(
    "/events",
    summary="Follow your changes live (Server-Sent Events)",
    description=STREAM_DOC,
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "An endless stream of events, replayed first from the cursor if one was given.",
            "content": {"text/event-stream": {"schema": {"type": "string"}, "example": (
                'id: v1.42\nevent: task.updated\ndata: {"cursor":"v1.42","type":"task.updated","id":17,'
                '"data":{"id":17,"title":"..."},"at":"2026-11-21T10:00:00Z"}\n\n'
            )}},
        },
        **EXPIRED,
        429: {"model": ErrorBody, "description": "Too many open streams for this user (RATE_LIMITED); close one."},
    },
)
async def stream_events(
    request: Request,
    user: StreamCaller,
    since: Since = None,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description="Sent by the browser on reconnect: resume after it.")
    ] = None,
) -> Response:
    db = database_of(request)
    notifier: live.ChangeNotifier = request.app.state.change_notifier
    slot = notifier.reserve(user.user_id)  # before any await: streams opened together are counted
    try:
        if last_event_id is not None or since is not None:
            start = parse_cursor(*((last_event_id, "Last-Event-ID") if last_event_id is not None else (since, "since")))
            backlog = await live.read_page(db, user.user_id, start)
        else:
            start, backlog = await live.read_position(db, user.user_id), ([], False)
    except BaseException:
        slot.release()
        raise
    stream = live.follow(db, slot, start, backlog, request.state.token_expires_at)
    return StreamResponse(slot, stream, ping=PING_SECONDS, headers={"Cache-Control": "no-store"})


class StreamResponse(EventSourceResponse):
    """The stream, giving its slot back when the response is over, also when the stream never
    started (the client was gone before the first event: the generator never ran)."""

    def __init__(self, slot: live.StreamSlot, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()
