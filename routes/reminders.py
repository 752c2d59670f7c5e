"""`GET /api/reminders` (§9): what a browser tab schedules its notifications from."""
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

import dates
import reminders
from auth import CurrentUser
from db import database_of
from responses import FastJSONResponse
from routes.listing import QueryDateTime
from schemas import ReminderDue

router = APIRouter()
DEFAULT_HORIZON = timedelta(hours=24)


@router.get(
    "/reminders",
    response_model=list[ReminderDue],
    summary="Your reminders due soon",
    description="The reminders of your open tasks with `fire_at` from 24 hours ago up to `until`, soonest first "
    f"(at most {reminders.LIST_LIMIT}). Fired ones are listed too: the server fires each once as a `reminder.due` "
    "event; a browser tab shows a notification for each one it has not shown yet.",
)
async def list_reminders(
    user: CurrentUser,
    request: Request,
    until: Annotated[
        QueryDateTime, Query(description="ISO 8601 (no offset: UTC); default 24 hours from now.", examples=["2026-12-01T18:00:00Z"])
    ] = None,
) -> Response:
    db = database_of(request)
    now = dates.utc_now()
    return FastJSONResponse(await reminders.upcoming(db, user.user_id, now, until or now + DEFAULT_HORIZON))
