"""Sharing a list (contract §12): invitations, members, roles, leaving, removal, transfer.

Who may do each of these is access.py's; this module changes the membership rows, and keeps every
feed true in the same transaction (events.py):

- a user who joins gets `list.created` (the list as they see it) and a `task.created` for each of its
  tasks, parents before subtasks; the other members get a `list.updated` (member_count);
- a user who leaves or is removed gets `list.deleted` and nothing of the list afterwards; their
  assignments in the list are cleared (a task.updated for each, to the remaining members);
- a change of role is a `list.updated` in that member's feed (a viewer loses their assignments too);
- a transfer is a `list.updated` in every member's feed (owner_id, and their role).

Every membership change runs in an access.membership_change transaction, so it never interleaves
with a write of the list (see access.py) nor with another change of members.

An invitation is addressed to an email. It is the caller's when their token carries that email; while
the token says the email is not verified, the secret `token` of the invitation (in the link the app
emails, shown once when the invitation is made) proves the address instead. Only its hash is kept.
"""
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

import access
import events
import lists
import reminders
import tree
from auth import Principal
from db import Connection, Database, Row
from errors import Conflict, Forbidden, InvitationExpired, InvitationNotFound, MemberNotFound, ValidationFailed
from models import MAX_ID, ListInvitation, UTCDateTime
from task_sql import public, SELECTED_COLUMNS, task_table

invitation_table: sa.Table = ListInvitation.__table__
member_table: sa.Table = access.member_table
INVITATION_DAYS = 7
MAX_MEMBERS = 50  # per list, pending invitations included

_i, _m, _t = invitation_table.c, member_table.c, task_table.c
INVITATION_COLUMNS = (_i.id, _i.list_id, lists.list_table.c.name.label("list_name"), _i.email, _i.role, _i.invited_by,
                      _i.created_at, _i.expires_at, _i.token_hash)
_WITH_LIST = invitation_table.join(lists.list_table, lists.list_table.c.id == _i.list_id)
FIND_INVITATION = sa.select(*INVITATION_COLUMNS).select_from(_WITH_LIST).where(_i.id == sa.bindparam("invitation_id"))
LIST_INVITATIONS = (
    sa.select(*INVITATION_COLUMNS).select_from(_WITH_LIST)
    .where(_i.list_id == sa.bindparam("list_id"), _i.expires_at > sa.bindparam("now"))
    .order_by(_i.created_at.desc(), _i.id.desc())
)
MY_INVITATIONS = (
    sa.select(*INVITATION_COLUMNS).select_from(_WITH_LIST)
    .where(_i.email_key == sa.bindparam("email_key"), _i.expires_at > sa.bindparam("now"))
    .order_by(_i.created_at.desc(), _i.id.desc())
)
INVITATION_FIELDS = ("list_id", "email", "email_key", "role", "invited_by", "token_hash", "created_at", "expires_at")
INSERT_INVITATION = sa.insert(invitation_table).values({name: sa.bindparam(name) for name in INVITATION_FIELDS}).returning(_i.id)
DELETE_INVITATION = sa.delete(invitation_table).where(_i.id == sa.bindparam("invitation_id")).returning(_i.id)
DELETE_LIST_INVITATION = sa.delete(invitation_table).where(
    _i.list_id == sa.bindparam("list_id"), _i.id == sa.bindparam("invitation_id")
)
DELETE_PENDING_FOR = sa.delete(invitation_table).where(_i.list_id == sa.bindparam("list_id"), _i.email_key == sa.bindparam("email_key"))
SEATS_TAKEN = sa.select(
    sa.select(sa.func.count()).where(_m.list_id == sa.bindparam("list_id")).scalar_subquery()
    + sa.select(sa.func.count()).where(_i.list_id == sa.bindparam("list_id"), _i.email_key != sa.bindparam("email_key")).scalar_subquery()
)
MEMBER_WITH_EMAIL = sa.select(_m.user_id).where(_m.list_id == sa.bindparam("list_id"), sa.func.lower(_m.email) == sa.bindparam("email_key"))
MEMBER_COLUMNS = (_m.user_id, _m.role, _m.email, _m.name, _m.joined_at)
OWNER_FIRST = sa.case((_m.role == "owner", 0), else_=1)
MEMBERS = sa.select(*MEMBER_COLUMNS).where(_m.list_id == sa.bindparam("list_id")).order_by(OWNER_FIRST, _m.joined_at, _m.user_id)
FIND_MEMBER = sa.select(*MEMBER_COLUMNS).where(_m.list_id == sa.bindparam("list_id"), _m.user_id == sa.bindparam("user_id"))
SET_ROLE = sa.update(member_table).where(_m.list_id == sa.bindparam("list_id"), _m.user_id == sa.bindparam("user_id")).values(
    role=sa.bindparam("role")
)
DELETE_MEMBER = sa.delete(member_table).where(_m.list_id == sa.bindparam("list_id"), _m.user_id == sa.bindparam("user_id"))
_JOIN_VALUES = {name: sa.bindparam(name) for name in lists.MEMBER_COLUMNS}
JOIN = {
    "postgresql": postgresql.insert(member_table).values(_JOIN_VALUES).on_conflict_do_nothing(index_elements=["list_id", "user_id"]),
    "sqlite": sqlite.insert(member_table).values(_JOIN_VALUES).on_conflict_do_nothing(index_elements=["list_id", "user_id"]),
}
_now = sa.bindparam("now", type_=UTCDateTime())
UNASSIGN = (
    sa.update(task_table)
    .where(_t.list_id == sa.bindparam("list_id"), _t.assignee_id == sa.bindparam("user_id"))
    .values(assignee_id=None, version=_t.version + 1, updated_at=sa.case((_t.updated_at < _now, _now), else_=_t.updated_at))
    .returning(*SELECTED_COLUMNS)
)
SET_OWNER = sa.update(lists.list_table).where(lists.list_table.c.id == sa.bindparam("list_id")).values(
    owner_id=sa.bindparam("owner_id"), version=lists.list_table.c.version + 1
)
_tops = (
    sa.select(_t.id, sa.literal_column("1", sa.Integer).label("depth"))
    .where(_t.list_id == sa.bindparam("list_id"), _t.parent_id.is_(None))
    .cte("snapshot", recursive=True)
)
_below = task_table.alias("snapshot_child")
_tree = _tops.union_all(sa.select(_below.c.id, _tops.c.depth + 1).where(_below.c.parent_id == _tops.c.id, _tops.c.depth < tree.MAX_DEPTH))
# A list's tasks, parents before subtasks: what a new member's feed is given to start from.
LIST_SNAPSHOT = (
    sa.select(*SELECTED_COLUMNS).select_from(task_table.join(_tree, _tree.c.id == _t.id)).order_by(_tree.c.depth, _t.id)
)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def public_invitation(row: Row, token: str | None = None) -> dict[str, Any]:
    shown = {name: row[name] for name in ("id", "list_id", "list_name", "email", "role", "invited_by", "created_at", "expires_at")}
    shown["status"] = "pending"
    if token is not None:
        shown["token"] = token
    return shown


def public_member(row: Row) -> dict[str, Any]:
    return {name: row[name] for name in ("user_id", "role", "email", "name", "joined_at")}


# ----------------------------------------------------------------------------- invitations (the owner's side)


async def invite(db: Database, caller: str, list_id: int, email: str, role: str) -> dict[str, Any]:
    """A new pending invitation (replacing a pending one to the same address), with its secret token."""
    email_key = email.lower()
    async with db.transaction(writer=caller) as connection:
        await access.require(connection, caller, list_id, access.INVITE)
        await connection.fetch_value(lists.LOCK_LIST, {"list_id": list_id})
        if (await lists.view_of(connection, caller, list_id))["is_default"]:
            raise Conflict("The default list cannot be shared. Create a list (POST /api/lists) and share that one.")
        if await connection.fetch_value(MEMBER_WITH_EMAIL, {"list_id": list_id, "email_key": email_key}) is not None:
            raise Conflict(f"{email} is already a member of this list.")
        seats = await connection.fetch_value(SEATS_TAKEN, {"list_id": list_id, "email_key": email_key})
        if seats >= MAX_MEMBERS:
            raise ValidationFailed(
                [{"field": "email", "message": f"the list has {seats} members and pending invitations; the most is {MAX_MEMBERS}"}],
                detail=f"A list has at most {MAX_MEMBERS} members, pending invitations included. Remove someone or revoke an invitation first.",
            )
        await connection.execute(DELETE_PENDING_FOR, {"list_id": list_id, "email_key": email_key})
        token = secrets.token_urlsafe(32)
        now = utc_now()
        values = {"list_id": list_id, "email": email, "email_key": email_key, "role": role, "invited_by": caller,
                  "token_hash": _hash(token), "created_at": now, "expires_at": now + timedelta(days=INVITATION_DAYS)}
        invitation_id = await connection.fetch_value(INSERT_INVITATION, values)
        row = await connection.fetch_one(FIND_INVITATION, {"invitation_id": invitation_id})
    return public_invitation(row, token)


async def list_invitations(db: Database, caller: str, list_id: int) -> list[dict[str, Any]]:
    async with db.connect() as connection:
        await access.require(connection, caller, list_id, access.INVITE)
        rows = await connection.fetch_all(LIST_INVITATIONS, {"list_id": list_id, "now": utc_now()})
    return [public_invitation(row) for row in rows]


async def revoke(db: Database, caller: str, list_id: int, invitation_id: int) -> None:
    async with db.transaction(writer=caller) as connection:
        await access.require(connection, caller, list_id, access.INVITE)
        if not 1 <= invitation_id <= MAX_ID or not await connection.execute(
            DELETE_LIST_INVITATION, {"list_id": list_id, "invitation_id": invitation_id}
        ):
            raise InvitationNotFound()


# ----------------------------------------------------------------------------- invitations (the invitee's side)


async def my_invitations(db: Database, principal: Principal) -> list[dict[str, Any]]:
    if principal.email is None:
        return []
    async with db.connect() as connection:
        rows = await connection.fetch_all(MY_INVITATIONS, {"email_key": principal.email.lower(), "now": utc_now()})
    return [public_invitation(row) for row in rows]


async def _addressed_to(connection: Connection, principal: Principal, invitation_id: int) -> Row:
    """The invitation, if it is the caller's (404 alike for anyone else's, or one that is gone)."""
    row = None
    if 1 <= invitation_id <= MAX_ID and principal.email is not None:
        row = await connection.fetch_one(FIND_INVITATION, {"invitation_id": invitation_id})
    if row is None or row["email"].lower() != principal.email.lower():
        raise InvitationNotFound()
    return row


async def accept(db: Database, principal: Principal, invitation_id: int, token: str | None) -> Row:
    """Join the list as the invitation says; the list as the new member now sees it."""
    caller = principal.user_id
    async with access.membership_change(db, caller) as connection:
        invitation = await _addressed_to(connection, principal, invitation_id)
        if invitation["expires_at"] <= utc_now():
            raise InvitationExpired()
        if not principal.email_verified and not (token and hmac.compare_digest(_hash(token), invitation["token_hash"])):
            raise Forbidden(
                "Your token says your email is not verified yet. Send the invitation's token from the emailed "
                'link in the body ({"token": "..."}), or verify your email and sign in again.'
            )
        list_id = invitation["list_id"]
        if not await connection.fetch_all(DELETE_INVITATION, {"invitation_id": invitation_id}):
            raise InvitationNotFound()  # accepted (or revoked) a moment ago
        position = await lists.position_at_end(connection, caller)
        member = lists.new_member(list_id, caller, invitation["role"], position, principal.email, principal.name)
        if await connection.execute(JOIN[connection.dialect], member):
            await _record_join(connection, caller, list_id)
        return await lists.view_of(connection, caller, list_id)


async def decline(db: Database, principal: Principal, invitation_id: int) -> None:
    async with db.transaction(writer=principal.user_id) as connection:
        await _addressed_to(connection, principal, invitation_id)
        await connection.fetch_all(DELETE_INVITATION, {"invitation_id": invitation_id})


async def _record_join(connection: Connection, user_id: str, list_id: int) -> None:
    """The new member's feed starts with the list and its tasks; the others' list changed (member_count)."""
    view = await lists.view_of(connection, user_id, list_id)
    snapshot = [events.to_user(user_id, events.LIST_CREATED, list_id, lists.public(view))]
    snapshot += [events.to_user(user_id, events.TASK_CREATED, row["id"], public(row))
                 for row in await connection.fetch_all(LIST_SNAPSHOT, {"list_id": list_id})]
    await events.record(connection, user_id, snapshot)
    others = (await access.members(connection, list_id)).keys() - {user_id}
    await lists.record_list_updated(connection, user_id, list_id, members=others)


# ----------------------------------------------------------------------------- members


async def members(db: Database, caller: str, list_id: int) -> list[dict[str, Any]]:
    async with db.connect() as connection:
        await access.require(connection, caller, list_id, access.SEE)
        return [public_member(row) for row in await connection.fetch_all(MEMBERS, {"list_id": list_id})]


async def _member(connection: Connection, list_id: int, user_id: str) -> Row:
    row = await connection.fetch_one(FIND_MEMBER, {"list_id": list_id, "user_id": user_id})
    if row is None:
        raise MemberNotFound()
    return row


async def change_role(db: Database, caller: str, list_id: int, user_id: str, role: str) -> dict[str, Any]:
    async with access.membership_change(db, caller) as connection:
        await access.require(connection, caller, list_id, access.MANAGE_MEMBERS)
        member = await _member(connection, list_id, user_id)
        if member["role"] == access.OWNER:
            raise Conflict("The owner's role cannot change. Transfer the list to another member first (POST .../transfer).")
        if member["role"] != role:
            await connection.execute(SET_ROLE, {"list_id": list_id, "user_id": user_id, "role": role})
            if role not in access.ASSIGNABLE:
                await _unassign(connection, caller, list_id, user_id)
            await lists.record_list_updated(connection, caller, list_id, members={user_id})
        return public_member(await _member(connection, list_id, user_id))


async def remove(db: Database, caller: str, list_id: int, user_id: str) -> None:
    """A member leaves (removing themself), or the owner removes them."""
    async with access.membership_change(db, caller) as connection:
        if user_id == caller:
            role = await access.require(connection, caller, list_id, access.SEE)
            if role == access.OWNER:
                raise Conflict("The owner cannot leave the list. Transfer it to another member first, or delete it.")
        else:
            await access.require(connection, caller, list_id, access.MANAGE_MEMBERS)
        await _member(connection, list_id, user_id)
        await connection.execute(DELETE_MEMBER, {"list_id": list_id, "user_id": user_id})
        await _unassign(connection, caller, list_id, user_id)
        await events.record(connection, caller, [events.to_user(user_id, events.LIST_DELETED, list_id, None)])
        await lists.record_list_updated(connection, caller, list_id)


async def _unassign(connection: Connection, actor: str, list_id: int, user_id: str) -> None:
    """Clear the user's assignments in the list (a task.updated each, for its members)."""
    cleared = await connection.fetch_all(UNASSIGN, {"list_id": list_id, "user_id": user_id, "now": utc_now()})
    if cleared:
        await reminders.readdress_list(connection, list_id)
        await events.record(connection, actor, [events.to_members(list_id, events.TASK_UPDATED, row["id"], public(row)) for row in cleared])


async def transfer(db: Database, caller: str, list_id: int, new_owner: str) -> Row:
    """The member `new_owner` becomes the owner; the caller (the owner) an editor. The list as the
    caller now sees it."""
    async with access.membership_change(db, caller) as connection:
        await access.require(connection, caller, list_id, access.TRANSFER)
        member = await connection.fetch_one(FIND_MEMBER, {"list_id": list_id, "user_id": new_owner})
        if member is None or new_owner == caller:
            message = "you already own this list" if new_owner == caller else f"{new_owner!r} is not a member of this list"
            raise ValidationFailed([{"field": "user_id", "message": message + "; name another member"}])
        if await connection.fetch_value(lists.OWNED_COUNT, {"caller": new_owner}) >= lists.MAX_LISTS:
            raise ValidationFailed([{"field": "user_id", "message": f"they already own {lists.MAX_LISTS} lists, the most allowed"}])
        await connection.execute(SET_OWNER, {"list_id": list_id, "owner_id": new_owner})
        await connection.execute(SET_ROLE, {"list_id": list_id, "user_id": new_owner, "role": access.OWNER})
        await connection.execute(SET_ROLE, {"list_id": list_id, "user_id": caller, "role": access.EDITOR})
        return await lists.record_list_updated(connection, caller, list_id)
