"""Invitations (contract §12): inviting by email, the secret token, expiry, replacing, limits, the
invitee's inbox (GET /api/invitations), accepting (verified or with the emailed token), declining,
revoking, and two accepts at once. On SQLite and PostgreSQL."""
import threading
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import sqlalchemy as sa

from conftest import TEST_SECRET
from live_server import LiveServer, run_in_threads
from models import UTCDateTime
from sharing_helpers import (
    INVITATION_FIELDS,
    LiveUser,
    accept,
    create_list,
    cursor_now,
    decline,
    default_list_id,
    email_for,
    error_fields,
    expect_error,
    invitation,
    invite,
    join,
    members,
    person,  # noqa: F401 (fixture)
    read_feed,
    read_list,
    remove_member,
)

SEVEN_DAYS = timedelta(days=7)


def moment(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def expire(sql_engine, invitation_id: int) -> None:
    """Ages the invitation past its `expires_at` (a minute ago), stored as the service stores times."""
    statement = sa.text("UPDATE list_invitation SET expires_at = :past WHERE id = :id").bindparams(
        sa.bindparam("past", type_=UTCDateTime())
    )
    with sql_engine.begin() as connection:
        connection.execute(statement, {"past": datetime.now(timezone.utc) - timedelta(minutes=1), "id": invitation_id})


def pending_ids(owner, list_id: int) -> list[int]:
    response = owner.get(f"/api/lists/{list_id}/invitations")
    assert response.status_code == 200, response.text
    return [row["id"] for row in response.json()]


def inbox(user) -> list[dict]:
    response = user.get("/api/invitations")
    assert response.status_code == 200, response.text
    return response.json()


# ----------------------------------------------------------------------------- inviting


@pytest.mark.parametrize("prefix", ["/api", "/api/{user_id}"])
def test_invite_answers_201_with_every_field(person, prefix):
    owner, invitee = person("owner"), person("invitee")
    list_id = create_list(owner, "Groceries")
    response = owner.post(
        prefix.format(user_id=owner.user_id) + f"/lists/{list_id}/invitations", json={"email": invitee.email, "role": "viewer"}
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == INVITATION_FIELDS
    assert created["list_id"] == list_id and created["list_name"] == "Groceries"
    assert created["email"] == invitee.email and created["role"] == "viewer" and created["status"] == "pending"
    assert created["invited_by"] == owner.user_id
    assert isinstance(created["id"], int) and isinstance(created["token"], str) and len(created["token"]) >= 16


def test_invite_expires_seven_days_after_it_was_made(person):
    owner, invitee = person("owner"), person("invitee")
    created = invitation(owner, create_list(owner), invitee)
    assert abs(moment(created["expires_at"]) - moment(created["created_at"]) - SEVEN_DAYS) < timedelta(seconds=1)
    assert abs(moment(created["created_at"]) - datetime.now(timezone.utc)) < timedelta(minutes=1)


def test_invite_token_is_in_the_invite_response_only(person):
    owner, invitee = person("owner"), person("invitee")
    list_id = create_list(owner)
    owner_cursor = cursor_now(owner)
    created = invitation(owner, list_id, invitee)
    token = created["token"]
    listed = owner.get(f"/api/lists/{list_id}/invitations")
    assert listed.status_code == 200 and [row["id"] for row in listed.json()] == [created["id"]]
    assert "token" not in listed.json()[0] and token not in listed.text
    assert listed.json()[0] == {key: value for key, value in created.items() if key != "token"}
    mine = invitee.get("/api/invitations")
    assert [row["id"] for row in mine.json()] == [created["id"]] and token not in mine.text
    assert "token" not in mine.json()[0]
    assert token not in str(read_feed(owner, owner_cursor))
    accepted = accept(invitee, created["id"])
    assert accepted.status_code == 200 and token not in accepted.text
    assert token not in owner.get(f"/api/lists/{list_id}/members").text


def test_invite_again_replaces_the_pending_invitation(person):
    owner, invitee = person("owner"), person("invitee")
    list_id = create_list(owner)
    first = invitation(owner, list_id, invitee, "editor")
    second = invitation(owner, list_id, invitee, "viewer")
    assert second["id"] != first["id"] and second["token"] != first["token"]
    assert pending_ids(owner, list_id) == [second["id"]]
    assert [row["id"] for row in inbox(invitee)] == [second["id"]]
    expect_error(accept(invitee, first["id"]), 404, "INVITATION_NOT_FOUND")  # the old one was revoked
    joined = accept(invitee, second["id"])
    assert joined.status_code == 200 and joined.json()["role"] == "viewer"


@pytest.mark.parametrize("whose", ["member", "owner"])
def test_invite_a_members_email_is_409(person, whose):
    owner, member = person("owner"), person("member")
    list_id = create_list(owner)
    join(owner, list_id, member, "viewer")
    email = member.email if whose == "member" else owner.email
    expect_error(invite(owner, list_id, email.upper(), "editor"), 409, "CONFLICT")
    assert pending_ids(owner, list_id) == []


def test_invite_on_the_default_list_is_409(person):
    owner, invitee = person("owner"), person("invitee")
    inbox_id = default_list_id(owner)
    expect_error(invite(owner, inbox_id, invitee.email), 409, "CONFLICT")
    assert inbox(invitee) == []
    assert read_list(owner, inbox_id)["member_count"] == 1


@pytest.mark.parametrize(
    "body, field",
    [
        ({"email": "someone@example.test", "role": "owner"}, "role"),
        ({"email": "someone@example.test", "role": "admin"}, "role"),
        ({"email": "someone@example.test", "role": ""}, "role"),
        ({"email": "someone@example.test", "role": None}, "role"),
        ({"email": "someone@example.test"}, "role"),
        ({"email": "not-an-email", "role": "editor"}, "email"),
        ({"email": "", "role": "editor"}, "email"),
        ({"email": "a@", "role": "editor"}, "email"),
        ({"email": "@example.test", "role": "editor"}, "email"),
        ({"email": 17, "role": "editor"}, "email"),
        ({"email": None, "role": "editor"}, "email"),
        ({"role": "editor"}, "email"),
        ({"email": "a\x00b@example.test", "role": "editor"}, "email"),
        ({"email": "someone@example.test", "role": "editor", "token": "mine"}, "token"),
    ],
)
def test_invite_with_a_bad_body_is_422_naming_the_field(person, body, field):
    owner = person("owner")
    list_id = create_list(owner)
    assert field in error_fields(owner.post(f"/api/lists/{list_id}/invitations", json=body))
    assert pending_ids(owner, list_id) == []


def test_invite_past_50_members_with_pending_invitations_counted_is_422(person):
    owner, member = person("owner"), person("member")
    list_id = create_list(owner)
    join(owner, list_id, member, "viewer")
    invited = [invitation(owner, list_id, email_for(f"guest{n}"), "viewer") for n in range(48)]  # 2 members + 48 = 50
    refused = expect_error(invite(owner, list_id, email_for("one-too-many"), "viewer"), 422, "VALIDATION_ERROR")
    assert "50" in refused["detail"]
    assert len(pending_ids(owner, list_id)) == 48 and read_list(owner, list_id)["member_count"] == 2
    # Replacing a pending invitation adds nobody; revoking one makes room for another.
    assert invite(owner, list_id, invited[0]["email"], "editor").status_code == 201
    assert owner.delete(f"/api/lists/{list_id}/invitations/{invited[1]['id']}").status_code == 204
    assert invite(owner, list_id, email_for("now-there-is-room"), "viewer").status_code == 201


# ----------------------------------------------------------------------------- the invitee's inbox


def test_invitations_lists_those_addressed_to_my_email_newest_first(person, sql_engine):
    first_owner, second_owner, invitee, other = person("first"), person("second"), person("invitee"), person("other")
    older = invitation(first_owner, create_list(first_owner, "Older"), invitee)
    newer = invitation(second_owner, create_list(second_owner, "Newer"), invitee.email.upper(), "viewer")
    invitation(first_owner, create_list(first_owner, "Not mine"), other)
    expired = invitation(second_owner, create_list(second_owner, "Expired"), invitee)
    expire(sql_engine, expired["id"])
    listed = inbox(invitee)
    assert [row["id"] for row in listed] == [newer["id"], older["id"]]
    assert set(listed[0]) == INVITATION_FIELDS - {"token"}
    assert listed[0]["list_name"] == "Newer" and listed[0]["invited_by"] == second_owner.user_id


def test_invitations_for_a_token_without_email_is_an_empty_list(person, new_user):
    owner = person("owner")
    invitation(owner, create_list(owner), email_for("someone"))
    nobody = new_user("no_email")
    assert inbox(nobody) == []


def test_invitations_in_the_user_path_spelling_checks_the_user(person):
    owner, invitee = person("owner"), person("invitee")
    created = invitation(owner, create_list(owner), invitee)
    assert [row["id"] for row in invitee.get(f"/api/{invitee.user_id}/invitations").json()] == [created["id"]]
    expect_error(owner.get(f"/api/{invitee.user_id}/invitations"), 403, "FORBIDDEN")


# ----------------------------------------------------------------------------- accepting


@pytest.mark.parametrize("prefix", ["/api", "/api/{user_id}"])
def test_accept_answers_200_with_the_list_as_the_new_member_sees_it(person, prefix):
    owner, invitee = person("owner"), person("invitee")
    list_id = create_list(owner, "Groceries", color="#16a34a")
    owner.create_task(list_id=list_id, title="milk")
    created = invitation(owner, list_id, invitee, "viewer")
    response = invitee.post(prefix.format(user_id=invitee.user_id) + f"/invitations/{created['id']}/accept")
    assert response.status_code == 200, response.text
    joined = response.json()
    assert joined["id"] == list_id and joined["name"] == "Groceries" and joined["color"] == "#16a34a"
    assert joined["role"] == "viewer" and joined["owner_id"] == owner.user_id and joined["member_count"] == 2
    assert joined["is_default"] is False and joined["task_count"] == 1
    assert read_list(invitee, list_id) == joined
    assert pending_ids(owner, list_id) == [] and inbox(invitee) == []


def test_accept_compares_emails_case_insensitively(person):
    owner = person("owner")
    invitee = person("invitee", email=email_for("Mixed.Case").upper())
    created = invitation(owner, create_list(owner), invitee.email.lower())
    assert accept(invitee, created["id"]).status_code == 200


@pytest.mark.parametrize("case", ["another_email", "no_email", "revoked", "declined", "accepted", "unknown", "replaced"])
def test_accept_of_an_invitation_that_is_not_mine_or_no_longer_pending_is_404_alike(person, new_user, case):
    owner, invitee = person("owner"), person("invitee")
    list_id = create_list(owner)
    created = invitation(owner, list_id, invitee)
    caller, invitation_id = invitee, created["id"]
    if case == "another_email":
        caller = person("someone_else")
    elif case == "no_email":
        caller = new_user("no_email")
    elif case == "revoked":
        assert owner.delete(f"/api/lists/{list_id}/invitations/{invitation_id}").status_code == 204
    elif case == "declined":
        assert decline(invitee, invitation_id).status_code == 204
    elif case == "accepted":
        assert accept(invitee, invitation_id).status_code == 200
    elif case == "unknown":
        invitation_id = created["id"] + 1_000_000
    elif case == "replaced":
        invitation(owner, list_id, invitee, "viewer")
    body = expect_error(accept(caller, invitation_id, token=created["token"]), 404, "INVITATION_NOT_FOUND")
    unknown = expect_error(accept(caller, 2_000_000_000), 404, "INVITATION_NOT_FOUND")
    assert body["detail"] == unknown["detail"]  # nothing tells these cases apart
    assert [row["user_id"] for row in members(owner, list_id)].count(caller.user_id) == (1 if case == "accepted" else 0)


@pytest.mark.parametrize("claim", ["email_verified", "emailVerified"])
def test_accept_with_an_unverified_email_needs_the_invitations_token(person, claim):
    owner = person("owner")
    invitee = person("invitee", **{"email_verified": None, claim: False})
    list_id = create_list(owner)
    created = invitation(owner, list_id, invitee)
    expect_error(accept(invitee, created["id"]), 403, "FORBIDDEN")
    expect_error(accept(invitee, created["id"], token="not-" + created["token"]), 403, "FORBIDDEN")
    expect_error(accept(invitee, created["id"], token=""), 403, "FORBIDDEN")
    assert [row["user_id"] for row in members(owner, list_id)] == [owner.user_id]
    assert pending_ids(owner, list_id) == [created["id"]]  # still there to accept
    joined = accept(invitee, created["id"], token=created["token"])
    assert joined.status_code == 200, joined.text
    assert joined.json()["role"] == "editor"


def test_accept_with_the_token_of_another_invitation_is_403(person):
    owner = person("owner")
    invitee = person("invitee", email_verified=False)
    list_id = create_list(owner)
    mine = invitation(owner, list_id, invitee)
    someone_elses = invitation(owner, create_list(owner, "Other"), email_for("someone"))
    expect_error(accept(invitee, mine["id"], token=someone_elses["token"]), 403, "FORBIDDEN")


def test_accept_with_a_verified_email_needs_no_token_and_ignores_it(person):
    owner, invitee = person("owner"), person("invitee", email_verified=True)
    list_id = create_list(owner)
    created = invitation(owner, list_id, invitee)
    assert accept(invitee, created["id"], token=created["token"]).status_code == 200


def test_accept_with_a_token_without_any_verified_claim_counts_as_verified(person):
    """The design note's reading: HS256 dev tokens carry no `email_verified` claim at all."""
    owner, invitee = person("owner"), person("invitee", email_verified=None)
    created = invitation(owner, create_list(owner), invitee)
    assert accept(invitee, created["id"]).status_code == 200


def test_accept_of_an_expired_invitation_is_410(person, sql_engine):
    owner, invitee = person("owner"), person("invitee")
    list_id = create_list(owner)
    created = invitation(owner, list_id, invitee)
    expire(sql_engine, created["id"])
    expect_error(accept(invitee, created["id"]), 410, "INVITATION_EXPIRED")
    assert [row["user_id"] for row in members(owner, list_id)] == [owner.user_id]
    expect_error(invitee.get(f"/api/lists/{list_id}"), 404, "LIST_NOT_FOUND")


def test_accept_of_an_expired_invitation_by_someone_else_is_404(person, sql_engine):
    owner, invitee = person("owner"), person("invitee")
    created = invitation(owner, create_list(owner), invitee)
    expire(sql_engine, created["id"])
    expect_error(accept(person("someone_else"), created["id"]), 404, "INVITATION_NOT_FOUND")


def test_accept_after_being_removed_needs_a_new_invitation(person):
    owner, member = person("owner"), person("member")
    list_id = create_list(owner)
    created = invitation(owner, list_id, member)
    assert accept(member, created["id"]).status_code == 200
    assert remove_member(owner, list_id, member.user_id).status_code == 204
    expect_error(accept(member, created["id"]), 404, "INVITATION_NOT_FOUND")
    assert join(owner, list_id, member, "viewer")["role"] == "viewer"


# ----------------------------------------------------------------------------- declining, revoking


def test_decline_answers_204_and_the_invitation_is_gone(person):
    owner, invitee = person("owner"), person("invitee")
    list_id = create_list(owner)
    created = invitation(owner, list_id, invitee)
    response = decline(invitee, created["id"])
    assert response.status_code == 204 and response.content == b""
    assert pending_ids(owner, list_id) == [] and inbox(invitee) == []
    expect_error(decline(invitee, created["id"]), 404, "INVITATION_NOT_FOUND")
    expect_error(accept(invitee, created["id"]), 404, "INVITATION_NOT_FOUND")


def test_decline_of_someone_elses_invitation_is_404_and_changes_nothing(person):
    owner, invitee = person("owner"), person("invitee")
    list_id = create_list(owner)
    created = invitation(owner, list_id, invitee)
    expect_error(decline(person("someone_else"), created["id"]), 404, "INVITATION_NOT_FOUND")
    expect_error(decline(owner, created["id"]), 404, "INVITATION_NOT_FOUND")
    assert pending_ids(owner, list_id) == [created["id"]]


def test_revoke_answers_204_and_the_invitation_cannot_be_accepted(person):
    owner, invitee = person("owner"), person("invitee")
    list_id = create_list(owner)
    created = invitation(owner, list_id, invitee)
    response = owner.delete(f"/api/lists/{list_id}/invitations/{created['id']}")
    assert response.status_code == 204 and response.content == b""
    assert pending_ids(owner, list_id) == [] and inbox(invitee) == []
    expect_error(accept(invitee, created["id"]), 404, "INVITATION_NOT_FOUND")
    expect_error(owner.delete(f"/api/lists/{list_id}/invitations/{created['id']}"), 404, "INVITATION_NOT_FOUND")


def test_revoke_through_another_list_of_mine_is_404(person):
    owner, invitee = person("owner"), person("invitee")
    list_id, other_list = create_list(owner), create_list(owner, "Other")
    created = invitation(owner, list_id, invitee)
    expect_error(owner.delete(f"/api/lists/{other_list}/invitations/{created['id']}"), 404, "INVITATION_NOT_FOUND")
    assert pending_ids(owner, list_id) == [created["id"]]


# ----------------------------------------------------------------------------- two accepts at once

ACCEPT_ROUNDS = 25
ACCEPTS_AT_ONCE = 3


@pytest.fixture(scope="module")
def live(backend, scratch_database):
    with LiveServer(scratch_database(backend), secret=TEST_SECRET, workers=2, env={"LOG_LEVEL": "WARNING"}) as server:
        yield server


@pytest.mark.slow
def test_accept_twice_at_once_makes_one_membership(live):
    owner = LiveUser(live.url, "owner")
    invitee = LiveUser(live.url, "invitee")
    try:
        for _ in range(ACCEPT_ROUNDS):
            list_id = create_list(owner, f"race {uuid.uuid4().hex[:6]}")
            created = invitation(owner, list_id, invitee)
            cursor = cursor_now(invitee)
            statuses = accept_together(live.url, invitee.token, created["id"])
            assert sorted(statuses) == [200] + [404] * (ACCEPTS_AT_ONCE - 1), statuses
            assert [row["user_id"] for row in members(owner, list_id)] == [owner.user_id, invitee.user_id]
            joined = [c for c in read_feed(invitee, cursor) if c["type"] == "list.created" and c["id"] == list_id]
            assert len(joined) == 1  # one join, one snapshot
            assert read_list(owner, list_id)["member_count"] == 2
    finally:
        owner.close()
        invitee.close()


def accept_together(base_url: str, token: str, invitation_id: int) -> list[int]:
    """ACCEPTS_AT_ONCE connections, opened first, send the same accept when a barrier releases them."""
    barrier = threading.Barrier(ACCEPTS_AT_ONCE)
    statuses: list[int | BaseException] = [0] * ACCEPTS_AT_ONCE

    def send(index: int) -> None:
        try:
            with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
                http.get("/health")
                barrier.wait(timeout=30)
                statuses[index] = http.post(f"/api/invitations/{invitation_id}/accept").status_code
        except BaseException as exc:  # reported below
            barrier.abort()
            statuses[index] = exc

    run_in_threads(ACCEPTS_AT_ONCE, send)
    assert not [status for status in statuses if isinstance(status, BaseException)], statuses
    return statuses  # type: ignore[return-value]
