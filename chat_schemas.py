"""What crosses the wire for chat (contract §13): the turn's request and answer, conversations."""
from datetime import datetime
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, BaseModel, Field, StrictStr, WithJsonSchema
from typing_extensions import TypeAliasType

from schemas import EntityId, ErrorBody, ListPublic, StrictBody, TaskPublic, TaskStats, trimmed

MESSAGE_LENGTH = 4000

ChatText = Annotated[
    StrictStr,
    AfterValidator(trimmed(MESSAGE_LENGTH, "message")),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MESSAGE_LENGTH, "pattern": r"\S"}),
]


class ChatRequest(StrictBody):
    message: ChatText = Field(description="What you say: 1 to 4,000 characters after trimming.", examples=["Add buy milk for tomorrow at 9"])
    conversation_id: EntityId | None = Field(
        None, description="The conversation to continue (one of yours, else 404 CONVERSATION_NOT_FOUND). "
        "Leave it out to start a new one.", examples=[12],
    )


# A JSON value: what a model may put in a tool call's arguments. Lists hold objects or scalars (not
# lists: no tool takes one), so the TypeScript openapi-typescript makes of it compiles.
Json = TypeAliasType("Json", "Union[dict[str, Json], list[JsonItem], str, int, float, bool, None]")
JsonItem = TypeAliasType("JsonItem", "Union[dict[str, Json], str, int, float, bool, None]")


class TaskResult(BaseModel):
    """add_task, get_task, update_task, complete_task, delete_task."""

    task_id: int = Field(examples=[17])
    status: Literal["created", "updated", "completed", "deleted"] | None = Field(
        None, description="Absent for get_task."
    )
    title: str = Field(examples=["Buy milk"])
    task: TaskPublic = Field(description="The task as the REST API returns it (delete_task: as it was).")
    deleted_ids: list[int] | None = Field(None, description="delete_task: the task and its subtasks.")


class TaskPage(BaseModel):
    """list_tasks."""

    tasks: list[TaskPublic]
    total: int = Field(description="Tasks matching the filters, ignoring paging.")


class ListsResult(BaseModel):
    """list_lists."""

    lists: list[ListPublic]


class ToolError(ErrorBody):
    """A tool that refused: the REST error body; the model read it and went on."""

    retry_after_seconds: int | None = Field(None, description="On RATE_LIMITED and SERVICE_UNAVAILABLE.")


class ToolCall(BaseModel):
    tool: str = Field(description="The tool the assistant ran (the MCP tools of §11).", examples=["add_task"])
    arguments: dict[str, Json] | str = Field(
        description="The arguments the model gave (the raw text if they were not a JSON object).",
        examples=[{"title": "Buy milk", "due_date": "2026-11-22T09:00:00+01:00"}],
    )
    result: TaskResult | TaskPage | TaskStats | ListsResult | ToolError = Field(
        description="What the tool returned, as /mcp returns it (task_stats: the REST stats); a failure is the "
        "REST error body."
    )


class ChatAnswer(BaseModel):
    conversation_id: int = Field(examples=[12])
    response: str = Field(description="The assistant's answer.", examples=["Added \"Buy milk\" for tomorrow at 9:00."])
    tool_calls: list[ToolCall] = Field(description="The tools this turn ran, in order.")


class ConversationSummary(BaseModel):
    id: int = Field(examples=[12])
    title: str | None = Field(description="The first message's first line (shortened).", examples=["Add buy milk for tomorrow at 9"])
    created_at: datetime
    updated_at: datetime = Field(description="When its last message was added.")


class ConversationMessage(BaseModel):
    id: int = Field(examples=[40])
    role: Literal["user", "assistant"]
    content: str
    tool_calls: list[ToolCall] = Field(
        description="On an assistant message: the tools its turn ran. On a user message: the tools that ran "
        "before the turn failed (then no assistant message answers it)."
    )
    created_at: datetime


class ConversationDetail(ConversationSummary):
    messages: list[ConversationMessage] = Field(description="Oldest first.")
