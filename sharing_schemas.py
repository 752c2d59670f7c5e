"""What crosses the wire for sharing a list (contract §12): invitations, members, roles, transfer."""
import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, StrictStr, WithJsonSchema
from pydantic_core import PydanticCustomError

from schemas import StrictBody, UserId, text

InvitedRole = Literal["editor", "viewer"]
# Practical, not RFC 5322 in full: one @, something on each side, a dot in the domain, no spaces.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
EMAIL_LENGTH = 320


def _email(value: str) -> str:
    value = text(value).strip()
    if len(value) > EMAIL_LENGTH or not _EMAIL.fullmatch(value):
        raise PydanticCustomError("email", "must be an email address such as sam@example.com")
    return value


Email = Annotated[
    StrictStr,
    AfterValidator(_email),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": EMAIL_LENGTH}),
]


class InvitationCreate(StrictBody):
    email: Email = Field(examples=["sam@example.com"], description="Whom to invite: the address their sign-in token carries.")
    role: InvitedRole = Field(description="`editor`: may change the list's tasks; `viewer`: may only see them.")


class InvitationAccept(StrictBody):
    token: StrictStr | None = Field(
        None,
        max_length=200,
        description="The invitation's secret, from the emailed link. Needed only while your token says your email "
        "is not verified (`emailVerified: false`): having the link proves the address.",
    )


class InvitationPublic(BaseModel):
    id: int = Field(examples=[7])
    list_id: int = Field(examples=[3])
    list_name: str = Field(examples=["Groceries"])
    email: str = Field(examples=["sam@example.com"])
    role: InvitedRole
    status: Literal["pending"]
    invited_by: str = Field(examples=["user_2x9"], description="The user id of the owner who invited.")
    created_at: datetime
    expires_at: datetime = Field(description="7 days after it was made; then accepting it is a 410.")


class InvitationCreated(InvitationPublic):
    token: str = Field(
        description="The secret for the link your app emails to the invitee (e.g. /invite/{id}?token=...). Shown in "
        "this response only: no other response ever shows it."
    )


class MemberPublic(BaseModel):
    user_id: str = Field(examples=["user_5k2"])
    role: Literal["owner", "editor", "viewer"]
    email: str | None = Field(description="As their token carried it when they joined (null if it had none).")
    name: str | None = Field(description="As their token carried it when they joined (null if it had none).")
    joined_at: datetime


class MemberUpdate(StrictBody):
    role: InvitedRole = Field(description="`editor` or `viewer` (the owner's role changes only by a transfer).")


class Transfer(StrictBody):
    user_id: UserId = Field(examples=["user_5k2"], description="A member of the list, who becomes its owner.")
