"""The permission matrix (contract §12): every route that names a list or a task, for each of the
owner, an editor, a viewer, a removed member, a pending invitee and a stranger. Allowed: the route's
success status. A member whose role does not allow it: 403 FORBIDDEN naming the role needed.
Anyone else: 404 LIST_NOT_FOUND / TASK_NOT_FOUND, as if the list did not exist. A body id the caller
may not use: 422 naming the field. Every refusal changes nothing (read back as the owner, and the
owner's feed records nothing). On SQLite and PostgreSQL."""
from dataclasses import dataclass
from typing import Any

import pytest

from sharing_helpers import (
    BODY_ID_REFUSED,
    all_tasks,
    create_list,
    cursor_now,
    default_list_id,
    error_fields,
    expect_error,
    invitation,
    join,
    person,  # noqa: F401 (fixture)
    read_feed,
    remove_member,
)

ROLES = ("owner", "editor", "viewer", "removed", "pending", "stranger")
MEMBERS = ("owner", "editor", "viewer")
WRITERS = ("owner", "editor")
FORBIDDEN = (403, "FORBIDDEN")
LIST_HIDDEN = (404, "LIST_NOT_FOUND")
TASK_HIDDEN = (404, "TASK_NOT_FOUND")
INVITATION_HIDDEN = (404, "INVITATION_NOT_FOUND")
BAD_BODY = (422, "VALIDATION_ERROR")


@dataclass
class Cast:
    """One shared list with a task (weekly, tagged), its subtask and a completed task; a user in
    each role, a `bystander` viewer for the member routes to act on, and the pending invitation."""

    users: dict[str, Any]
    list_id: int
    task: dict
    subtask: dict
    invitation: dict

    @property
    def owner(self):
        return self.users["owner"]

    def ids(self, caller, mine: dict | None = None) -> dict[str, Any]:
        return {
            "list": self.list_id, "task": self.task["id"], "subtask": self.subtask["id"], "inv": self.invitation["id"],
            "owner": self.owner.user_id, "editor": self.users["editor"].user_id, "bystander": self.users["bystander"].user_id,
            "mine": (mine or {}).get("id"), "my_list": (mine or {}).get("list_id"),
        }


@pytest.fixture
def cast(person) -> Cast:
    users = {role: person(role) for role in (*ROLES, "bystander")}
    owner = users["owner"]
    list_id = create_list(owner, "Shared")
    task = owner.create_task(
        list_id=list_id, title="shared", tags=["shared"], due_date="2030-01-07T09:00:00Z", recurrence={"rrule": "FREQ=WEEKLY"}
    )
    subtask = owner.create_task(parent_id=task["id"], title="shared subtask")
    owner.create_task(list_id=list_id, title="shared and done", completed=True)
    for role, given in (("editor", "editor"), ("viewer", "viewer"), ("removed", "editor"), ("bystander", "viewer")):
        join(owner, list_id, users[role], given)
    assert remove_member(owner, list_id, users["removed"].user_id).status_code == 204
    pending = invitation(owner, list_id, users["pending"], "editor")
    return Cast(users, list_id, task, subtask, pending)


def fill(value: Any, ids: dict[str, Any]) -> Any:
    """The route's body with its placeholders ("{list}") replaced by the cast's ids."""
    if isinstance(value, dict):
        return {key: fill(item, ids) for key, item in value.items()}
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return ids[value[1:-1]]
    return value


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str  # after the spelling's prefix, with {placeholders} of Cast.ids
    body: dict | None = None
    allowed: tuple = MEMBERS
    success: int = 200
    needs: str = "editor"  # the role a refused member's 403 names
    member_refusal: tuple = FORBIDDEN
    outsider: tuple = LIST_HIDDEN  # removed member, pending invitee, stranger
    field: str | None = None  # what a 422 names

    def expected(self, role: str) -> tuple[int, str | None]:
        if role in self.allowed:
            return self.success, None
        return self.member_refusal if role in MEMBERS else self.outsider

    def send(self, cast: Cast, caller, prefix: str = "/api", mine: dict | None = None):
        ids = cast.ids(caller, mine)
        path = prefix.format(user_id=caller.user_id) + self.path.format(**ids)
        return caller.request(self.method, path, json=fill(self.body, ids))


def owner_only(name: str, method: str, path: str, body: dict | None = None, success: int = 200) -> Route:
    return Route(name, method, path, body, allowed=("owner",), success=success, needs="owner")


def writers(name: str, method: str, path: str, body: dict | None = None, success: int = 200, **more: Any) -> Route:
    return Route(name, method, path, body, allowed=WRITERS, success=success, outsider=TASK_HIDDEN, **more)


def body_id(name: str, method: str, path: str, body: dict, field: str, success: int = 200, allowed: tuple = WRITERS) -> Route:
    return Route(name, method, path, body, allowed=allowed, success=success, member_refusal=BODY_ID_REFUSED,
                 outsider=BAD_BODY, field=field)


LIST_ROUTES = [
    Route("GET list", "GET", "/lists/{list}"),
    owner_only("PATCH list", "PATCH", "/lists/{list}", {"name": "Renamed"}),
    owner_only("PUT list", "PUT", "/lists/{list}", {"color": "#000000"}),
    owner_only("DELETE list", "DELETE", "/lists/{list}?cascade=true", success=204),
    Route("move list", "POST", "/lists/{list}/move", {"to": "top"}),
    owner_only("invite", "POST", "/lists/{list}/invitations", {"email": "newcomer@example.test", "role": "viewer"}, 201),
    owner_only("list invitations", "GET", "/lists/{list}/invitations"),
    owner_only("revoke invitation", "DELETE", "/lists/{list}/invitations/{inv}", success=204),
    Route("list members", "GET", "/lists/{list}/members"),
    owner_only("change role", "PATCH", "/lists/{list}/members/{bystander}", {"role": "editor"}),
    owner_only("remove member", "DELETE", "/lists/{list}/members/{bystander}", success=204),
    owner_only("transfer", "POST", "/lists/{list}/transfer", {"user_id": "{bystander}"}),
]

INVITATION_ROUTES = [
    Route("accept", "POST", "/invitations/{inv}/accept", allowed=("pending",),
          member_refusal=INVITATION_HIDDEN, outsider=INVITATION_HIDDEN),
    Route("decline", "POST", "/invitations/{inv}/decline", allowed=("pending",), success=204,
          member_refusal=INVITATION_HIDDEN, outsider=INVITATION_HIDDEN),
]

TASK_ROUTES = [
    Route("GET task", "GET", "/tasks/{task}", outsider=TASK_HIDDEN),
    Route("GET subtask", "GET", "/tasks/{subtask}", outsider=TASK_HIDDEN),
    Route("occurrences", "GET", "/tasks/{task}/occurrences?count=3", outsider=TASK_HIDDEN),
    writers("PATCH task", "PATCH", "/tasks/{task}", {"title": "changed"}),
    writers("PUT task", "PUT", "/tasks/{task}", {"priority": "high"}),
    writers("PATCH subtask", "PATCH", "/tasks/{subtask}", {"description": "changed"}),
    writers("assign task", "PATCH", "/tasks/{task}", {"assignee_id": "{editor}"}),
    writers("DELETE task", "DELETE", "/tasks/{task}", success=204),
    writers("DELETE subtask", "DELETE", "/tasks/{subtask}", success=204),
    writers("toggle", "POST", "/tasks/{task}/toggle"),
    writers("complete", "PATCH", "/tasks/{task}/complete", {"completed": True}),
    writers("complete without body", "PATCH", "/tasks/{task}/complete"),
    writers("move task", "POST", "/tasks/{task}/move", {"to": "top"}),
    writers("move subtask to the top level", "POST", "/tasks/{subtask}/move", {"parent_id": None}),
    writers("move task into my own list", "POST", "/tasks/{task}/move", {"list_id": "{my_list}"}),
    writers("PATCH task into my own list", "PATCH", "/tasks/{task}", {"list_id": "{my_list}"}),
    body_id("create in the list", "POST", "/tasks", {"title": "planted", "list_id": "{list}"}, "list_id", 201),
    body_id("create under its task", "POST", "/tasks", {"title": "planted", "parent_id": "{task}"}, "parent_id", 201),
]

LISTING_ROUTES = [
    Route("list tasks of the list", "GET", "/tasks?list_id={list}"),
    Route("list tasks in tree order", "GET", "/tasks?list_id={list}&sort=position"),
    Route("list subtasks of its task", "GET", "/tasks?parent_id={task}", outsider=TASK_HIDDEN),
    Route("stats of the list", "GET", "/tasks/stats?list_id={list}"),
    Route("clear completed of the list", "DELETE", "/tasks?completed=true&list_id={list}", allowed=WRITERS),
]

# My own task (in my default list) taken somewhere in the shared list, or next to its tasks: every id
# of the body is checked against my role on the list it belongs to.
BODY_ID_ROUTES = [
    body_id("PATCH my task into the list", "PATCH", "/tasks/{mine}", {"list_id": "{list}"}, "list_id"),
    body_id("PUT my task into the list", "PUT", "/tasks/{mine}", {"list_id": "{list}"}, "list_id"),
    body_id("PATCH my task under its task", "PATCH", "/tasks/{mine}", {"parent_id": "{task}"}, "parent_id"),
    body_id("PATCH my task under its subtask", "PATCH", "/tasks/{mine}", {"parent_id": "{subtask}"}, "parent_id"),
    body_id("move my task into the list", "POST", "/tasks/{mine}/move", {"list_id": "{list}"}, "list_id"),
    body_id("move my task under its task", "POST", "/tasks/{mine}/move", {"parent_id": "{task}"}, "parent_id"),
    body_id("move my task after its task", "POST", "/tasks/{mine}/move", {"list_id": "{list}", "after_id": "{task}"}, "list_id"),
    body_id("move my task before its task", "POST", "/tasks/{mine}/move", {"list_id": "{list}", "before_id": "{task}"}, "list_id"),
    body_id("move my task under its task after its subtask", "POST", "/tasks/{mine}/move",
            {"parent_id": "{task}", "after_id": "{subtask}"}, "parent_id"),
    # Not a sibling where my task stays (my own list): refused whatever my role.
    body_id("move my task after its task, list unchanged", "POST", "/tasks/{mine}/move", {"after_id": "{task}"}, "after_id",
            allowed=()),
    body_id("move my task before its task, list unchanged", "POST", "/tasks/{mine}/move", {"before_id": "{task}"}, "before_id",
            allowed=()),
    # My own list's task assigned to the shared list's owner: a member of my list only may hold it.
    body_id("assign my task to the list's owner", "PATCH", "/tasks/{mine}", {"assignee_id": "{owner}"}, "assignee_id",
            allowed=("owner",)),
    body_id("create my task assigned to the list's owner", "POST", "/tasks", {"title": "mine", "assignee_id": "{owner}"},
            "assignee_id", 201, allowed=("owner",)),
]

# Both spellings of §3: the user path for a representative route of each kind.
USER_PATH_ROUTES = [route for route in LIST_ROUTES + TASK_ROUTES + LISTING_ROUTES + BODY_ID_ROUTES if route.name in {
    "GET list", "PATCH list", "invite", "list members", "remove member", "GET task", "PATCH task", "DELETE task",
    "move task", "create in the list", "list tasks of the list", "clear completed of the list",
    "move my task under its task",
}] + INVITATION_ROUTES


def snapshot(cast: Cast, caller) -> dict[str, Any]:
    """Everything a refused request could have changed, as the owner and the caller read it."""
    owner, list_path = cast.owner, f"/api/lists/{cast.list_id}"
    return {
        "list": owner.get(list_path).json(),
        "members": owner.get(list_path + "/members").json(),
        "invitations": owner.get(list_path + "/invitations").json(),
        "tasks": all_tasks(owner, list_id=cast.list_id, sort="position"),
        "caller's lists": caller.get("/api/lists").json(),
        "caller's tasks": all_tasks(caller, sort="position"),
    }


def check(cast: Cast, route: Route, role: str, prefix: str = "/api") -> None:
    caller = cast.users[role]
    mine = caller.create_task(title="mine")  # in the caller's default list
    before, owner_cursor = snapshot(cast, caller), cursor_now(cast.owner)
    response = route.send(cast, caller, prefix, mine)
    status, code = route.expected(role)
    assert response.status_code == status, f"{route.name} as {role}: {response.status_code} {response.text}"
    if status < 400:
        return
    body = expect_error(response, status, code)
    if status == 403:
        assert route.needs in body["detail"].lower(), body["detail"]
    if status == 422 and route.field:
        assert route.field in error_fields(response), body
    assert snapshot(cast, caller) == before, f"{route.name} as {role} was refused but changed something"
    assert read_feed(cast.owner, owner_cursor) == [], f"{route.name} as {role} was refused but recorded an event"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", LIST_ROUTES, ids=lambda route: route.name)
def test_list_routes_by_role(cast, route, role):
    check(cast, route, role)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", INVITATION_ROUTES, ids=lambda route: route.name)
def test_invitation_routes_by_role(cast, route, role):
    check(cast, route, role)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", TASK_ROUTES, ids=lambda route: route.name)
def test_task_routes_by_role(cast, route, role):
    check(cast, route, role)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", LISTING_ROUTES, ids=lambda route: route.name)
def test_listing_routes_by_role(cast, route, role):
    check(cast, route, role)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", BODY_ID_ROUTES, ids=lambda route: route.name)
def test_task_body_ids_by_role(cast, route, role):
    check(cast, route, role)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", USER_PATH_ROUTES, ids=lambda route: route.name)
def test_user_path_spelling_by_role(cast, route, role):
    check(cast, route, role, prefix="/api/{user_id}")


@pytest.mark.parametrize("path", ["/lists/{list}", "/lists/{list}/members", "/tasks/{task}", "/tasks?list_id={list}"])
def test_user_path_naming_the_lists_owner_is_403_for_a_member(cast, path):
    """The path's user is the caller (§3), never the list's owner, even for a member of the list."""
    editor = cast.users["editor"]
    response = editor.get(f"/api/{cast.owner.user_id}" + path.format(**cast.ids(editor)))
    expect_error(response, 403, "FORBIDDEN")


# ----------------------------------------------------------------------------- reads of everything


@pytest.mark.parametrize("role", ROLES)
def test_list_wide_reads_show_the_shared_list_to_its_members_only(cast, role):
    caller, member = cast.users[role], role in MEMBERS
    shared = {cast.task["id"], cast.subtask["id"]}
    cursor = cursor_now(caller)
    assert cast.owner.patch(f"/api/tasks/{cast.task['id']}", json={"title": "seen by members"}).status_code == 200
    assert (cast.list_id in [row["id"] for row in caller.get("/api/lists").json()]) is member
    visible = {task["id"] for task in all_tasks(caller)}
    assert (shared <= visible) if member else not (shared & visible)
    assert caller.get("/api/tasks/stats").json()["total"] == (3 if member else 0)
    assert caller.get("/api/tags").json() == ([{"tag": "shared", "count": 1}] if member else [])
    seen = [(change["type"], change["id"]) for change in read_feed(caller, cursor)]
    assert seen == ([("task.updated", cast.task["id"])] if member else [])
    cleared = caller.delete("/api/tasks", params={"completed": "true"})
    assert cleared.status_code == 200 and cleared.json() == {"deleted": 1 if role in WRITERS else 0}


# ----------------------------------------------------------------------------- moving between lists


@pytest.fixture
def viewed_list(cast) -> tuple[int, dict]:
    """A second list of the owner where the editor of the cast is only a viewer, with a task."""
    list_id = create_list(cast.owner, "Viewed")
    task = cast.owner.create_task(list_id=list_id, title="viewed")
    join(cast.owner, list_id, cast.users["editor"], "viewer")
    return list_id, task


@pytest.mark.parametrize(
    "method, path, body, field",
    [
        ("PATCH", "/tasks/{task}", {"list_id": "{viewed}"}, "list_id"),
        ("PUT", "/tasks/{task}", {"parent_id": "{viewed_task}"}, "parent_id"),
        ("POST", "/tasks/{task}/move", {"list_id": "{viewed}"}, "list_id"),
        ("POST", "/tasks/{task}/move", {"parent_id": "{viewed_task}"}, "parent_id"),
        ("POST", "/tasks/{task}/move", {"list_id": "{viewed}", "after_id": "{viewed_task}"}, "list_id"),
        ("POST", "/tasks/{subtask}/move", {"list_id": "{viewed}", "to": "top"}, "list_id"),
        ("POST", "/tasks", {"title": "planted", "parent_id": "{viewed_task}"}, "parent_id"),
    ],
)
def test_move_into_a_list_i_only_view_is_refused_and_changes_nothing(cast, viewed_list, method, path, body, field):
    editor = cast.users["editor"]
    viewed, viewed_task = viewed_list
    ids = {**cast.ids(editor), "viewed": viewed, "viewed_task": viewed_task["id"]}
    before = all_tasks(cast.owner, sort="position")
    owner_cursor = cursor_now(cast.owner)
    response = editor.request(method, "/api" + path.format(**ids), json=fill(body, ids))
    expect_error(response, *BODY_ID_REFUSED)
    assert field in error_fields(response)
    assert all_tasks(cast.owner, sort="position") == before
    assert read_feed(cast.owner, owner_cursor) == []


def test_move_into_a_strangers_list_is_422_naming_list_id(cast):
    editor, stranger = cast.users["editor"], cast.users["stranger"]
    strangers_list = default_list_id(stranger)
    response = editor.post(f"/api/tasks/{cast.task['id']}/move", json={"list_id": strangers_list})
    assert "list_id" in error_fields(response)
    assert cast.owner.get(f"/api/tasks/{cast.task['id']}").json()["list_id"] == cast.list_id


def test_move_out_of_a_shared_list_by_an_editor_takes_the_subtree(cast):
    editor = cast.users["editor"]
    mine = default_list_id(editor)
    moved = editor.post(f"/api/tasks/{cast.task['id']}/move", json={"list_id": mine})
    assert moved.status_code == 200 and moved.json()["list_id"] == mine
    assert editor.get(f"/api/tasks/{cast.subtask['id']}").json()["list_id"] == mine
    expect_error(cast.owner.get(f"/api/tasks/{cast.task['id']}"), 404, "TASK_NOT_FOUND")  # out of the owner's sight
    expect_error(cast.users["viewer"].get(f"/api/tasks/{cast.subtask['id']}"), 404, "TASK_NOT_FOUND")
