"""What crosses the wire. Every rule a client can break lives here, once."""
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

Priority = Literal["low", "medium", "high"]
MAX_TAGS = 20


def _text(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError("nul_character", "must not contain the NUL character (\\u0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError("invalid_unicode", "must be valid Unicode text (no lone surrogates)") from None
    return value


def _trimmed(max_length: int, what: str):
    def check(value: str) -> str:
        value = _text(value).strip()
        if not 1 <= len(value) <= max_length:
            raise PydanticCustomError(
                "text_length", "{what} must be 1 to {max} characters after trimming spaces",
                {"what": what, "max": max_length},
            )
        return value

    return check


def _description(value: str) -> str:
    if len(_text(value)) > 1000:
        raise PydanticCustomError("text_length", "must be at most 1000 characters")
    return value


def _tags(values: list[str]) -> list[str]:
    """Trim each tag; collapse case-insensitive duplicates to the first spelling, order kept."""
    check = _trimmed(50, "each tag")
    first_spelling: dict[str, str] = {}
    for value in values:
        tag = check(value)
        first_spelling.setdefault(tag.lower(), tag)
    if len(first_spelling) > MAX_TAGS:
        raise PydanticCustomError("too_many_tags", "a task has at most {max} tags", {"max": MAX_TAGS})
    return list(first_spelling.values())


def parse_utc_datetime(value: Any) -> datetime:
    """ISO 8601 text to an aware UTC datetime; no offset means UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(_text(value).strip())  # _text: fromisoformat ignores a trailing NUL
        except ValueError:
            parsed = None
    else:
        parsed = None
    if parsed is None:
        raise PydanticCustomError("iso_datetime", "must be an ISO 8601 date-time such as 2026-12-01T17:00:00Z")
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:
        raise PydanticCustomError("iso_datetime", "is outside the supported range of dates") from None


# The rules above, also in the OpenAPI schema (for clients and fuzzers); the validators stay the source of
# truth (they trim first). `\S`: at least one character that is not a space.
Title = Annotated[
    StrictStr,
    AfterValidator(_trimmed(255, "title")),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"\S"}),
]
Description = Annotated[StrictStr, AfterValidator(_description), WithJsonSchema({"type": "string", "maxLength": 1000})]
Tag = Annotated[StrictStr, WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 50, "pattern": r"\S"})]
Tags = Annotated[list[Tag], AfterValidator(_tags)]
# An id in a body: a positive integer (true is not 1). One that names nothing of the caller's is a
# 422 naming the field (checked against the database).
EntityId = Annotated[StrictInt, Field(ge=1)]
ListName = Annotated[
    StrictStr,
    AfterValidator(_trimmed(100, "name")),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 100, "pattern": r"\S"}),
]


def _color(value: str) -> str:
    if not re.fullmatch(r"#[0-9a-fA-F]{6}", value):
        raise PydanticCustomError("color", "must be a colour as #rrggbb (six hex digits), or null")
    return value.lower()


Color = Annotated[StrictStr, AfterValidator(_color), WithJsonSchema({"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"})]
UtcDateTime = Annotated[datetime, BeforeValidator(parse_utc_datetime)]


class StrictBody(BaseModel):
    """A request body: unknown fields are a 422 naming them, not a silent no-op."""

    model_config = ConfigDict(extra="forbid")


def _default_in_words_only(schema: dict[str, Any]) -> None:
    """Drop `default` from a request field's JSON schema (the description says it): openapi-typescript
    makes every property of a component schema that has a `default` required, so a typed client
    would have to send it."""
    schema.pop("default", None)


class TaskCreate(StrictBody):
    title: Title = Field(examples=["Buy groceries"], description="1 to 255 characters after trimming.")
    description: Description | None = Field(None, examples=["Milk, bread, eggs"], description="At most 1000 characters.")
    completed: StrictBool = Field(False, description="Default `false`.", json_schema_extra=_default_in_words_only)
    priority: Priority = Field("medium", description="Default `medium`.", json_schema_extra=_default_in_words_only)
    tags: Tags = Field(
        default_factory=list,
        examples=[["home", "errands"]],
        description="At most 20; each trimmed, 1 to 50 characters; case-insensitive duplicates collapse to the first.",
    )
    due_date: UtcDateTime | None = Field(
        None, examples=["2026-12-01T17:00:00Z"], description="ISO 8601; without an offset it is taken as UTC."
    )
    list_id: EntityId | None = Field(
        None, examples=[3], description="One of your lists; default: your default list (a subtask: its parent's)."
    )
    parent_id: EntityId | None = Field(
        None, examples=[17], description="One of your tasks: the new task is its subtask, in its list (at most 4 levels)."
    )


class TaskUpdate(StrictBody):
    """Partial update: fields given change, absent fields stay. `null` clears description and due_date;
    title, completed, priority and tags cannot be null."""

    title: Title = Field(None, examples=["Buy groceries and fruit"])  # type: ignore[assignment]
    description: Description | None = None
    completed: StrictBool = None  # type: ignore[assignment]
    priority: Priority = None  # type: ignore[assignment]
    tags: Tags = None  # type: ignore[assignment]
    due_date: UtcDateTime | None = None
    list_id: EntityId = Field(  # type: ignore[assignment]
        None, description="Moves the task (with its subtasks) to the end of this list, at the top level."
    )
    parent_id: EntityId | None = Field(
        None, description="Moves the task (with its subtasks) to the end of this task's subtasks; `null`: top level."
    )


class Placement(StrictBody):
    """Where among the siblings: right after or before one of them, or `to` the top or bottom
    (the default). At most one of the three."""

    after_id: EntityId | None = Field(None, examples=[12], description="Right after this sibling (drag and drop: the one above).")
    before_id: EntityId | None = Field(None, examples=[13], description="Right before this sibling.")
    to: Literal["top", "bottom"] | None = Field(None, description="`top` or `bottom` (the default when nothing is given).")

    @model_validator(mode="after")
    def one_reference(self) -> "Placement":
        given = [name for name in ("after_id", "before_id", "to") if getattr(self, name) is not None]
        if len(given) > 1:
            raise PydanticCustomError(
                "one_reference", "send at most one of after_id, before_id and to (got {given})", {"given": ", ".join(given)}
            )
        return self


class TaskMove(Placement):
    """Move a task (with its subtree). `parent_id` left out keeps the parent when the list stays, and
    means top level when the list changes; `null` is the top level."""

    list_id: EntityId | None = Field(None, examples=[3], description="The destination list (default: the task's own).")
    parent_id: EntityId | None = Field(None, examples=[17], description="The new parent; `null`: top level.")


class ListCreate(StrictBody):
    name: ListName = Field(examples=["Groceries"], description="1 to 100 characters after trimming.")
    color: Color | None = Field(None, examples=["#16a34a"], description="`#rrggbb` or null.")


class ListUpdate(StrictBody):
    """Partial update: fields given change. `null` clears color; name cannot be null."""

    name: ListName = Field(None, examples=["Errands"])  # type: ignore[assignment]
    color: Color | None = None


class ListPublic(BaseModel):
    id: int = Field(examples=[3])
    name: str = Field(examples=["Groceries"])
    color: str | None = Field(examples=["#16a34a"])
    is_default: bool
    position: str = Field(examples=["a1"], description="Lists sorted by position (byte-wise), then id, are in manual order.")
    task_count: int = Field(description="Tasks in the list, subtasks included.")
    completed_count: int = Field(description="Completed tasks in the list, subtasks included.")
    created_at: datetime
    updated_at: datetime


class CompletionUpdate(StrictBody):
    completed: StrictBool


class TaskPublic(BaseModel):
    id: int = Field(examples=[17])
    user_id: str = Field(examples=["user_2x9"])
    title: str
    description: str | None
    completed: bool
    priority: Priority
    tags: list[str]
    due_date: datetime | None
    list_id: int = Field(examples=[3])
    parent_id: int | None = Field(examples=[None], description="The task this one is a subtask of.")
    position: str = Field(
        examples=["a1"], description="Siblings (same list and parent) sorted by position (byte-wise), then id, are in manual order."
    )
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class PriorityCounts(BaseModel):
    low: int
    medium: int
    high: int


class TaskStats(BaseModel):
    total: int
    completed: int
    pending: int
    overdue: int
    by_priority: PriorityCounts


class TagCount(BaseModel):
    tag: str = Field(examples=["home"])
    count: int = Field(examples=[3])


class DeletedCount(BaseModel):
    deleted: int


class Me(BaseModel):
    user_id: str
    email: str | None
    name: str | None


class FieldError(BaseModel):
    field: str = Field(examples=["title"])
    message: str = Field(examples=["title must be 1 to 255 characters after trimming spaces"])


class ErrorBody(BaseModel):
    detail: str = Field(examples=["Task not found"])
    error_code: str = Field(examples=["TASK_NOT_FOUND"])
    timestamp: str = Field(examples=["2026-11-21T10:00:00Z"])
    errors: list[FieldError] | None = Field(None, description="Present on VALIDATION_ERROR: one entry per problem.")


class HealthStatus(BaseModel):
    status: str = Field(examples=["ok"])


class Change(BaseModel):
    """One event of the change feed (contract §10)."""

    cursor: str = Field(description="Opaque; pass it back as `since` (or Last-Event-ID) to continue after this event.")
    type: Literal["task.created", "task.updated", "task.deleted", "list.created", "list.updated", "list.deleted", "reminder.due"]
    id: int = Field(description="The task's or list's id (the reminder's task for `reminder.due`).")
    data: TaskPublic | ListPublic | None = Field(description="The entity after the change, as the REST API returns it; null for deletes.")
    at: datetime = Field(description="When the change was made (UTC).")


class ChangePage(BaseModel):
    changes: list[Change] = Field(description="Your events after `since`, oldest first.")
    cursor: str = Field(description="The last event's cursor, or `since` when there were none: call again with it.")
    has_more: bool = Field(description="More events follow: call again at once with `cursor`.")
