"""The sharing routes (contract §12): invitations, members, transfer. Mounted twice by main.py, like the
list routes: at `/api` and at `/api/{user_id}`. Who may do what is access.py's (sharing.py asks it)."""
from typing import Annotated

from fastapi import APIRouter, Body, Path, Request, Response

import sharing
from auth import CurrentUser
from db import database_of
from responses import FastJSONResponse
from routes.lists import ETAG_HEADER, ListId, list_response
from routes.tasks import BODY_ERRORS, _error
from schemas import ListPublic
from sharing_schemas import (
    InvitationAccept,
    InvitationCreate,
    InvitationCreated,
    InvitationPublic,
    MemberPublic,
    MemberUpdate,
    Transfer,
)

router = APIRouter()

InvitationId = Annotated[int, Path(description="The invitation's id.", examples=[7])]
MemberId = Annotated[str, Path(description="The member's user id.", examples=["user_5k2"])]
LIST_NOT_FOUND = {404: _error("No such list among yours (LIST_NOT_FOUND): one you are not a member of looks the same.")}
NOT_OWNER = {403: _error("You are a member, but this needs the owner role (FORBIDDEN); the message says so.")}
OWNERS_ONLY = {**LIST_NOT_FOUND, **NOT_OWNER}
INVITATION_NOT_FOUND = {
    404: _error("No such invitation for you (INVITATION_NOT_FOUND): addressed to another email, revoked, declined, "
                "accepted or nonexistent look the same."),
}
REVOKE_NOT_FOUND = {
    404: _error("No such list among yours (LIST_NOT_FOUND), or no such pending invitation to it (INVITATION_NOT_FOUND)."),
}
MEMBER_NOT_FOUND = {404: _error("No such list among yours (LIST_NOT_FOUND), or that user is not a member of it (MEMBER_NOT_FOUND).")}


@router.post(
    "/lists/{list_id}/invitations",
    status_code=201,
    response_model=InvitationCreated,
    summary="Invite someone to a list by email (owner)",
    description="The invitation lasts 7 days. Inviting an address that has a pending invitation to this list "
    "replaces it (the old one is revoked). `token` is the secret for the link you email: in this response only.",
    responses={
        **OWNERS_ONLY,
        **BODY_ERRORS,
        409: _error("The default list cannot be shared, or that address is already a member (CONFLICT)."),
    },
)
async def invite(list_id: ListId, user: CurrentUser, request: Request, body: InvitationCreate) -> Response:
    invitation = await sharing.invite(database_of(request), user.user_id, list_id, body.email, body.role)
    return FastJSONResponse(invitation, status_code=201)


@router.get(
    "/lists/{list_id}/invitations",
    response_model=list[InvitationPublic],
    summary="A list's pending invitations (owner)",
    responses=OWNERS_ONLY,
)
async def list_invitations(list_id: ListId, user: CurrentUser, request: Request) -> Response:
    return FastJSONResponse(await sharing.list_invitations(database_of(request), user.user_id, list_id))


@router.delete(
    "/lists/{list_id}/invitations/{invitation_id}",
    status_code=204,
    response_class=Response,
    summary="Revoke an invitation (owner)",
    responses={**NOT_OWNER, **REVOKE_NOT_FOUND},
)
async def revoke_invitation(list_id: ListId, invitation_id: InvitationId, user: CurrentUser, request: Request) -> Response:
    await sharing.revoke(database_of(request), user.user_id, list_id, invitation_id)
    return Response(status_code=204)


@router.get(
    "/invitations",
    response_model=list[InvitationPublic],
    summary="Invitations addressed to you",
    description="The pending, unexpired invitations addressed to your token's `email`, newest first (`[]` for a token "
    "without an email).",
)
async def my_invitations(user: CurrentUser, request: Request) -> Response:
    return FastJSONResponse(await sharing.my_invitations(database_of(request), user))


@router.post(
    "/invitations/{invitation_id}/accept",
    response_model=ListPublic,
    summary="Accept an invitation: join the list",
    description="The invitation must be addressed to your token's `email` (case-insensitive). While your token says "
    'the email is not verified, send `{"token": "..."}` from the emailed link. Answers the list as you now see it.',
    responses={
        200: {"headers": ETAG_HEADER},
        403: _error("Your token says your email is not verified, and the body has no valid invitation token (FORBIDDEN)."),
        **INVITATION_NOT_FOUND,
        410: _error("The invitation has expired (INVITATION_EXPIRED): ask for a new one."),
        **BODY_ERRORS,
    },
)
async def accept_invitation(
    invitation_id: InvitationId, user: CurrentUser, request: Request,
    body: Annotated[InvitationAccept | None, Body()] = None,
) -> Response:
    row = await sharing.accept(database_of(request), user, invitation_id, body.token if body else None)
    return list_response(row)


@router.post(
    "/invitations/{invitation_id}/decline",
    status_code=204,
    response_class=Response,
    summary="Decline an invitation",
    responses=INVITATION_NOT_FOUND,
)
async def decline_invitation(invitation_id: InvitationId, user: CurrentUser, request: Request) -> Response:
    await sharing.decline(database_of(request), user, invitation_id)
    return Response(status_code=204)


@router.get(
    "/lists/{list_id}/members",
    response_model=list[MemberPublic],
    summary="A list's members, owner first (any member)",
    responses=LIST_NOT_FOUND,
)
async def list_members(list_id: ListId, user: CurrentUser, request: Request) -> Response:
    return FastJSONResponse(await sharing.members(database_of(request), user.user_id, list_id))


@router.patch(
    "/lists/{list_id}/members/{member_id}",
    response_model=MemberPublic,
    summary="Change a member's role (owner)",
    description="A member who becomes a viewer loses their assignments in the list.",
    responses={**NOT_OWNER, **MEMBER_NOT_FOUND, **BODY_ERRORS, 409: _error("The owner's role changes only by a transfer (CONFLICT).")},
)
async def change_role(list_id: ListId, member_id: MemberId, user: CurrentUser, request: Request, body: MemberUpdate) -> Response:
    return FastJSONResponse(await sharing.change_role(database_of(request), user.user_id, list_id, member_id, body.role))


@router.delete(
    "/lists/{list_id}/members/{member_id}",
    status_code=204,
    response_class=Response,
    summary="Remove a member (owner), or leave (your own user id)",
    description="The member's assignments in the list are cleared; their access ends at once (their next request is "
    "a 404, their open event streams get `list.deleted` and nothing more of the list).",
    responses={
        **NOT_OWNER, **MEMBER_NOT_FOUND,
        409: _error("The owner cannot leave (CONFLICT): transfer the list or delete it first."),
    },
)
async def remove_member(list_id: ListId, member_id: MemberId, user: CurrentUser, request: Request) -> Response:
    await sharing.remove(database_of(request), user.user_id, list_id, member_id)
    return Response(status_code=204)


@router.post(
    "/lists/{list_id}/transfer",
    response_model=ListPublic,
    summary="Transfer a list to another member (owner)",
    description="The member becomes the owner; you become an editor. Answers the list as you now see it.",
    responses={200: {"headers": ETAG_HEADER}, **OWNERS_ONLY, **BODY_ERRORS},
)
async def transfer_list(list_id: ListId, user: CurrentUser, request: Request, body: Transfer) -> Response:
    return list_response(await sharing.transfer(database_of(request), user.user_id, list_id, body.user_id))
