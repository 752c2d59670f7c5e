"""The task routes. Mounted twice by main.py: at `/api` and at `/api/{user_id}`, one implementation."""
import functools
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Query, Request, Response

import idempotency
import keyset
import queries
import store
import tree
from auth import CurrentUser
from db import Database, database_of
from errors import Forbidden, ValidationFailed
from etags import Precondition, matches_if_none_match, task_etag
from responses import FastJSONResponse
from routes.listing import TaskListQuery, link_header
from schemas import (
    CompletionUpdate,
    DeletedCount,
    ErrorBody,
    Me,
    TagCount,
    TaskCreate,
    TaskMove,
    TaskPublic,
    TaskStats,
    TaskUpdate,
)

router = APIRouter()
# Routes are matched in the order they are defined here: the busiest come first, and
# `/tasks/stats` must come before `/tasks/{task_id}`.

TaskId = Annotated[int, Path(description="The task's id (a positive integer).", examples=[17])]
IfMatch = Annotated[
    str | None,
    Header(description="An ETag from an earlier response: the write happens only if the task still has it (else 412)."),
]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Any unique string (a UUID): a retry with the same key and body returns the first response "
        "and creates nothing; the same key with another body is 422; while the first is running, 409.",
        json_schema_extra={"pattern": "^[!-~]{1,255}$"},  # 1 to 255 visible ASCII characters (checked in idempotency.py)
    ),
]
ListIdQuery = Annotated[
    int | None, Query(description="Only this list's tasks (a list that is not yours: 404 LIST_NOT_FOUND).", examples=[3])
]
IfNoneMatch = Annotated[str | None, Header(description="An ETag you hold: 304 Not Modified if the task still has it.")]


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


ETAG_HEADER = {"ETag": {"description": "The task's version; send it back in If-Match.", "schema": {"type": "string"}}}
TASK_NOT_FOUND = {404: _error("No such task for this user (TASK_NOT_FOUND); another user's task looks the same.")}
WRITE_ERRORS = {
    **TASK_NOT_FOUND,
    412: _error("If-Match does not match the task's current ETag (PRECONDITION_FAILED); nothing changed."),
}
LIST_NOT_FOUND = {404: _error("`list_id` names no list of yours (LIST_NOT_FOUND); another user's list looks the same.")}
BODY_ERRORS = {
    400: _error("The body is not valid JSON (INVALID_JSON)."),
    413: _error("The body is over 64 KiB (PAYLOAD_TOO_LARGE)."),
    415: _error("The body is not application/json (UNSUPPORTED_MEDIA_TYPE)."),
}


async def require_path_user(
    user: CurrentUser,
    user_id: Annotated[str, Path(description="Must equal the token's `sub` (else 403).", examples=["user_2x9"])],
) -> None:
    """For the `/api/{user_id}/...` spelling: the path names the caller, or it is a 403."""
    if user_id != user.user_id:
        raise Forbidden("The user id in the path is not the one in your token. Use your own id, or /api/tasks.")


def task_response(task: dict[str, Any], status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return FastJSONResponse(
        store.public(task), status_code=status_code, headers={"ETag": task_etag(task), **(headers or {})}
    )


@router.get(
    "/tasks",
    response_model=list[TaskPublic],
    summary="List your tasks",
    responses={
        200: {
            "headers": {
                "X-Total-Count": {
                    "description": "Tasks matching the filters, ignoring paging: exact, on every page, unless `count=false` "
                    "(then absent: no count query).",
                    "schema": {"type": "integer"},
                },
                "Link": {
                    "description": 'RFC 8288 links where they exist. Follow rel="next": it carries a `cursor` (the page '
                    "right after this one, as fast at any depth, never repeating or skipping a task when tasks are "
                    'added meanwhile; for sort=position, an offset). rel="prev" goes back by `offset`.',
                    "schema": {"type": "string"},
                },
            }
        },
        404: _error("`list_id` names no list of yours (LIST_NOT_FOUND), or `parent_id` no task of yours (TASK_NOT_FOUND)."),
    },
)
async def list_tasks(request: Request, user: CurrentUser, query: Annotated[TaskListQuery, Query()]) -> Response:
    db = database_of(request)
    filters, (sort, ascending) = query.to_filter(user.user_id), query.ordering()
    # What a cursor of this listing is bound to; worked out only when a cursor is read or written.
    belongs_to = functools.cache(lambda: keyset.identity(filters, sort, ascending))
    after = query.after(belongs_to()) if query.cursor is not None else None
    page = await queries.list_tasks(db, filters, sort, ascending, query.limit, query.offset, after=after, count=query.count)
    headers = {} if page.total is None else {"X-Total-Count": str(page.total)}
    links = link_header(request, page, query.limit, belongs_to)
    if links:
        headers["Link"] = links
    return FastJSONResponse(page.tasks, headers=headers)


@router.post(
    "/tasks",
    status_code=201,
    response_model=TaskPublic,
    summary="Create a task",
    responses={
        201: {"headers": {**ETAG_HEADER, "Location": {"description": "The new task's URL.", "schema": {"type": "string"}}}},
        **BODY_ERRORS,
        409: _error("A request with this Idempotency-Key is still running (CONFLICT); retry shortly."),
    },
)
async def create_task(
    request: Request, user: CurrentUser, body: TaskCreate, idempotency_key: IdempotencyKeyHeader = None
) -> Response:
    db = database_of(request)
    location = request.url.path.rstrip("/") + "/{}"
    if idempotency_key is None:
        task = await store.create_task(db, user.user_id, body.model_dump())
        return task_response(task, 201, {"Location": location.format(task["id"])})
    key = idempotency.check_key(idempotency_key)
    fields = body.model_dump()

    async def create(connection) -> tuple[int, dict[str, Any]]:
        task = await store.insert_task(connection, user.user_id, fields)
        return task["id"], store.public(task)

    task_id, content, replayed = await idempotency.create_once(db, user.user_id, key, "task", body, create)
    headers = {
        "Location": location.format(task_id),
        "ETag": task_etag({"id": task_id, "version": 1}),
        "Idempotent-Replayed": "true" if replayed else "false",
    }
    return Response(content, status_code=201, headers=headers, media_type="application/json")


@router.delete(
    "/tasks",
    response_model=DeletedCount,
    summary="Delete your completed tasks",
    description="Deletes every completed task (of one list, with `list_id`) with all its subtasks, open ones too; "
    "`deleted` counts every task removed.",
    responses={
        422: _error("`completed=true` is missing (VALIDATION_ERROR): this route only clears completed tasks."),
        **LIST_NOT_FOUND,
    },
)
async def delete_completed_tasks(
    user: CurrentUser,
    request: Request,
    completed: Annotated[bool | None, Query(description="Must be `true`: deletes every completed task of yours.")] = None,
    list_id: ListIdQuery = None,
) -> Response:
    db = database_of(request)
    if completed is not True:
        raise ValidationFailed(
            [{"field": "completed", "message": "add ?completed=true to delete your completed tasks"}],
            detail="DELETE /api/tasks only clears completed tasks: add ?completed=true.",
        )
    return FastJSONResponse({"deleted": len(await store.delete_completed(db, user.user_id, list_id))})


@router.get("/tasks/stats", response_model=TaskStats, summary="Count your tasks (of one list, with list_id)", responses=LIST_NOT_FOUND)
async def task_stats(user: CurrentUser, request: Request, list_id: ListIdQuery = None) -> Response:
    db = database_of(request)
    return FastJSONResponse(await queries.stats(db, user.user_id, list_id))


@router.get(
    "/tasks/{task_id}",
    response_model=TaskPublic,
    summary="Read a task",
    responses={200: {"headers": ETAG_HEADER}, 304: {"description": "Not modified (If-None-Match matched)."}, **TASK_NOT_FOUND},
)
async def read_task(
    task_id: TaskId, user: CurrentUser, request: Request, if_none_match: IfNoneMatch = None
) -> Response:
    db = database_of(request)
    task = await store.get_task(db, user.user_id, task_id)
    etag = task_etag(task)
    if matches_if_none_match(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return task_response(task)


async def _update(db: Database, user: CurrentUser, task_id: int, body: TaskUpdate, if_match: str | None) -> Response:
    changes = body.model_dump(exclude_unset=True)
    return task_response(await store.modify_task(db, user.user_id, task_id, changes, Precondition(if_match)))


UPDATE_DOC = {
    "response_model": TaskPublic,
    "responses": {200: {"headers": ETAG_HEADER}, **WRITE_ERRORS, **BODY_ERRORS},
    "description": "Partial update: fields given change, absent fields stay; `null` clears description or due_date. "
    "`completed: true` completes the open subtasks too (all levels). `list_id` / `parent_id` naming another place "
    "move the task with its subtasks to the end there (the place it is already in: no move).",
}


@router.put("/tasks/{task_id}", summary="Update a task (partial, same as PATCH)", **UPDATE_DOC)
async def put_task(
    task_id: TaskId, user: CurrentUser, request: Request, body: TaskUpdate, if_match: IfMatch = None
) -> Response:
    db = database_of(request)
    return await _update(db, user, task_id, body, if_match)


@router.patch("/tasks/{task_id}", summary="Update a task (partial)", **UPDATE_DOC)
async def patch_task(
    task_id: TaskId, user: CurrentUser, request: Request, body: TaskUpdate, if_match: IfMatch = None
) -> Response:
    db = database_of(request)
    return await _update(db, user, task_id, body, if_match)


@router.delete(
    "/tasks/{task_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a task",
    responses=WRITE_ERRORS,
)
async def delete_task(task_id: TaskId, user: CurrentUser, request: Request, if_match: IfMatch = None) -> Response:
    db = database_of(request)
    await store.delete_task(db, user.user_id, task_id, Precondition(if_match))
    return Response(status_code=204)


@router.post(
    "/tasks/{task_id}/toggle",
    response_model=TaskPublic,
    summary="Flip a task's completed flag",
    responses={200: {"headers": ETAG_HEADER}, **WRITE_ERRORS},
)
async def toggle_task(task_id: TaskId, user: CurrentUser, request: Request, if_match: IfMatch = None) -> Response:
    db = database_of(request)
    changes = {"completed": store.FLIP}
    return task_response(await store.modify_task(db, user.user_id, task_id, changes, Precondition(if_match)))


@router.patch(
    "/tasks/{task_id}/complete",
    response_model=TaskPublic,
    summary="Set or flip a task's completed flag",
    description='With `{"completed": true|false}` sets it; with no body flips it.',
    responses={200: {"headers": ETAG_HEADER}, **WRITE_ERRORS, **BODY_ERRORS},
)
async def complete_task(
    task_id: TaskId,
    user: CurrentUser,
    request: Request,
    body: Annotated[CompletionUpdate | None, Body()] = None,
    if_match: IfMatch = None,
) -> Response:
    db = database_of(request)
    changes = {"completed": body.completed if body is not None else store.FLIP}
    return task_response(await store.modify_task(db, user.user_id, task_id, changes, Precondition(if_match)))


@router.post(
    "/tasks/{task_id}/move",
    response_model=TaskPublic,
    summary="Move a task (with its subtasks) in the manual order, to another parent or list",
    description="`after_id` / `before_id`: a sibling at the destination (same list and parent); `to`: `top` or "
    "`bottom` (the default); at most one of the three. `parent_id` left out keeps the parent when the list stays "
    "and means top level when the list changes; `null` is the top level. Only the moved task gets a new position "
    "(its subtasks follow it to another list). A reference that is not a sibling there, a move under the task "
    "itself or its subtasks, or deeper than 4 levels: 422, nothing changed.",
    responses={
        200: {"headers": ETAG_HEADER},
        **WRITE_ERRORS,
        **BODY_ERRORS,
        409: _error("This exact spot has no room left after thousands of moves into it (CONFLICT); see the message."),
    },
)
async def move_task(
    task_id: TaskId, user: CurrentUser, request: Request, body: TaskMove, if_match: IfMatch = None
) -> Response:
    db = database_of(request)
    spot = tree.Spot(body.after_id, body.before_id, body.to or "bottom")
    move = tree.Move(body.list_id, body.parent_id, "parent_id" in body.model_fields_set, spot)
    return task_response(await store.move_task(db, user.user_id, task_id, move, Precondition(if_match)))


@router.get(
    "/tasks/{task_id}/occurrences",
    response_model=list[str],
    summary="Preview the next due dates of a recurring task",
    description="The next due dates the task's rule gives after its own due date (fewer when the series ends, "
    "or for a rule so sparse that they would span centuries; `[]` for a task that does not recur), in the format "
    "of `due_date`. For `from: completion` each occurrence is taken as completed on its due date.",
    responses=TASK_NOT_FOUND,
)
async def task_occurrences(
    task_id: TaskId,
    user: CurrentUser,
    request: Request,
    count: Annotated[int, Query(ge=1, le=50, description="How many, 1 to 50.")] = 5,
) -> Response:
    db = database_of(request)
    return FastJSONResponse(await store.task_occurrences(db, user.user_id, task_id, count))


@router.get("/tags", response_model=list[TagCount], summary="Your tags with how many tasks carry each, most used first")
async def list_tags(user: CurrentUser, request: Request) -> Response:
    db = database_of(request)
    return FastJSONResponse(await queries.tag_counts(db, user.user_id))


@router.get("/me", response_model=Me, summary="Who the token says you are")
async def read_me(user: CurrentUser) -> Response:
    return FastJSONResponse({"user_id": user.user_id, "email": user.email, "name": user.name})
