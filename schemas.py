"""What crosses the wire. Every rule a client can break lives here, once."""
import re
from datetime import date, datetime, timezone
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

import dates
import recurrence

Priority = Literal["low", "medium", "high"]
MAX_TAGS = 20


def text(value: str) -> str:
    """Text a client sent: no NUL character, valid Unicode."""
    if "\x00" in value:
        raise PydanticCustomError("nul_character", "must not contain the NUL character (\\u0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError("invalid_unicode", "must be valid Unicode text (no lone surrogates)") from None
    return value


def _trimmed(max_length: int, what: str):
    def check(value: str) -> str:
        value = text(value).strip()
        if not 1 <= len(value) <= max_length:
            raise PydanticCustomError(
                "text_length", "{what} must be 1 to {max} characters after trimming spaces",
                {"what": what, "max": max_length},
            )
        return value

    return check


trimmed = _trimmed  # for the schema modules beside this one (chat_schemas.py)


def _description(value: str) -> str:
    if len(text(value)) > 1000:
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
            parsed = datetime.fromisoformat(text(value).strip())  # _text: fromisoformat ignores a trailing NUL
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
# A user id (a token's `sub`) in a body: the assignee, a member, a new owner.
UserId = Annotated[
    StrictStr,
    AfterValidator(_trimmed(255, "a user id")),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"\S"}),
]
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


def parse_due_date(value: Any) -> date | datetime:
    """`YYYY-MM-DD` is an all-day date; anything else must be an ISO 8601 date-time (no offset: UTC)."""
    if isinstance(value, str):
        try:
            day = dates.parse_all_day(text(value).strip())
        except ValueError:
            raise PydanticCustomError("iso_date", "is not a real calendar date (YYYY-MM-DD)") from None
        if day is not None:
            return day
        if not any(separator in value for separator in "Tt "):  # 20261201, 2026-W49-1: dates, but not ours
            raise PydanticCustomError("iso_date", "write an all-day date as YYYY-MM-DD, e.g. 2026-12-01")
    try:
        return parse_utc_datetime(value)
    except PydanticCustomError:
        raise PydanticCustomError(
            "due_date",
            "must be a date such as 2026-12-01 (all-day) or a date-time such as 2026-12-01T17:00:00Z",
        ) from None


def _zone_name(value: str) -> str:
    if not dates.is_zone_name(text(value)):
        raise PydanticCustomError(
            "time_zone", "must be an IANA time zone name such as Europe/Berlin, America/New_York or UTC"
        )
    return value


def _rrule(value: str) -> str:
    try:
        return recurrence.parse_rule(text(value)).text
    except recurrence.RuleError as error:
        raise PydanticCustomError("rrule", "{problem}", {"problem": str(error)}) from None


def _reminders(values: list["ReminderIn"]) -> list["ReminderIn"]:
    unique = list({reminder.key(): reminder for reminder in reversed(values)}.values())[::-1]
    if len(unique) > MAX_REMINDERS:
        raise PydanticCustomError("too_many_reminders", "a task has at most {max} reminders", {"max": MAX_REMINDERS})
    return unique


DueDate = Annotated[
    Any,
    BeforeValidator(parse_due_date),
    WithJsonSchema(
        {
            "type": "string",
            "description": "A date `YYYY-MM-DD` (all-day: due at the end of that day in the task's zone) or an "
            "ISO 8601 date-time (a moment; without an offset it is UTC).",
            "examples": ["2026-12-01", "2026-12-01T17:00:00Z"],
        }
    ),
]
TimeZoneName = Annotated[
    StrictStr,
    AfterValidator(_zone_name),
    WithJsonSchema({"type": "string", "maxLength": 64, "description": "An IANA time zone name.", "examples": ["Europe/Berlin"]}),
]
MAX_REMINDERS = 5
MAX_BEFORE_MINUTES = 40_320  # four weeks


class StrictBody(BaseModel):
    """A request body: unknown fields are a 422 naming them, not a silent no-op."""

    model_config = ConfigDict(extra="forbid")


def _default_in_words_only(schema: dict[str, Any]) -> None:
    """Drop `default` from a request field's JSON schema (the description says it): openapi-typescript
    makes every property of a component schema that has a `default` required, so a typed client
    would have to send it."""
    schema.pop("default", None)


class RecurrenceIn(StrictBody):
    model_config = ConfigDict(extra="forbid", validate_by_name=True, serialize_by_alias=True)

    rrule: Annotated[StrictStr, AfterValidator(_rrule)] = Field(
        examples=["FREQ=WEEKLY;BYDAY=MO"],
        description="RFC 5545 RRULE (`RRULE:` prefix optional) made of FREQ (DAILY, WEEKLY, MONTHLY, YEARLY), "
        "INTERVAL, BYDAY (ordinals such as -1FR for monthly and yearly), BYMONTHDAY (negative counts from the "
        "month's end), BYMONTH, BYSETPOS, COUNT, UNTIL, WKST. Returned upper case, without the prefix.",
    )
    from_: Literal["due", "completion"] = Field(
        "due",
        alias="from",
        description="`due` (default): the next due date is the rule's first occurrence after both the previous "
        "due date and the completion; `completion`: the completion day plus one step of the rule.",
        json_schema_extra=_default_in_words_only,
    )


class ReminderIn(StrictBody):
    before_minutes: StrictInt | None = Field(
        None, ge=0, le=MAX_BEFORE_MINUTES, description="Fire this many minutes before the due moment (needs a due_date)."
    )
    at: UtcDateTime | None = Field(None, description="Fire at this moment (ISO 8601; no offset means UTC).")

    @model_validator(mode="after")
    def exactly_one_kind(self) -> "ReminderIn":
        if (self.before_minutes is None) == (self.at is None):
            raise PydanticCustomError("reminder_kind", 'give exactly one of "before_minutes" or "at"')
        return self

    def key(self) -> tuple[str, Any]:
        return ("before_minutes", self.before_minutes) if self.at is None else ("at", self.at)


Reminders = Annotated[list[ReminderIn], AfterValidator(_reminders)]
RECURRENCE_DOC = "Makes the task recurring (§9); needs a due_date. `null` stops the series."
REMINDERS_DOC = "Up to 5 of `{\"before_minutes\": n}` or `{\"at\": \"<date-time>\"}`; duplicates collapse."


ASSIGNEE_DOC = (
    "Who works on it: a member of the task's list with the owner or editor role (else 422). "
    "Its reminders fire for them (else for the task's creator)."
)


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
    due_date: DueDate | None = Field(None, examples=["2026-12-01T17:00:00Z"])
    time_zone: TimeZoneName | None = Field(
        None, description="The zone an all-day date and a recurrence are read in; `null`: your setting (/api/settings)."
    )
    list_id: EntityId | None = Field(
        None, examples=[3], description="A list you own or edit; default: your default list (a subtask: its parent's)."
    )
    parent_id: EntityId | None = Field(
        None, examples=[17], description="A task of a list you own or edit: the new task is its subtask, in its list (at most 4 levels)."
    )
    recurrence: RecurrenceIn | None = Field(None, description=RECURRENCE_DOC)
    reminders: Reminders = Field(default_factory=list, description=REMINDERS_DOC, json_schema_extra=_default_in_words_only)
    assignee_id: UserId | None = Field(None, examples=["user_2x9"], description=ASSIGNEE_DOC)


class TaskUpdate(StrictBody):
    """Partial update: fields given change, absent fields stay. `null` clears description and due_date;
    title, completed, priority and tags cannot be null."""

    title: Title = Field(  # type: ignore[assignment]
        None, examples=["Buy groceries and fruit"], description="1 to 255 characters after trimming."
    )
    description: Description | None = Field(None, description="At most 1000 characters; `null` clears it.")
    completed: StrictBool = None  # type: ignore[assignment]
    priority: Priority = None  # type: ignore[assignment]
    tags: Tags = Field(  # type: ignore[assignment]
        None, description="Replaces the task's tags. At most 20; each trimmed, 1 to 50 characters."
    )
    due_date: DueDate | None = Field(None, description="A date-time (no offset: UTC) or an all-day date YYYY-MM-DD; `null` clears it.")
    time_zone: TimeZoneName | None = None
    recurrence: RecurrenceIn | None = Field(None, description=RECURRENCE_DOC)
    reminders: Reminders = Field(None, description=REMINDERS_DOC)  # type: ignore[assignment]
    assignee_id: UserId | None = Field(None, description=ASSIGNEE_DOC + " `null` unassigns it.")
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
    position: str = Field(
        examples=["a1"],
        description="Your own order of your lists: sorted by position (byte-wise), then id. Each member orders their lists for themselves.",
    )
    owner_id: str = Field(examples=["user_2x9"], description="The owner's user id.")
    role: Literal["owner", "editor", "viewer"] = Field(description="Your role in this list.")
    member_count: int = Field(description="Members, the owner included (pending invitations not).")
    task_count: int = Field(description="Tasks in the list, subtasks included.")
    completed_count: int = Field(description="Completed tasks in the list, subtasks included.")
    created_at: datetime
    updated_at: datetime


class CompletionUpdate(StrictBody):
    completed: StrictBool


class TaskPublic(BaseModel):
    id: int = Field(examples=[17])
    user_id: str = Field(examples=["user_2x9"], description="Who created it.")
    title: str
    description: str | None
    completed: bool
    priority: Priority
    tags: list[str]
    due_date: date | datetime | None = Field(
        description="`YYYY-MM-DD` for an all-day task, else a UTC date-time with `Z`.", examples=["2026-12-01T17:00:00Z"]
    )
    time_zone: str | None
    recurrence: "RecurrencePublic | None"
    reminders: list["ReminderPublic"]
    next_occurrence_id: int | None = Field(description="The task created when this recurring task was completed.")
    list_id: int = Field(examples=[3])
    parent_id: int | None = Field(examples=[None], description="The task this one is a subtask of.")
    position: str = Field(
        examples=["a1"], description="Siblings (same list and parent) sorted by position (byte-wise), then id, are in manual order."
    )
    assignee_id: str | None = Field(examples=[None], description="The member who works on it (owner or editor of its list), or null.")
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class RecurrencePublic(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    rrule: str = Field(examples=["FREQ=WEEKLY;BYDAY=MO"])
    from_: Literal["due", "completion"] = Field(alias="from")


class ReminderPublic(BaseModel):
    before_minutes: int | None = Field(None, description="Present on a relative reminder.")
    at: datetime | None = Field(None, description="Present on an absolute reminder.")
    fire_at: datetime = Field(description="When it fires (UTC).")


TaskPublic.model_rebuild()


class ReminderDue(BaseModel):
    task_id: int
    title: str
    due_date: date | datetime | None = Field(description="The task's due_date, as the task shows it.")
    fire_at: datetime
    reminder: ReminderPublic


class UserSettingsPublic(BaseModel):
    time_zone: str = Field(examples=["Europe/Berlin"])


class UserSettingsUpdate(StrictBody):
    time_zone: TimeZoneName = Field(description="An IANA zone name: the zone of your tasks whose time_zone is null.")


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


class ProtectedResource(BaseModel):
    """RFC 9728 protected-resource metadata for /mcp."""

    resource: str = Field(examples=["https://api.example.com/mcp"])
    authorization_servers: list[str] | None = Field(None, examples=[["https://auth.example.com"]])
    bearer_methods_supported: list[str] = Field(examples=[["header"]])
    resource_name: str
    resource_documentation: str


class HealthStatus(BaseModel):
    status: str = Field(examples=["ok"])


class Change(BaseModel):
    """One event of the change feed (contract §10)."""

    cursor: str = Field(description="Opaque; pass it back as `since` (or Last-Event-ID) to continue after this event.")
    type: Literal["task.created", "task.updated", "task.deleted", "list.created", "list.updated", "list.deleted", "reminder.due"]
    id: int = Field(description="The task's or list's id (the reminder's task for `reminder.due`).")
    data: TaskPublic | ListPublic | ReminderDue | None = Field(
        description="The entity after the change, as the REST API returns it; null for deletes; for `reminder.due`, "
        "the reminder as `GET /api/reminders` lists it."
    )
    at: datetime = Field(description="When the change was made (UTC).")
    actor: str | None = Field(
        description="Who made the change (their user id; a shared list's members see each other's changes); "
        "null when the service did it (`reminder.due`)."
    )


class ChangePage(BaseModel):
    changes: list[Change] = Field(description="Your events after `since`, oldest first.")
    cursor: str = Field(description="The last event's cursor, or `since` when there were none: call again with it.")
    has_more: bool = Field(description="More events follow: call again at once with `cursor`.")
