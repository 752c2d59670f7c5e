"""The list routes. Mounted twice by main.py, like the task routes: at `/api` and at `/api/{user_id}`."""
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Path, Query, Request, Response

import idempotency
import lists
import tree
from auth import CurrentUser
from db import Database, database_of
from etags import Precondition, list_etag, matches_if_none_match
from responses import FastJSONResponse
from routes.tasks import BODY_ERRORS, IdempotencyKeyHeader, IfNoneMatch, _error
from schemas import ListCreate, ListPublic, ListUpdate, Placement

router = APIRouter()

ListId = Annotated[int, Path(description="The list's id (a positive integer).", examples=[3])]
IfMatch = Annotated[
    str | None,
    Header(description="An ETag from an earlier response: the write happens only if the list still has it (else 412)."),
]
ETAG_HEADER = {
    "ETag": {"description": "The list's version and counts; send it back in If-Match.", "schema": {"type": "string"}}
}
LIST_NOT_FOUND = {404: _error("No such list among yours (LIST_NOT_FOUND): one you are not a member of looks the same.")}
NOT_OWNER = {403: _error("You are a member, but this needs the owner role (FORBIDDEN); the message says so.")}
WRITE_ERRORS = {
    **LIST_NOT_FOUND,
    412: _error("If-Match does not match the list's current ETag (PRECONDITION_FAILED); nothing changed."),
}


def list_response(row: dict[str, Any], status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return FastJSONResponse(lists.public(row), status_code=status_code, headers={"ETag": list_etag(row), **(headers or {})})


@router.get("/lists", response_model=list[ListPublic], summary="Your lists, in manual order (the default one always there)")
async def list_lists(user: CurrentUser, request: Request) -> Response:
    db = database_of(request)
    return FastJSONResponse([lists.public(row) for row in await lists.all_lists(db, user.user_id)])


@router.post(
    "/lists",
    status_code=201,
    response_model=ListPublic,
    summary="Create a list (at the end)",
    responses={
        201: {"headers": {**ETAG_HEADER, "Location": {"description": "The new list's URL.", "schema": {"type": "string"}}}},
        **BODY_ERRORS,
        409: _error("A request with this Idempotency-Key is still running (CONFLICT); retry shortly."),
    },
    description=f"At most {lists.MAX_LISTS} lists per user, the default one included (past it: 422).",
)
async def create_list(
    request: Request, user: CurrentUser, body: ListCreate, idempotency_key: IdempotencyKeyHeader = None
) -> Response:
    db = database_of(request)
    location = request.url.path.rstrip("/") + "/{}"
    fields = body.model_dump()
    if idempotency_key is None:
        row = await lists.create_list(db, user.user_id, fields, user.email, user.name)
        return list_response(row, 201, {"Location": location.format(row["id"])})
    key = idempotency.check_key(idempotency_key)

    async def create(connection) -> tuple[int, dict[str, Any]]:
        row = await lists.insert_list(connection, user.user_id, fields, user.email, user.name)
        return row["id"], lists.public(row)

    list_id, content, replayed = await idempotency.create_once(db, user.user_id, key, "list", body, create)
    headers = {
        "Location": location.format(list_id),
        "ETag": _etag_at_creation(content),
        "Idempotent-Replayed": "true" if replayed else "false",
    }
    return Response(content, status_code=201, headers=headers, media_type="application/json")


def _etag_at_creation(content: bytes) -> str:
    """The ETag a list had when it was created (version 1, empty, its owner alone), from the body the
    first response sent; a body stored by an older version lacks the newer fields, which had those values."""
    created = {"task_count": 0, "completed_count": 0, "member_count": 1, "role": "owner", "position": "", **orjson.loads(content)}
    return list_etag({**created, "version": 1})


@router.get(
    "/lists/{list_id}",
    response_model=ListPublic,
    summary="Read a list",
    responses={200: {"headers": ETAG_HEADER}, 304: {"description": "Not modified (If-None-Match matched)."}, **LIST_NOT_FOUND},
)
async def read_list(list_id: ListId, user: CurrentUser, request: Request, if_none_match: IfNoneMatch = None) -> Response:
    db = database_of(request)
    row = await lists.get_list(db, user.user_id, list_id)
    etag = list_etag(row)
    if matches_if_none_match(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return list_response(row)


UPDATE_DOC = {
    "response_model": ListPublic,
    "responses": {200: {"headers": ETAG_HEADER}, **WRITE_ERRORS, **NOT_OWNER, **BODY_ERRORS},
    "description": "Partial update of `name` and `color` (the owner only): fields given change, absent fields stay; "
    "`null` clears color. Every member sees the change.",
}


async def _update(db: Database, user: CurrentUser, list_id: int, body: ListUpdate, if_match: str | None) -> Response:
    changes = body.model_dump(exclude_unset=True)
    return list_response(await lists.modify_list(db, user.user_id, list_id, changes, Precondition(if_match)))


@router.patch("/lists/{list_id}", summary="Rename or recolour a list (partial)", **UPDATE_DOC)
async def patch_list(list_id: ListId, user: CurrentUser, request: Request, body: ListUpdate, if_match: IfMatch = None) -> Response:
    db = database_of(request)
    return await _update(db, user, list_id, body, if_match)


@router.put("/lists/{list_id}", summary="Rename or recolour a list (partial, same as PATCH)", **UPDATE_DOC)
async def put_list(list_id: ListId, user: CurrentUser, request: Request, body: ListUpdate, if_match: IfMatch = None) -> Response:
    db = database_of(request)
    return await _update(db, user, list_id, body, if_match)


@router.delete(
    "/lists/{list_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a list (an empty one, or with ?cascade=true its tasks too)",
    description="The owner only. A shared list is deleted for every member.",
    responses={
        **WRITE_ERRORS,
        **NOT_OWNER,
        409: _error("The list has tasks (CONFLICT; the message says how many; add ?cascade=true), or it is the default list."),
    },
)
async def delete_list(
    list_id: ListId,
    user: CurrentUser,
    request: Request,
    cascade: Annotated[bool, Query(description="`true`: delete the list's tasks (all levels) with it.")] = False,
    if_match: IfMatch = None,
) -> Response:
    db = database_of(request)
    await lists.delete_list(db, user.user_id, list_id, cascade, Precondition(if_match))
    return Response(status_code=204)


@router.post(
    "/lists/{list_id}/move",
    response_model=ListPublic,
    summary="Move a list in your own order of your lists (any member)",
    description="`after_id` / `before_id`: another of your lists; `to`: `top` or `bottom` (the default); at most one.",
    responses={
        200: {"headers": ETAG_HEADER},
        **WRITE_ERRORS,
        **BODY_ERRORS,
        409: _error("This exact spot has no room left after thousands of moves into it (CONFLICT); see the message."),
    },
)
async def move_list(list_id: ListId, user: CurrentUser, request: Request, body: Placement, if_match: IfMatch = None) -> Response:
    db = database_of(request)
    spot = tree.Spot(body.after_id, body.before_id, body.to or "bottom")
    return list_response(await lists.move_list(db, user.user_id, list_id, spot, Precondition(if_match)))
