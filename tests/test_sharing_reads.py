"""Reads with sharing (contract §12): everything that reads tasks reads every list the caller is a
member of (listing with filters, sorts, pages and the tree order; list_id; stats; tags; clearing
completed tasks; reminders), the `assignee=` filter, `user_id` as the creator and the rules of
`assignee_id`. On SQLite and PostgreSQL."""
import re
from datetime import datetime, timedelta, timezone

import pytest

from sharing_helpers import (
    create_list,
    default_list_id,
    error_fields,
    expect_error,
    invitation,
    join,
    person,  # noqa: F401 (fixture)
    remove_member,
    share_list,
    task_ids,
)


def z(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def soon(**delta) -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(**delta)


def titles(tasks: list[dict]) -> list[str]:
    return [task["title"] for task in tasks]


def listed(user, **params) -> list[str]:
    response = user.get("/api/tasks", params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    assert int(response.headers["X-Total-Count"]) == len(response.json())
    return titles(response.json())


@pytest.fixture
def spread(person):
    """A member's tasks spread over their own list, a list they edit and a list they view (two owners):
    (member, edit_owner, view_owner, edited list id, viewed list id)."""
    member, edit_owner, view_owner = person("member"), person("team_owner"), person("house_owner")
    edited = share_list(edit_owner, member, "editor", name="Team")
    viewed = share_list(view_owner, member, "viewer", name="House")
    member.create_task(title="own milk", priority="high", tags=["home"], due_date="2020-01-01T10:00:00Z")
    member.create_task(title="own bread", completed=True)
    edit_owner.create_task(title="team report", list_id=edited, priority="high", tags=["work"], due_date="2030-06-01T10:00:00Z")
    edit_owner.create_task(title="team done", list_id=edited, completed=True, tags=["home"])
    view_owner.create_task(title="house milk", list_id=viewed, priority="low", tags=["home"], due_date="2020-02-01")
    view_owner.create_task(title="house paint", list_id=viewed, priority="high")
    view_owner.create_task(title="house private", list_id=create_list(view_owner, "Not shared"))
    return member, edit_owner, view_owner, edited, viewed


EVERYTHING = {"own milk", "own bread", "team report", "team done", "house milk", "house paint"}


def test_list_tasks_reads_every_list_i_am_a_member_of(spread):
    member, edit_owner, view_owner, _, _ = spread
    assert set(listed(member)) == EVERYTHING
    assert set(listed(edit_owner)) == {"team report", "team done"}
    assert set(listed(view_owner)) == {"house milk", "house paint", "house private"}


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"q": "MILK"}, {"own milk", "house milk"}),
        ({"priority": "high"}, {"own milk", "team report", "house paint"}),
        ({"priority": ["low", "high"]}, {"own milk", "team report", "house paint", "house milk"}),
        ({"tag": "home"}, {"own milk", "team done", "house milk"}),
        ({"completed": "true"}, {"own bread", "team done"}),
        ({"status": "pending"}, {"own milk", "team report", "house milk", "house paint"}),
        ({"overdue": "true"}, {"own milk", "house milk"}),
        ({"due_before": "2025-01-01T00:00:00Z"}, {"own milk", "house milk"}),
        ({"due_after": "2025-01-01T00:00:00Z"}, {"team report"}),
        ({"due_on": "2020-02-01"}, {"house milk"}),
        ({"parent_id": "none"}, EVERYTHING),
    ],
)
def test_list_tasks_filters_apply_across_lists(spread, params, expected):
    member = spread[0]
    assert set(listed(member, **params)) == expected


PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2}


@pytest.mark.parametrize(
    "sort, order, key",
    [
        ("title", "asc", lambda task: task["title"]),
        ("title", "desc", lambda task: task["title"]),
        ("created_at", "asc", lambda task: task["created_at"]),
        ("priority", "desc", lambda task: PRIORITY_RANK[task["priority"]]),
        ("due_date", "asc", lambda task: (task["due_date"] is None, task["due_date"] or "")),
    ],
)
def test_list_tasks_sorts_across_lists(spread, sort, order, key):
    member = spread[0]
    response = member.get("/api/tasks", params={"sort": sort, "order": order})
    assert response.status_code == 200, response.text
    got = response.json()
    assert set(titles(got)) == EVERYTHING
    assert [key(task) for task in got] == sorted((key(task) for task in got), reverse=order == "desc")


def test_list_tasks_pages_across_lists_with_the_total_and_next_links(spread):
    member = spread[0]
    seen: list[str] = []
    url, params = "/api/tasks", {"limit": 2, "sort": "title", "order": "asc"}
    while url:
        response = member.get(url, params=params)
        assert response.status_code == 200 and response.headers["X-Total-Count"] == str(len(EVERYTHING))
        seen += titles(response.json())
        found = re.search(r'<([^>]+)>;\s*rel="next"', response.headers.get("Link", ""))
        url, params = (found.group(1), None) if found else (None, None)
    assert seen == sorted(EVERYTHING)


def test_list_tasks_in_tree_order_follows_my_own_order_of_lists(person):
    owner, member = person("owner"), person("member")
    shared = share_list(owner, member, "editor")
    parent = owner.create_task(list_id=shared, title="parent")
    child = owner.create_task(parent_id=parent["id"], title="child")
    mine = member.create_task(title="mine")  # the member's default list, first in their order
    before = task_ids(owner, sort="position")
    assert task_ids(member, sort="position") == [mine["id"], parent["id"], child["id"]]
    assert member.post(f"/api/lists/{shared}/move", json={"to": "top"}).status_code == 200
    assert task_ids(member, sort="position") == [parent["id"], child["id"], mine["id"]]
    page = member.get("/api/tasks", params={"sort": "position", "limit": 1, "offset": 1})
    assert [task["id"] for task in page.json()] == [child["id"]]
    assert task_ids(owner, sort="position") == before == [parent["id"], child["id"]]


def test_list_tasks_with_list_id_reads_one_shared_list(spread):
    member, _, _, edited, viewed = spread
    assert set(listed(member, list_id=viewed)) == {"house milk", "house paint"}
    assert set(listed(member, list_id=edited, sort="position")) == {"team report", "team done"}


def test_stats_count_every_list_i_am_a_member_of(spread):
    member, _, _, _, viewed = spread
    stats = member.get("/api/tasks/stats").json()
    assert stats["total"] == 6 and stats["completed"] == 2 and stats["pending"] == 4 and stats["overdue"] == 2
    assert stats["by_priority"] == {"low": 1, "medium": 2, "high": 3}
    one = member.get("/api/tasks/stats", params={"list_id": viewed}).json()
    assert (one["total"], one["completed"], one["overdue"]) == (2, 0, 1)


def test_tags_count_every_list_i_am_a_member_of(spread):
    member, edit_owner, _, _, _ = spread
    assert member.get("/api/tags").json() == [{"tag": "home", "count": 3}, {"tag": "work", "count": 1}]
    assert sorted(edit_owner.get("/api/tags").json(), key=lambda row: row["tag"]) == [
        {"tag": "home", "count": 1}, {"tag": "work", "count": 1}
    ]


def test_clear_completed_deletes_only_where_i_may_delete(spread):
    member, edit_owner, view_owner, edited, viewed = spread
    view_owner.create_task(title="house done", list_id=viewed, completed=True)
    response = member.delete("/api/tasks", params={"completed": "true"})
    assert response.status_code == 200 and response.json() == {"deleted": 2}  # own bread, team done
    assert "team done" not in listed(edit_owner)
    assert "house done" in listed(view_owner)


def test_clear_completed_with_the_list_id_of_a_list_i_view_is_403(spread):
    member, _, view_owner, _, viewed = spread
    view_owner.create_task(title="house done", list_id=viewed, completed=True)
    expect_error(member.delete("/api/tasks", params={"completed": "true", "list_id": viewed}), 403, "FORBIDDEN")
    assert "house done" in listed(view_owner)


# ----------------------------------------------------------------------------- reminders


def reminder_titles(user) -> list[str]:
    response = user.get("/api/reminders")
    assert response.status_code == 200, response.text
    return [item["title"] for item in response.json()]


@pytest.fixture
def team(person):
    owner, editor, viewer = person("owner"), person("editor"), person("viewer")
    list_id = create_list(owner, "Team")
    join(owner, list_id, editor, "editor")
    join(owner, list_id, viewer, "viewer")
    return owner, editor, viewer, list_id


def test_reminders_fire_for_the_creator_when_nobody_is_assigned(team):
    owner, editor, viewer, list_id = team
    owner.create_task(list_id=list_id, title="owner's", reminders=[{"at": z(soon(hours=1))}])
    editor.create_task(list_id=list_id, title="editor's", reminders=[{"at": z(soon(hours=2))}])
    assert reminder_titles(owner) == ["owner's"]
    assert reminder_titles(editor) == ["editor's"]
    assert reminder_titles(viewer) == []


def test_reminders_fire_for_the_assignee_alone(team):
    owner, editor, viewer, list_id = team
    task = owner.create_task(list_id=list_id, title="assigned", reminders=[{"at": z(soon(hours=1))}], assignee_id=editor.user_id)
    assert reminder_titles(editor) == ["assigned"] and reminder_titles(owner) == [] and reminder_titles(viewer) == []
    assert owner.patch(f"/api/tasks/{task['id']}", json={"assignee_id": None}).status_code == 200
    assert reminder_titles(owner) == ["assigned"] and reminder_titles(editor) == []


def test_reminders_of_a_list_i_left_are_no_longer_mine(team):
    owner, editor, _, list_id = team
    editor.create_task(list_id=list_id, title="editor's", reminders=[{"at": z(soon(hours=1))}])
    assert remove_member(editor, list_id, editor.user_id).status_code == 204
    assert reminder_titles(editor) == []


# ----------------------------------------------------------------------------- assignee filter, creator, assignee_id


def test_list_tasks_by_assignee(team):
    owner, editor, viewer, list_id = team
    to_editor = owner.create_task(list_id=list_id, title="to editor", assignee_id=editor.user_id)
    to_owner = owner.create_task(list_id=list_id, title="to owner", assignee_id=owner.user_id)
    nobodys = owner.create_task(list_id=list_id, title="nobody's")
    own = editor.create_task(title="editor's own", assignee_id=editor.user_id)
    assert set(task_ids(editor, assignee="me")) == {to_editor["id"], own["id"]}
    assert set(task_ids(editor, assignee="none")) == {nobodys["id"]}
    assert set(task_ids(editor, assignee=owner.user_id)) == {to_owner["id"]}
    assert set(task_ids(viewer, assignee="me")) == set()
    assert set(task_ids(viewer, assignee=editor.user_id)) == {to_editor["id"]}  # not the editor's own list
    assert set(task_ids(owner, assignee="me", list_id=list_id)) == {to_owner["id"]}
    assert int(owner.get("/api/tasks", params={"assignee": "none"}).headers["X-Total-Count"]) == 1


def test_assignee_filter_empty_is_422_naming_it_and_a_non_members_id_finds_nothing(team, person):
    owner, editor, _, list_id = team
    owner.create_task(list_id=list_id, title="to editor", assignee_id=editor.user_id)
    assert "assignee" in error_fields(owner.get("/api/tasks", params={"assignee": ""}))
    stranger = person("stranger")
    response = owner.get("/api/tasks", params={"assignee": stranger.user_id})
    assert response.status_code == 200 and response.json() == [] and response.headers["X-Total-Count"] == "0"


def test_task_user_id_is_its_creator_and_assignee_id_starts_null(team):
    owner, editor, viewer, list_id = team
    written = editor.create_task(list_id=list_id, title="by the editor")
    assert written["user_id"] == editor.user_id and written["assignee_id"] is None
    for user in (owner, viewer):
        assert user.get(f"/api/tasks/{written['id']}").json() == written
    changed = owner.patch(f"/api/tasks/{written['id']}", json={"title": "changed by the owner"}).json()
    assert changed["user_id"] == editor.user_id  # a change does not make the owner its creator
    child = owner.create_task(parent_id=written["id"], title="subtask")
    assert child["user_id"] == owner.user_id and child["list_id"] == list_id


@pytest.mark.parametrize(
    "assignee, allowed",
    [("owner", True), ("editor", True), ("other_editor", True), ("viewer", False), ("pending", False),
     ("removed", False), ("stranger", False), ("unknown", False)],
)
@pytest.mark.parametrize("how", ["create", "PATCH", "PUT"])
def test_assignee_id_must_be_an_owner_or_editor_of_the_tasks_list(team, person, assignee, allowed, how):
    owner, editor, viewer, list_id = team
    people = {"owner": owner, "editor": editor, "viewer": viewer}
    for role in ("other_editor", "pending", "removed", "stranger"):
        people[role] = person(role)
    join(owner, list_id, people["other_editor"], "editor")
    invitation(owner, list_id, people["pending"], "editor")
    join(owner, list_id, people["removed"], "editor")
    assert remove_member(owner, list_id, people["removed"].user_id).status_code == 204
    user_id = "nobody-at-all" if assignee == "unknown" else people[assignee].user_id
    task = editor.create_task(list_id=list_id, title="to assign")
    if how == "create":
        response = editor.post("/api/tasks", json={"title": "assigned", "list_id": list_id, "assignee_id": user_id})
    else:
        response = editor.request(how, f"/api/tasks/{task['id']}", json={"assignee_id": user_id})
    if allowed:
        assert response.status_code in (200, 201), response.text
        assert response.json()["assignee_id"] == user_id
    else:
        assert "assignee_id" in error_fields(response)
        assert owner.get(f"/api/tasks/{task['id']}").json() == task
        assert task_ids(owner, list_id=list_id) == [task["id"]]


def test_assignee_id_null_clears_and_a_subtask_follows_its_own_list(team):
    owner, editor, _, list_id = team
    task = owner.create_task(list_id=list_id, title="assigned", assignee_id=editor.user_id)
    cleared = editor.patch(f"/api/tasks/{task['id']}", json={"assignee_id": None})
    assert cleared.status_code == 200 and cleared.json()["assignee_id"] is None
    child = editor.post("/api/tasks", json={"title": "child", "parent_id": task["id"], "assignee_id": owner.user_id})
    assert child.status_code == 201 and child.json()["assignee_id"] == owner.user_id


def test_assignee_id_in_my_default_list_is_me_or_nobody(person):
    alone, other = person("alone"), person("other")
    mine = alone.create_task(title="mine", assignee_id=alone.user_id)
    assert mine["assignee_id"] == alone.user_id and mine["list_id"] == default_list_id(alone)
    assert "assignee_id" in error_fields(alone.patch(f"/api/tasks/{mine['id']}", json={"assignee_id": other.user_id}))
