"""Members (contract §12): the members list, roles, removing and leaving, transfer, the list as
each member sees it (role, owner_id, member_count, their own order), the 1,000-list limit, a
removed member's access, and assignments cleared when their assignee may no longer hold them.
On SQLite and PostgreSQL."""
import re

import pytest

from conftest import ApiUser, mint_token
from sharing_helpers import (
    LIST_FIELDS,
    MEMBER_FIELDS,
    create_list,
    expect_error,
    expect_forbidden,
    error_fields,
    invitation,
    join,
    list_ids,
    members,
    person,  # noqa: F401 (fixture)
    read_list,
    remove_member,
    set_role,
    share_list,
)


@pytest.fixture
def team(person):
    """An owner, an editor and a viewer on one list: (owner, editor, viewer, list_id)."""
    owner, editor, viewer = person("owner"), person("editor"), person("viewer")
    list_id = create_list(owner, "Team")
    join(owner, list_id, editor, "editor")
    join(owner, list_id, viewer, "viewer")
    return owner, editor, viewer, list_id


# ----------------------------------------------------------------------------- the members list


def test_members_lists_the_owner_first_with_what_each_token_carried_at_join(person, new_user):
    owner = new_user("owner")  # a token with no email and no name
    ann, bob = person("ann", name="Ann Example"), person("bob", name=None)
    list_id = create_list(owner)
    join(owner, list_id, bob, "viewer")
    join(owner, list_id, ann, "editor")
    listed = members(ann, list_id)
    assert all(set(row) == MEMBER_FIELDS for row in listed)
    assert listed[0] == {**listed[0], "user_id": owner.user_id, "role": "owner", "email": None, "name": None}
    rest = {row["user_id"]: row for row in listed[1:]}
    assert rest[ann.user_id] == {**rest[ann.user_id], "role": "editor", "email": ann.email, "name": "Ann Example"}
    assert rest[bob.user_id] == {**rest[bob.user_id], "role": "viewer", "email": bob.email, "name": None}
    assert all(row["joined_at"].endswith("Z") for row in listed)


def test_members_keep_the_email_and_name_of_the_token_they_joined_with(person, client):
    owner, member = person("owner"), person("member", name="Old Name")
    list_id = share_list(owner, member, "editor")
    renamed = ApiUser(client, member.user_id, mint_token(member.user_id, email="new@example.test", name="New Name"))
    assert renamed.get(f"/api/lists/{list_id}").status_code == 200
    [row] = [row for row in members(owner, list_id) if row["user_id"] == member.user_id]
    assert (row["email"], row["name"]) == (member.email, "Old Name")


# ----------------------------------------------------------------------------- roles


def test_change_role_answers_200_with_the_member(team):
    owner, editor, _, list_id = team
    response = set_role(owner, list_id, editor.user_id, "viewer")
    assert response.status_code == 200, response.text
    assert set(response.json()) == MEMBER_FIELDS
    assert response.json()["user_id"] == editor.user_id and response.json()["role"] == "viewer"
    assert read_list(editor, list_id)["role"] == "viewer"
    task = owner.create_task(list_id=list_id)
    expect_forbidden(editor.patch(f"/api/tasks/{task['id']}", json={"title": "no longer mine to change"}), "editor")


def test_change_role_to_editor_lets_a_viewer_write(team):
    owner, _, viewer, list_id = team
    assert set_role(owner, list_id, viewer.user_id, "editor").status_code == 200
    assert viewer.post("/api/tasks", json={"title": "now I can", "list_id": list_id}).status_code == 201


def test_change_role_of_the_owner_is_409(team):
    owner, _, _, list_id = team
    expect_error(set_role(owner, list_id, owner.user_id, "editor"), 409, "CONFLICT")
    assert read_list(owner, list_id)["role"] == "owner"


@pytest.mark.parametrize("role", ["owner", "admin", "", None])
def test_change_role_to_a_bad_role_is_422_naming_role(team, role):
    owner, editor, _, list_id = team
    assert "role" in error_fields(set_role(owner, list_id, editor.user_id, role))
    assert read_list(editor, list_id)["role"] == "editor"


def test_change_role_of_a_non_member_is_404_member_not_found(team, person):
    owner, _, _, list_id = team
    stranger = person("stranger")
    expect_error(set_role(owner, list_id, stranger.user_id, "viewer"), 404, "MEMBER_NOT_FOUND")
    expect_error(remove_member(owner, list_id, stranger.user_id), 404, "MEMBER_NOT_FOUND")


@pytest.mark.parametrize("caller", ["editor", "viewer"])
def test_change_role_by_a_member_is_403_naming_the_owner(team, caller):
    owner, editor, viewer, list_id = team
    user = editor if caller == "editor" else viewer
    expect_forbidden(set_role(user, list_id, viewer.user_id, "editor"), "owner")
    expect_forbidden(set_role(user, list_id, user.user_id, "editor"), "owner")
    roles = {row["user_id"]: row["role"] for row in members(owner, list_id)}
    assert roles == {owner.user_id: "owner", editor.user_id: "editor", viewer.user_id: "viewer"}


# ----------------------------------------------------------------------------- removing and leaving


def test_remove_a_member_answers_204_and_their_access_ends_at_once(team):
    owner, editor, _, list_id = team
    task = owner.create_task(list_id=list_id, title="shared")
    response = remove_member(owner, list_id, editor.user_id)
    assert response.status_code == 204 and response.content == b""
    assert editor.user_id not in [row["user_id"] for row in members(owner, list_id)]
    assert read_list(owner, list_id)["member_count"] == 2
    removed_requests = [
        ("GET", f"/api/lists/{list_id}", None, "LIST_NOT_FOUND"),
        ("PATCH", f"/api/lists/{list_id}", {"name": "x"}, "LIST_NOT_FOUND"),
        ("GET", f"/api/lists/{list_id}/members", None, "LIST_NOT_FOUND"),
        ("GET", f"/api/tasks?list_id={list_id}", None, "LIST_NOT_FOUND"),
        ("GET", f"/api/tasks/{task['id']}", None, "TASK_NOT_FOUND"),
        ("PATCH", f"/api/tasks/{task['id']}", {"title": "x"}, "TASK_NOT_FOUND"),
        ("POST", f"/api/tasks/{task['id']}/toggle", None, "TASK_NOT_FOUND"),
        ("DELETE", f"/api/tasks/{task['id']}", None, "TASK_NOT_FOUND"),
        ("DELETE", f"/api/lists/{list_id}/members/{editor.user_id}", None, "LIST_NOT_FOUND"),
    ]
    for method, path, body, code in removed_requests:
        expect_error(editor.request(method, path, json=body), 404, code)
    assert list_id not in list_ids(editor)
    assert task["id"] not in [row["id"] for row in editor.get("/api/tasks").json()]


@pytest.mark.parametrize("who", ["editor", "viewer"])
def test_remove_myself_is_leaving(team, who):
    owner, editor, viewer, list_id = team
    member = editor if who == "editor" else viewer
    assert remove_member(member, list_id, member.user_id).status_code == 204
    expect_error(member.get(f"/api/lists/{list_id}"), 404, "LIST_NOT_FOUND")
    assert [row["role"] for row in members(owner, list_id)] == ["owner", "viewer" if who == "editor" else "editor"]


def test_remove_myself_as_the_owner_is_409_saying_to_transfer_first(team):
    owner, _, _, list_id = team
    body = expect_error(remove_member(owner, list_id, owner.user_id), 409, "CONFLICT")
    assert "transfer" in body["detail"].lower() and "delete" in body["detail"].lower()
    assert read_list(owner, list_id)["member_count"] == 3


@pytest.mark.parametrize("caller", ["editor", "viewer"])
def test_remove_another_member_as_a_member_is_403_naming_the_owner(team, caller):
    owner, editor, viewer, list_id = team
    user, target = (editor, viewer) if caller == "editor" else (viewer, editor)
    expect_forbidden(remove_member(user, list_id, target.user_id), "owner")
    expect_forbidden(remove_member(user, list_id, owner.user_id), "owner")
    assert read_list(owner, list_id)["member_count"] == 3


def test_remove_keeps_the_tasks_the_member_created(team):
    owner, editor, _, list_id = team
    written = editor.create_task(list_id=list_id, title="by the editor")
    assert remove_member(owner, list_id, editor.user_id).status_code == 204
    kept = owner.get(f"/api/tasks/{written['id']}")
    assert kept.status_code == 200 and kept.json()["user_id"] == editor.user_id


def test_delete_a_shared_list_removes_it_for_every_member(team):
    owner, editor, viewer, list_id = team
    task = editor.create_task(list_id=list_id)
    expect_error(owner.delete(f"/api/lists/{list_id}"), 409, "CONFLICT")  # it has tasks: as §7
    assert owner.delete(f"/api/lists/{list_id}", params={"cascade": "true"}).status_code == 204
    for user in (owner, editor, viewer):
        expect_error(user.get(f"/api/lists/{list_id}"), 404, "LIST_NOT_FOUND")
        expect_error(user.get(f"/api/tasks/{task['id']}"), 404, "TASK_NOT_FOUND")
        assert list_id not in list_ids(user)


# ----------------------------------------------------------------------------- transfer


def test_transfer_makes_the_member_the_owner_and_the_old_owner_an_editor(team):
    owner, editor, viewer, list_id = team
    response = owner.post(f"/api/lists/{list_id}/transfer", json={"user_id": viewer.user_id})
    assert response.status_code == 200, response.text
    assert response.json()["id"] == list_id and response.json()["owner_id"] == viewer.user_id
    assert response.json()["role"] == "editor"  # the list as the caller, now an editor, sees it
    assert read_list(viewer, list_id)["role"] == "owner"
    roles = {row["user_id"]: row["role"] for row in members(viewer, list_id)}
    assert roles == {viewer.user_id: "owner", owner.user_id: "editor", editor.user_id: "editor"}
    assert members(viewer, list_id)[0]["user_id"] == viewer.user_id  # the owner first
    expect_forbidden(owner.patch(f"/api/lists/{list_id}", json={"name": "not mine any more"}), "owner")
    assert viewer.patch(f"/api/lists/{list_id}", json={"name": "mine"}).status_code == 200
    assert remove_member(owner, list_id, owner.user_id).status_code == 204  # the old owner may now leave


@pytest.mark.parametrize("target", ["stranger", "pending", "unknown"])
def test_transfer_to_a_non_member_is_422_naming_user_id(team, person, target):
    owner, _, _, list_id = team
    outsider = person(target)
    if target == "pending":
        invitation(owner, list_id, outsider)
    user_id = "no-such-user" if target == "unknown" else outsider.user_id
    assert "user_id" in error_fields(owner.post(f"/api/lists/{list_id}/transfer", json={"user_id": user_id}))
    assert read_list(owner, list_id)["owner_id"] == owner.user_id


def test_transfer_to_myself_is_422_naming_user_id_and_changes_nothing(team):
    owner, editor, _, list_id = team
    before = read_list(owner, list_id)
    response = owner.post(f"/api/lists/{list_id}/transfer", json={"user_id": owner.user_id})
    assert "user_id" in error_fields(response) and "already own" in response.text
    assert read_list(owner, list_id) == before and read_list(editor, list_id)["role"] == "editor"


def test_transfer_by_an_editor_is_403_naming_the_owner(team):
    owner, editor, _, list_id = team
    expect_forbidden(editor.post(f"/api/lists/{list_id}/transfer", json={"user_id": editor.user_id}), "owner")
    assert read_list(owner, list_id)["owner_id"] == owner.user_id


# ----------------------------------------------------------------------------- the list as each member sees it


def test_list_shows_each_member_their_role_the_owner_and_the_member_count(team, person):
    owner, editor, viewer, list_id = team
    invitation(owner, list_id, person("pending"))  # a pending invitation is not a member
    seen = {who: read_list(user, list_id) for who, user in (("owner", owner), ("editor", editor), ("viewer", viewer))}
    for role, shown in seen.items():
        assert set(shown) == LIST_FIELDS
        assert shown["role"] == role and shown["owner_id"] == owner.user_id and shown["member_count"] == 3
    same = {key for key in LIST_FIELDS if key not in ("role", "position")}
    assert {key: seen["editor"][key] for key in same} == {key: seen["owner"][key] for key in same}
    assert {key: seen["viewer"][key] for key in same} == {key: seen["owner"][key] for key in same}


def test_list_of_my_own_unshared_list_says_owner_and_one_member(person):
    owner = person("owner")
    for row in owner.get("/api/lists").json() + [read_list(owner, create_list(owner))]:
        assert row["role"] == "owner" and row["owner_id"] == owner.user_id and row["member_count"] == 1


def test_list_joined_goes_to_the_end_of_the_members_own_order(person):
    owner, member = person("owner"), person("member")
    mine = create_list(member, "Mine")
    shared = share_list(owner, member, "viewer")
    assert list_ids(member)[-2:] == [mine, shared]


def test_move_a_shared_list_changes_only_my_order(person):
    owner, member = person("owner"), person("member")
    shared = share_list(owner, member, "viewer")
    create_list(owner, "Owner's later list")
    owners_order, members_order = list_ids(owner), list_ids(member)
    moved = member.post(f"/api/lists/{shared}/move", json={"to": "top"})
    assert moved.status_code == 200, moved.text
    assert list_ids(member) == [shared] + [i for i in members_order if i != shared]
    assert list_ids(owner) == owners_order
    assert moved.json()["position"] == read_list(member, shared)["position"]


def test_list_shared_with_me_does_not_count_toward_my_1000_lists(person):
    owner, member = person("owner"), person("member")
    share_list(owner, member, "viewer")
    own = [row for row in member.get("/api/lists").json() if row["owner_id"] == member.user_id]
    for n in range(1000 - len(own)):
        response = member.post("/api/lists", json={"name": f"own {n}"})
        assert response.status_code == 201, (n, response.text)
    refused = expect_error(member.post("/api/lists", json={"name": "one too many"}), 422, "VALIDATION_ERROR")
    assert "1000" in refused["detail"].replace(",", "")
    assert len(list_ids(member)) == 1001  # 1,000 of their own and the shared one


# ----------------------------------------------------------------------------- assignments cleared


def assigned_task(owner, list_id: int, assignee) -> dict:
    task = owner.create_task(list_id=list_id, title="assigned", assignee_id=assignee.user_id)
    assert task["assignee_id"] == assignee.user_id
    return task


@pytest.mark.parametrize("how", ["leave", "removal", "demotion"])
def test_assignments_of_a_member_who_may_no_longer_hold_them_are_cleared(team, how):
    owner, editor, _, list_id = team
    theirs = assigned_task(owner, list_id, editor)
    owners = assigned_task(owner, list_id, owner)
    elsewhere_list = share_list(owner, editor, "editor", name="Elsewhere")
    kept_elsewhere = assigned_task(owner, elsewhere_list, editor)
    if how == "leave":
        assert remove_member(editor, list_id, editor.user_id).status_code == 204
    elif how == "removal":
        assert remove_member(owner, list_id, editor.user_id).status_code == 204
    else:
        assert set_role(owner, list_id, editor.user_id, "viewer").status_code == 200
    assert owner.get(f"/api/tasks/{theirs['id']}").json()["assignee_id"] is None
    assert owner.get(f"/api/tasks/{owners['id']}").json()["assignee_id"] == owner.user_id
    assert owner.get(f"/api/tasks/{kept_elsewhere['id']}").json()["assignee_id"] == editor.user_id


@pytest.mark.parametrize("route", ["move", "patch"])
def test_assignment_is_cleared_when_its_task_moves_where_the_assignee_is_not_an_editor(team, person, route):
    owner, editor, _, list_id = team
    destination = create_list(owner, "Destination")
    join(owner, destination, editor, "viewer")
    task = assigned_task(owner, list_id, editor)
    child = owner.create_task(parent_id=task["id"], title="child", assignee_id=editor.user_id)
    if route == "move":
        response = owner.post(f"/api/tasks/{task['id']}/move", json={"list_id": destination})
    else:
        response = owner.patch(f"/api/tasks/{task['id']}", json={"list_id": destination})
    assert response.status_code == 200, response.text
    assert response.json()["assignee_id"] is None and response.json()["list_id"] == destination
    assert owner.get(f"/api/tasks/{child['id']}").json()["assignee_id"] is None


def test_assignment_stays_when_its_task_moves_where_the_assignee_is_an_editor(team):
    owner, editor, _, list_id = team
    destination = create_list(owner, "Destination")
    join(owner, destination, editor, "editor")
    task = assigned_task(owner, list_id, editor)
    moved = owner.post(f"/api/tasks/{task['id']}/move", json={"list_id": destination})
    assert moved.status_code == 200 and moved.json()["assignee_id"] == editor.user_id


# ----------------------------------------------------------------------------- OpenAPI

SHARING_ROUTES = [
    ("post", "/lists/{}/invitations"), ("get", "/lists/{}/invitations"), ("delete", "/lists/{}/invitations/{}"),
    ("get", "/invitations"), ("post", "/invitations/{}/accept"), ("post", "/invitations/{}/decline"),
    ("get", "/lists/{}/members"), ("patch", "/lists/{}/members/{}"), ("delete", "/lists/{}/members/{}"),
    ("post", "/lists/{}/transfer"),
]


@pytest.mark.parametrize("prefix", ["/api", "/api/{}"])
def test_openapi_describes_every_sharing_route_in_both_spellings(client, prefix):
    """Path parameters are named as the implementation likes: compared as `{}`."""
    spec = client.get("/openapi.json").json()
    paths = {re.sub(r"\{[^}]+\}", "{}", path): operations for path, operations in spec["paths"].items()}
    for method, path in SHARING_ROUTES:
        operation = paths[prefix + path][method]
        assert operation.get("summary") and operation.get("responses"), (method, path)
    listing = {parameter["name"] for parameter in paths[prefix + "/tasks"]["get"]["parameters"]}
    assert "assignee" in listing


def test_openapi_schemas_carry_the_sharing_fields(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    fields = {name: set(schema.get("properties", {})) for name, schema in schemas.items()}
    assert any({"owner_id", "role", "member_count"} <= properties for properties in fields.values())
    assert any({"assignee_id", "user_id", "list_id"} <= properties for properties in fields.values())
