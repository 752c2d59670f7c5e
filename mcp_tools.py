"""The MCP tools (contract §11): thin adapters over the store functions and schemas the REST routes
use. Arguments are validated by the same pydantic models (their JSON schemas are the tools' input
schemas), so every limit and error code is the REST one. The acting user is always the token's;
a `user_id` argument is only checked against it."""
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from mcp_types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, ValidationError

import lists
import queries
import store
from auth import Principal
from db import Database, DatabaseUnavailable
from errors import ApiError, Forbidden, InternalError, NotFound, ValidationFailed, database_unavailable, field_error
from etags import Precondition, task_etag
from responses import to_json
from routes.listing import ListQuery
from schemas import EntityId, StrictBody, TaskCreate, TaskUpdate

log = logging.getLogger("task_api.mcp")

TaskId = Annotated[EntityId, Field(description="The task's id, as add_task or list_tasks returned it.")]
USER_ID_ARGUMENT = {
    "type": "string",
    "description": "Optional. Your own user id (the token's `sub`); any other id fails with FORBIDDEN "
    "and changes nothing. The tools always act for the token's user.",
}


class TaskRef(StrictBody):
    task_id: TaskId


class TaskChanges(TaskUpdate):
    """update_task: which task, and the REST update's fields (absent fields stay)."""

    task_id: TaskId


class ListTasksArguments(ListQuery):
    """The REST list's query parameters; a misspelt argument is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


class StatsArguments(StrictBody):
    list_id: EntityId | None = Field(None, description="Only this list's tasks (a list that is not yours: LIST_NOT_FOUND).")


class NoArguments(StrictBody):
    pass


Result = dict[str, Any]
Run = Callable[[Database, str, Any], Awaitable[Result]]


@dataclass(frozen=True)
class TaskTool:
    name: str
    description: str
    arguments: type[BaseModel]
    run: Run
    annotations: ToolAnnotations
    input_schema: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        schema = self.arguments.model_json_schema()
        schema.setdefault("properties", {})["user_id"] = USER_ID_ARGUMENT
        object.__setattr__(self, "input_schema", schema)

    async def call(self, db: Database, user_id: str, arguments: dict[str, Any]) -> Result:
        return await self.run(db, user_id, self.parse(arguments, user_id))

    def parse(self, arguments: dict[str, Any], user_id: str) -> BaseModel:
        arguments = dict(arguments)
        claimed = arguments.pop("user_id", None)
        if claimed is not None and claimed != user_id:
            raise Forbidden("user_id is not the id in your token. Leave it out, or send your own id.")
        try:
            return self.arguments.model_validate(arguments)
        except ValidationError as exc:
            # Located as a body's errors are, so the fields read as the REST API's (`tags.3`).
            raise ValidationFailed([field_error({**error, "loc": ("body", *error["loc"])}) for error in exc.errors()])


def task_result(task: dict[str, Any], status: str) -> Result:
    """The Hackathon's `{task_id, status, title}`, plus the task as the REST API returns it."""
    return {"task_id": task["id"], "status": status, "title": task["title"], "task": store.public(task)}


async def add_task(db: Database, user_id: str, body: TaskCreate) -> Result:
    return task_result(await store.create_task(db, user_id, body.model_dump()), "created")


async def list_tasks(db: Database, user_id: str, query: ListTasksArguments) -> Result:
    page = await queries.list_tasks(db, query.to_filter(user_id), *query.ordering(), query.limit, query.offset)
    return {"tasks": page.tasks, "total": page.total}


async def get_task(db: Database, user_id: str, ref: TaskRef) -> Result:
    task = await store.get_task(db, user_id, ref.task_id)
    return {"task_id": task["id"], "title": task["title"], "task": store.public(task)}


async def update_task(db: Database, user_id: str, body: TaskChanges) -> Result:
    changes = body.model_dump(exclude_unset=True, exclude={"task_id"})
    task = await store.modify_task(db, user_id, body.task_id, changes, Precondition(None))
    return task_result(task, "updated")


async def complete_task(db: Database, user_id: str, ref: TaskRef) -> Result:
    return task_result(await store.complete_task(db, user_id, ref.task_id), "completed")


async def delete_task(db: Database, user_id: str, ref: TaskRef) -> Result:
    task = await store.get_task(db, user_id, ref.task_id)
    # If-Match the version just read: the task reported is exactly the one deleted.
    deleted = await store.delete_task(db, user_id, ref.task_id, Precondition(task_etag(task)))
    return {**task_result(task, "deleted"), "deleted_ids": deleted}


async def task_stats(db: Database, user_id: str, arguments: StatsArguments) -> Result:
    return await queries.stats(db, user_id, arguments.list_id)


async def list_lists(db: Database, user_id: str, _: NoArguments) -> Result:
    return {"lists": [lists.public(row) for row in await lists.all_lists(db, user_id)]}


READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
IDEMPOTENT_WRITE = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False)
ONE_TASK = " Fails with TASK_NOT_FOUND if no task of yours has this id."

TOOLS = {
    tool.name: tool
    for tool in (
        TaskTool(
            "add_task",
            "Create a task for the signed-in user. Returns {task_id, status: 'created', title, task}.",
            TaskCreate, add_task, WRITES,
        ),
        TaskTool(
            "list_tasks",
            "List the signed-in user's tasks, filtered, sorted and paged as GET /api/tasks. "
            "Returns {tasks: [...], total} (total ignores paging).",
            ListTasksArguments, list_tasks, READ_ONLY,
        ),
        TaskTool("get_task", "Read one task." + ONE_TASK, TaskRef, get_task, READ_ONLY),
        TaskTool(
            "update_task",
            "Change some fields of a task: fields given change, absent fields stay; null clears description "
            "or due_date. Returns {task_id, status: 'updated', title, task}." + ONE_TASK,
            TaskChanges, update_task, WRITES,
        ),
        TaskTool(
            "complete_task",
            "Mark a task completed, with its open subtasks (a task already completed stays as it is). "
            "Returns {task_id, status: 'completed', title, task}." + ONE_TASK,
            TaskRef, complete_task, IDEMPOTENT_WRITE,
        ),
        TaskTool(
            "delete_task",
            "Delete a task and its subtasks for good. Returns {task_id, status: 'deleted', title, task (as it was), "
            "deleted_ids (the task and its subtasks)}." + ONE_TASK,
            TaskRef, delete_task, DESTRUCTIVE,
        ),
        TaskTool(
            "task_stats",
            "Count the signed-in user's tasks (of one list, with list_id): "
            "{total, completed, pending, overdue, by_priority: {low, medium, high}}.",
            StatsArguments, task_stats, READ_ONLY,
        ),
        TaskTool(
            "list_lists",
            "The signed-in user's lists in their order, with task counts: {lists: [...]}. "
            "Use a list's id as list_id in add_task, update_task, list_tasks and task_stats.",
            NoArguments, list_lists, READ_ONLY,
        ),
    )
}


async def call_tool(db: Database, caller: Principal, name: str, arguments: dict[str, Any]) -> Result:
    """Run one tool as the caller: the one way in for /mcp (mcp_server.py) and the chat agent
    (chat.py). The result is plain JSON (dates as the REST API writes them); any failure is an
    ApiError carrying the REST error code."""
    tool = TOOLS.get(name)
    if tool is None:
        raise NotFound(f"No tool named {name!r}. The tools are: {', '.join(TOOLS)}.")
    try:
        return orjson.loads(to_json(await tool.call(db, caller.user_id, arguments)))
    except ApiError:
        raise
    except DatabaseUnavailable as exc:
        raise database_unavailable(exc) from exc
    except Exception as exc:
        log.exception("tool failed", extra={"tool": name})
        raise InternalError() from exc
