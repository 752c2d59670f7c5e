"""The list's query parameters, and how they become a filter, an ordering and Link headers."""
import re
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import Request
from starlette.datastructures import URL
from pydantic import BaseModel, BeforeValidator, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

import dates
import keyset
from queries import ASSIGNEE_NONE, Page, TaskFilter
from schemas import Priority, TimeZoneName, UtcDateTime

SortField = Literal["created_at", "created", "updated_at", "due_date", "priority", "title", "position"]
SORT_ALIASES = {"created": "created_at"}
ASCENDING_BY_DEFAULT = {"title", "due_date", "position"}


def _lowercase(value: Any) -> Any:
    """Enumerated values are matched case-insensitively (`?order=DESC` works)."""
    if isinstance(value, str):
        return value.strip().lower()
    if isinstance(value, list):
        return [_lowercase(item) for item in value]
    return value


# `?due_before=2026-12-01T17:00:00+02:00` with the `+` left unencoded arrives as a space.
_SPACE_BEFORE_OFFSET = re.compile(r"(\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?) (\d{2}(?::?\d{2})?)$")


def _plus_sign_back(value: Any) -> Any:
    """Read `...T17:00:00 02:00` as `...T17:00:00+02:00`, so any offset works however it is encoded."""
    if isinstance(value, str):
        return _SPACE_BEFORE_OFFSET.sub(r"\1+\2", value.strip())
    return value


def _parent_filter(value: Any) -> Any:
    """`?parent_id=17` or `?parent_id=none` (any case)."""
    if isinstance(value, str):
        value = value.strip().lower()
        if value == "none":
            return value
        if not value.isdigit():
            raise PydanticCustomError("parent_filter", "must be a task id or none (top-level tasks only)")
        return int(value)
    return value


QueryDateTime = Annotated[UtcDateTime | None, BeforeValidator(_plus_sign_back)]


def _calendar_date(value: Any) -> Any:
    """Exactly `YYYY-MM-DD` (a date-time is not a day)."""
    if isinstance(value, str):
        try:
            day = dates.parse_all_day(value.strip())
        except ValueError:
            day = None
        if day is None:
            raise PydanticCustomError("calendar_date", "must be a calendar date such as 2026-12-01")
        return day
    return value


CalendarDate = Annotated[date | None, BeforeValidator(_calendar_date)]


class ListQuery(BaseModel):
    completed: bool | None = Field(None, description="`true`: only completed; `false`: only pending.", examples=[False])
    status: Annotated[Literal["all", "pending", "completed"] | None, BeforeValidator(_lowercase)] = Field(
        None, description="The same as `completed`, in the Hackathon spelling.", examples=["pending"]
    )
    q: str | None = Field(
        None, max_length=200, description="Case-insensitive substring of title or description.", examples=["milk"]
    )
    priority: Annotated[list[Priority] | None, BeforeValidator(_lowercase)] = Field(
        None, description="Repeatable: tasks with any of these priorities.", examples=[["high"]]
    )
    tag: list[Annotated[str, Field(min_length=1, max_length=50)]] | None = Field(
        None, description="Repeatable: tasks that carry all of these tags (case-insensitive).", examples=[["home"]]
    )
    due_before: QueryDateTime = Field(
        None, description="Due at or before (ISO 8601, inclusive; any offset, none means UTC).", examples=["2026-12-31T23:59:59Z"]
    )
    due_after: QueryDateTime = Field(
        None, description="Due at or after (ISO 8601, inclusive; any offset, none means UTC).", examples=["2026-12-01T00:00:00Z"]
    )
    overdue: bool | None = Field(None, description="`true`: not completed and due in the past.", examples=[True])
    list_id: int | None = Field(
        None, description="Only this list's tasks (a list that is not yours: 404 LIST_NOT_FOUND).", examples=[3]
    )
    parent_id: Annotated[int | Literal["none"] | None, BeforeValidator(_parent_filter)] = Field(
        None,
        description="Only the direct subtasks of this task (not yours: 404 TASK_NOT_FOUND); `none`: only top-level tasks.",
        examples=["none"],
    )
    due_on: CalendarDate = Field(
        None,
        description="Tasks due that calendar day: all-day tasks with that date, and timed tasks due during that "
        "day in your zone (/api/settings) or in `tz`.",
        examples=["2026-12-01"],
    )
    tz: TimeZoneName | None = Field(None, description="An IANA zone for `due_on` instead of your setting.", examples=["Europe/Berlin"])
    assignee: str | None = Field(
        None, min_length=1, max_length=255,
        description="`me`: tasks assigned to you; `none`: unassigned tasks; a user id: tasks assigned to that member.",
        examples=["me"],
    )
    sort: Annotated[SortField, BeforeValidator(_lowercase)] = Field(
        "created_at",
        description="Sort key; `created` is an alias of `created_at`. `position` is the manual order as a tree: "
        "lists in their order, each task followed by its subtasks (depth first), siblings by position then id. "
        "Filters keep the tree order and drop the tasks they do not match (a matching subtask stays where it "
        "would be, without its parent); pages cut that order.",
        examples=["due_date"],
    )
    order: Annotated[Literal["asc", "desc"] | None, BeforeValidator(_lowercase)] = Field(
        None,
        description="Default `desc` for timestamps and priority, `asc` for title and due_date. "
        "Tasks without a due date come last either way; ties are broken by id.",
        examples=["asc"],
    )
    limit: int = Field(100, ge=1, le=500, description="Page size, 1 to 500.", examples=[20])
    offset: int = Field(0, ge=0, le=10_000_000, description="How many matching tasks to skip.", examples=[40])

    @model_validator(mode="after")
    def status_agrees_with_completed(self) -> "ListQuery":
        from_status = {"pending": False, "completed": True}.get(self.status or "all")
        if from_status is not None and self.completed is not None and from_status != self.completed:
            raise PydanticCustomError("conflicting_filters", "completed and status ask for different tasks; send one")
        if self.sort == "position" and self.order == "desc":
            raise PydanticCustomError("tree_order", "sort=position is the manual order (a tree): it has no desc; leave order out")
        return self

    def to_filter(self, user_id: str) -> TaskFilter:
        completed = self.completed
        if completed is None and self.status in ("pending", "completed"):
            completed = self.status == "completed"
        return TaskFilter(
            user_id=user_id,
            completed=completed,
            text=self.q,
            priorities=self.priority,
            tags=self.tag,
            due_before=self.due_before,
            due_after=self.due_after,
            overdue=self.overdue,
            list_id=self.list_id,
            parent_id=self.parent_id if isinstance(self.parent_id, int) else None,
            top_level_only=self.parent_id == "none",
            due_on=self.due_on,
            zone_name=self.tz,
            assignee=user_id if self.assignee == "me" else (ASSIGNEE_NONE if self.assignee == "none" else self.assignee),
        )

    def ordering(self) -> tuple[str, bool]:
        """(sort key, ascending), with the defaults of the contract."""
        sort = SORT_ALIASES.get(self.sort, self.sort)
        return sort, (self.order or ("asc" if sort in ASCENDING_BY_DEFAULT else "desc")) == "asc"


class TaskListQuery(ListQuery):
    """The REST list's parameters: the listing's, plus how to page through it."""

    cursor: str | None = Field(
        None,
        max_length=2000,
        description='Start right after the page that gave this cursor: take it from the `rel="next"` link, '
        "with the same filters, sort and order (else 422). Not with `offset`, nor with `sort=position`.",
        examples=["WyIyMDI2LTExLTIxVDEwOjAwOjAwKzAwOjAwIiwxNywxMDBd.c2lnbmF0dXJlMTIz"],
    )
    count: bool = Field(
        True,
        description="`false`: no X-Total-Count (no count query). Send it when you do not show the total, "
        "or once you have it: on a large result the count costs more than the page.",
        examples=[False],
    )

    @field_validator("cursor")
    @classmethod
    def cursor_pages_alone(cls, cursor: str | None, info: ValidationInfo) -> str | None:
        """Fields are checked in order: `sort` and `offset` (ListQuery's) come before `cursor`."""
        if cursor is not None and info.data.get("sort") == "position":
            raise PydanticCustomError(
                "cursor_on_tree",
                "sort=position is the manual order as a tree, rendered whole (limit up to 500) or by offset: "
                "it has no cursor",
            )
        if cursor is not None and info.data.get("offset"):
            raise PydanticCustomError("cursor_with_offset", "cursor and offset both say where the page starts; send one")
        return cursor

    def after(self, belongs_to: bytes) -> keyset.Cursor | None:
        return None if self.cursor is None else keyset.decode(self.cursor, belongs_to, self.ordering()[0])


def link_header(request: Request, page: Page, limit: int, belongs_to: Callable[[], bytes]) -> str | None:
    """RFC 8288 `Link`: `next` (by cursor; by offset for the tree) and `prev` (by offset) where they
    exist; the URLs keep every filter of this request."""
    links = []
    if page.next_cursor is not None:
        cursor = keyset.encode(page.next_cursor, belongs_to())
        links.append(_link(request.url.remove_query_params("offset").include_query_params(cursor=cursor, limit=limit), "next"))
    elif page.has_more:
        links.append(_link(request.url.include_query_params(offset=page.offset + limit, limit=limit), "next"))
    if page.offset > 0:
        previous = request.url.remove_query_params("cursor").include_query_params(offset=max(page.offset - limit, 0), limit=limit)
        links.append(_link(previous, "prev"))
    return ", ".join(links) or None


def _link(url: URL, rel: str) -> str:
    return f'<{url.path}?{url.query}>; rel="{rel}"'
