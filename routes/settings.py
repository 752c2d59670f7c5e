"""`/api/settings` (§9): the caller's time zone."""
from fastapi import APIRouter, Request, Response

import settings_store
from auth import CurrentUser
from db import database_of
from responses import FastJSONResponse
from routes.tasks import BODY_ERRORS
from schemas import UserSettingsPublic, UserSettingsUpdate

router = APIRouter()


@router.get("/settings", response_model=UserSettingsPublic, summary="Your settings")
async def read_settings(user: CurrentUser, request: Request) -> Response:
    db = database_of(request)
    return FastJSONResponse(await settings_store.get_settings(db, user.user_id))


@router.patch(
    "/settings",
    response_model=UserSettingsPublic,
    summary="Change your settings",
    description="`time_zone` is the zone of your tasks whose own `time_zone` is null: changing it moves the due "
    "moment (and reminders) of those that are all-day. Anything but an IANA zone name is a 422.",
    responses=BODY_ERRORS,
)
async def update_settings(body: UserSettingsUpdate, user: CurrentUser, request: Request) -> Response:
    db = database_of(request)
    return FastJSONResponse(await settings_store.set_time_zone(db, user.user_id, body.time_zone))
