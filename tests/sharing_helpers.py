"""Helpers for the sharing tests (contract §12 and the README's "Sharing a list"): people whose tokens
carry an email, lists shared by invitation, errors checked the way the contract states them, and a
user's change feed read whole and replayed into what the API shows.

Every helper takes a "user": anything with `user_id`, `email` and the `get/post/patch/put/delete`
of conftest.ApiUser (the in-process client) or of LiveUser below (a real server over HTTP).
"""
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from conftest import mint_token

LIST_FIELDS = {
    "id", "name", "color", "is_default", "position", "task_count", "completed_count", "created_at", "updated_at",
    "owner_id", "role", "member_count",
}
INVITATION_FIELDS = {
    "id", "list_id", "list_name", "email", "role", "status", "invited_by", "created_at", "expires_at", "token",
}
MEMBER_FIELDS = {"user_id", "role", "email", "name", "joined_at"}
EVENT_FIELDS = {"cursor", "type", "id", "data", "at", "actor"}

# A body id (`list_id`, `parent_id`) naming a list the caller may see but not write to (a viewer's):
# the design note's reading is a 422 naming the field, as for a list that is not theirs at all.
# One place, should the reading become a 403.
BODY_ID_REFUSED = (422, "VALIDATION_ERROR")


def email_for(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}@example.test"


@pytest.fixture
def person(new_user):
    """A factory of users whose tokens carry `email` (verified) and `name`, as Better Auth's do.
    Claims given override those (`email=None` drops it, `email_verified=False` marks it unverified)."""

    def make(prefix: str = "user", **claims: Any):
        claims = {"email": email_for(prefix), "name": prefix.title(), "email_verified": True, **claims}
        user = new_user(prefix, **claims)
        user.email = claims["email"]
        return user

    return make


class LiveUser:
    """A user of a real server (tests/live_server.py), with ApiUser's request methods."""

    def __init__(self, base_url: str, prefix: str = "user", **claims: Any):
        self.user_id = f"{prefix}_{uuid.uuid4().hex[:10]}"
        claims = {"email": email_for(prefix), "name": prefix.title(), "email_verified": True, **claims}
        self.email = claims["email"]
        self.token = mint_token(self.user_id, **claims)
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)

    def create_task(self, **fields: Any) -> dict[str, Any]:
        response = self.post("/api/tasks", json={"title": "a task", **fields})
        assert response.status_code == 201, response.text
        return response.json()

    def close(self) -> None:
        self.http.close()


# ----------------------------------------------------------------------------- errors


def expect_error(response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code, body
    return body


def expect_forbidden(response, needs: str) -> dict[str, Any]:
    """A 403 whose message says which role the action needs ("owner", or "editor" for task writes)."""
    body = expect_error(response, 403, "FORBIDDEN")
    assert needs in body["detail"].lower(), body["detail"]
    return body


def error_fields(response) -> set[str]:
    """The fields a 422 names (`reminders.0.at` counts as `reminders`)."""
    body = expect_error(response, 422, "VALIDATION_ERROR")
    return {error["field"].split(".")[0] for error in body.get("errors", [])}


# ----------------------------------------------------------------------------- lists and sharing


def create_list(owner, name: str = "Shared", **fields: Any) -> int:
    response = owner.post("/api/lists", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def default_list_id(user) -> int:
    response = user.get("/api/lists")
    assert response.status_code == 200, response.text
    return next(row["id"] for row in response.json() if row["is_default"])


def invite(owner, list_id: int, email: str | None, role: str = "editor"):
    return owner.post(f"/api/lists/{list_id}/invitations", json={"email": email, "role": role})


def invitation(owner, list_id: int, invitee, role: str = "editor") -> dict[str, Any]:
    """Invites `invitee` (a user, or an email) and returns the 201's invitation, token included."""
    email = invitee if isinstance(invitee, str) else invitee.email
    response = invite(owner, list_id, email, role)
    assert response.status_code == 201, response.text
    return response.json()


def accept(user, invitation_id: int, **body: Any):
    return user.post(f"/api/invitations/{invitation_id}/accept", json=body or None)


def decline(user, invitation_id: int):
    return user.post(f"/api/invitations/{invitation_id}/decline")


def join(owner, list_id: int, member, role: str = "editor") -> dict[str, Any]:
    """Invites `member` to the list and has them accept: the list as the new member sees it."""
    response = accept(member, invitation(owner, list_id, member, role)["id"])
    assert response.status_code == 200, response.text
    return response.json()


def share_list(owner, member, role: str = "editor", name: str = "Shared") -> int:
    """The owner makes a list and shares it with `member` in `role`; the list's id."""
    list_id = create_list(owner, name)
    join(owner, list_id, member, role)
    return list_id


def remove_member(by, list_id: int, user_id: str):
    return by.delete(f"/api/lists/{list_id}/members/{user_id}")


def set_role(owner, list_id: int, user_id: str, role: str):
    return owner.patch(f"/api/lists/{list_id}/members/{user_id}", json={"role": role})


def members(user, list_id: int) -> list[dict[str, Any]]:
    response = user.get(f"/api/lists/{list_id}/members")
    assert response.status_code == 200, response.text
    return response.json()


def read_list(user, list_id: int) -> dict[str, Any]:
    response = user.get(f"/api/lists/{list_id}")
    assert response.status_code == 200, response.text
    return response.json()


def list_ids(user) -> list[int]:
    response = user.get("/api/lists")
    assert response.status_code == 200, response.text
    return [row["id"] for row in response.json()]


# ----------------------------------------------------------------------------- tasks


def all_tasks(user, **params: Any) -> list[dict[str, Any]]:
    """Every task GET /api/tasks gives for these parameters, page after page, in its order."""
    tasks: list[dict[str, Any]] = []
    while True:
        response = user.get("/api/tasks", params={**params, "limit": 500, "offset": len(tasks)})
        assert response.status_code == 200, response.text
        tasks += response.json()
        if len(tasks) >= int(response.headers["X-Total-Count"]):
            return tasks


def task_ids(user, **params: Any) -> list[int]:
    return [task["id"] for task in all_tasks(user, **params)]


def tasks_by_id(user, **params: Any) -> dict[int, dict[str, Any]]:
    return {task["id"]: task for task in all_tasks(user, **params)}


# ----------------------------------------------------------------------------- the change feed


def cursor_now(user) -> str:
    """A client's start (§10): its lists fetched (the first fetch makes the default list), then the cursor."""
    assert user.get("/api/lists").status_code == 200
    response = user.get("/api/changes")
    assert response.status_code == 200, response.text
    return response.json()["cursor"]


def read_feed(user, since: str, page_size: int = 1000) -> list[dict[str, Any]]:
    """Every change after `since`, following `cursor` until `has_more` is false."""
    changes, _ = read_feed_to_end(user, since, page_size)
    return changes


def read_feed_to_end(user, since: str, page_size: int = 1000) -> tuple[list[dict[str, Any]], str]:
    changes: list[dict[str, Any]] = []
    cursor = since
    while True:
        response = user.get("/api/changes", params={"since": cursor, "limit": page_size})
        assert response.status_code == 200, response.text
        page = response.json()
        changes += page["changes"]
        cursor = page["cursor"]
        if not page["has_more"]:
            return changes, cursor


def events_of(changes: list[dict[str, Any]], *, list_id: int | None = None, task_ids: set[int] | None = None) -> list[tuple]:
    """(type, id) of the changes about one list (the list itself and its tasks) or about some tasks."""
    picked = []
    for change in changes:
        about_list = list_id is not None and (
            (change["type"].startswith("list.") and change["id"] == list_id)
            or (change["type"].startswith("task.") and change["data"] and change["data"]["list_id"] == list_id)
        )
        about_tasks = task_ids is not None and change["type"].startswith("task.") and change["id"] in task_ids
        if about_list or about_tasks:
            picked.append((change["type"], change["id"]))
    return picked


@dataclass
class Mirror:
    """What a sync client builds from the feed alone: lists and tasks by id. A `list.deleted` drops
    the list's tasks too (a member who stops seeing a list stops seeing its tasks)."""

    lists: dict[int, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)

    def apply(self, changes: list[dict[str, Any]]) -> "Mirror":
        for change in changes:
            kind, entity_id, data = change["type"], change["id"], change["data"]
            if kind in ("task.created", "task.updated"):
                self.tasks[entity_id] = data
            elif kind == "task.deleted":
                self.tasks.pop(entity_id, None)
            elif kind in ("list.created", "list.updated"):
                self.lists[entity_id] = data
            elif kind == "list.deleted":
                self.lists.pop(entity_id, None)
                self.tasks = {task_id: task for task_id, task in self.tasks.items() if task["list_id"] != entity_id}
        return self

    def tasks_of(self, list_id: int) -> dict[int, dict[str, Any]]:
        return {task_id: task for task_id, task in self.tasks.items() if task["list_id"] == list_id}


def replay(changes: list[dict[str, Any]]) -> Mirror:
    return Mirror().apply(changes)
