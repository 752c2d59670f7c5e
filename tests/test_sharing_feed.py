"""Changes with sharing (contract §12 on §10): every member's /api/changes gets each change of a
shared list with its `actor`; joining gives a snapshot; leaving, removal and deletion give
`list.deleted` and nothing after; moves between lists give deleted / created / updated per member;
role changes and transfers are `list.updated`; reminders go to the feed of whom they fire for; and
each member's feed alone reproduces what the API shows them. On SQLite and PostgreSQL.
Over real HTTP (webhooks, /api/events, concurrent writers): test_sharing_feed_live.py."""
from datetime import timedelta

import pytest

from sharing_helpers import (
    EVENT_FIELDS,
    accept,
    create_list,
    cursor_now,
    events_of,
    invitation,
    join,
    person,  # noqa: F401 (fixture)
    read_feed,
    read_list,
    remove_member,
    replay,
    set_role,
    tasks_by_id,
)
from test_reminders import fire, soon, z

# What every member of a list sees the same, and what the feed keeps true (counts move without events).
LIST_FACTS = ("id", "name", "color", "is_default", "owner_id", "role", "member_count")


def facts(row: dict) -> dict:
    return {key: row[key] for key in LIST_FACTS}


def assert_feed_reproduces(user, since: str, list_id: int) -> None:
    """What a sync client that started at `since` built from the feed alone is what GET shows."""
    mirror = replay(read_feed(user, since))
    assert mirror.tasks_of(list_id) == tasks_by_id(user, list_id=list_id)
    assert facts(mirror.lists[list_id]) == facts(read_list(user, list_id))


@pytest.fixture
def team(person):
    """An owner, an editor and a viewer of one list: (owner, editor, viewer, list_id)."""
    owner, editor, viewer = person("owner"), person("editor"), person("viewer")
    list_id = create_list(owner, "Team")
    join(owner, list_id, editor, "editor")
    join(owner, list_id, viewer, "viewer")
    return owner, editor, viewer, list_id


# ----------------------------------------------------------------------------- fan-out and actor


def test_changes_reach_every_member_with_the_actor_who_made_them(team):
    owner, editor, viewer, list_id = team
    cursors = {user.user_id: cursor_now(user) for user in (owner, editor, viewer)}
    task = editor.create_task(list_id=list_id, title="by the editor")
    assert owner.patch(f"/api/tasks/{task['id']}", json={"title": "by the owner"}).status_code == 200
    completed = editor.post(f"/api/tasks/{task['id']}/toggle").json()
    assert owner.delete(f"/api/tasks/{task['id']}").status_code == 204
    expected = [
        ("task.created", task["id"], editor.user_id),
        ("task.updated", task["id"], owner.user_id),
        ("task.updated", task["id"], editor.user_id),
        ("task.deleted", task["id"], owner.user_id),
    ]
    feeds = {}
    for user in (owner, editor, viewer):
        feed = read_feed(user, cursors[user.user_id])
        assert [(c["type"], c["id"], c["actor"]) for c in feed] == expected, user.user_id
        assert all(set(change) == EVENT_FIELDS for change in feed)
        feeds[user.user_id] = [(c["type"], c["data"]) for c in feed]
    assert len({str(feed) for feed in feeds.values()}) == 1  # the same changes, the same data
    assert feeds[viewer.user_id][2][1] == completed


def test_changes_of_an_unshared_list_carry_me_as_actor_and_reach_nobody_else(person):
    alone, other = person("alone"), person("other")
    cursor, others = cursor_now(alone), cursor_now(other)
    task = alone.create_task(title="mine")
    alone.patch(f"/api/tasks/{task['id']}", json={"title": "still mine"})
    assert [(c["type"], c["actor"]) for c in read_feed(alone, cursor)] == [
        ("task.created", alone.user_id), ("task.updated", alone.user_id)
    ]
    assert read_feed(other, others) == []


def test_changes_a_cascade_gives_each_member_an_event_per_task(team):
    owner, editor, viewer, list_id = team
    parent = owner.create_task(list_id=list_id, title="parent")
    child = editor.create_task(parent_id=parent["id"], title="child")
    cursor = cursor_now(viewer)
    assert editor.patch(f"/api/tasks/{parent['id']}/complete", json={"completed": True}).status_code == 200
    assert sorted(events_of(read_feed(viewer, cursor), task_ids={parent["id"], child["id"]})) == sorted(
        [("task.updated", parent["id"]), ("task.updated", child["id"])]
    )


# ----------------------------------------------------------------------------- joining


def test_changes_join_gives_a_snapshot_that_reproduces_the_list(team, person):
    owner, editor, _, list_id = team
    parent = owner.create_task(list_id=list_id, title="parent", tags=["home"], due_date="2030-01-01")
    child = editor.create_task(parent_id=parent["id"], title="child", assignee_id=editor.user_id)
    grandchild = owner.create_task(parent_id=child["id"], title="grandchild")
    owner.create_task(list_id=list_id, title="done", completed=True)
    owner.create_task(list_id=list_id, title="weekly", due_date="2030-01-07T09:00:00Z", recurrence={"rrule": "FREQ=WEEKLY"})
    owner.post(f"/api/tasks/{grandchild['id']}/move", json={"parent_id": parent["id"], "to": "top"})
    newcomer = person("newcomer")
    cursor, others = cursor_now(newcomer), {user.user_id: cursor_now(user) for user in (owner, editor)}
    joined = accept(newcomer, invitation(owner, list_id, newcomer, "viewer")["id"])
    assert joined.status_code == 200, joined.text

    feed = read_feed(newcomer, cursor)
    assert (feed[0]["type"], feed[0]["id"], feed[0]["data"]) == ("list.created", list_id, joined.json())
    snapshot = feed[1:]
    assert {c["type"] for c in snapshot} == {"task.created"}
    visible = tasks_by_id(newcomer, list_id=list_id)
    assert {c["id"]: c["data"] for c in snapshot} == visible and len(snapshot) == len(visible)
    order = [c["id"] for c in snapshot]
    for task in visible.values():  # parents before subtasks
        if task["parent_id"] is not None:
            assert order.index(task["parent_id"]) < order.index(task["id"])
    assert_feed_reproduces(newcomer, cursor, list_id)
    for user in (owner, editor):  # the others see the member count change
        updated = [c for c in read_feed(user, others[user.user_id]) if c["type"] == "list.updated" and c["id"] == list_id]
        assert updated and updated[-1]["data"]["member_count"] == 4 and updated[-1]["actor"] == newcomer.user_id


def test_changes_join_of_an_empty_list_is_its_list_created_alone(person):
    owner, newcomer = person("owner"), person("newcomer")
    list_id = create_list(owner)
    cursor = cursor_now(newcomer)
    join(owner, list_id, newcomer, "editor")
    assert [(c["type"], c["id"]) for c in read_feed(newcomer, cursor)] == [("list.created", list_id)]


# ----------------------------------------------------------------------------- leaving sight


@pytest.mark.parametrize("how", ["removed", "left"])
def test_changes_a_member_who_stops_seeing_a_list_gets_list_deleted_and_nothing_after(team, how):
    owner, editor, viewer, list_id = team
    assigned = owner.create_task(list_id=list_id, title="assigned", assignee_id=editor.user_id)
    cursor, owner_cursor = cursor_now(editor), cursor_now(owner)
    by = owner if how == "removed" else editor
    assert remove_member(by, list_id, editor.user_id).status_code == 204
    owner.create_task(list_id=list_id, title="after")
    owner.patch(f"/api/tasks/{assigned['id']}", json={"title": "renamed after"})
    owner.patch(f"/api/lists/{list_id}", json={"name": "Renamed after"})

    feed = read_feed(editor, cursor)
    about_list = events_of(feed, list_id=list_id, task_ids={assigned["id"]})
    assert ("list.deleted", list_id) in about_list
    assert about_list[about_list.index(("list.deleted", list_id)) + 1:] == []
    assert replay(feed).tasks_of(list_id) == {}
    # The others: the member count, and the cleared assignment (one task.updated), by the one who acted.
    owners = [(c["type"], c["id"], c["actor"]) for c in read_feed(owner, owner_cursor)]
    assert ("task.updated", assigned["id"], by.user_id) in owners
    assert ("list.updated", list_id, by.user_id) in owners
    assert replay(read_feed(owner, owner_cursor)).tasks[assigned["id"]]["assignee_id"] is None


def test_changes_deleting_a_shared_list_gives_every_member_each_task_deleted_then_list_deleted(team):
    owner, editor, viewer, list_id = team
    parent = owner.create_task(list_id=list_id, title="parent")
    child = editor.create_task(parent_id=parent["id"], title="child")
    cursors = {user.user_id: cursor_now(user) for user in (owner, editor, viewer)}
    assert owner.delete(f"/api/lists/{list_id}", params={"cascade": "true"}).status_code == 204
    for user in (owner, editor, viewer):
        feed = read_feed(user, cursors[user.user_id])
        assert sorted((c["type"], c["id"]) for c in feed[:-1]) == sorted([("task.deleted", parent["id"]), ("task.deleted", child["id"])])
        assert (feed[-1]["type"], feed[-1]["id"], feed[-1]["actor"]) == ("list.deleted", list_id, owner.user_id)


@pytest.fixture
def two_lists(person):
    """List A (owner, `both` and `a_only`) and list B (owner, `both` and `b_only`), A holding a task
    with a subtask: (people by name, A, B, task, subtask)."""
    people = {name: person(name) for name in ("owner", "both", "a_only", "b_only")}
    owner = people["owner"]
    a, b = create_list(owner, "A"), create_list(owner, "B")
    join(owner, a, people["both"], "editor")
    join(owner, a, people["a_only"], "editor")
    join(owner, b, people["both"], "editor")
    join(owner, b, people["b_only"], "viewer")
    task = owner.create_task(list_id=a, title="moving")
    subtask = owner.create_task(parent_id=task["id"], title="moving along")
    return people, a, b, task, subtask


@pytest.mark.parametrize("route", ["move", "PATCH"])
@pytest.mark.parametrize("mover", ["owner", "both"])
def test_changes_a_move_between_lists_is_deleted_created_or_updated_per_member(two_lists, route, mover):
    people, a, b, task, subtask = two_lists
    cursors = {name: cursor_now(user) for name, user in people.items()}
    if route == "move":
        response = people[mover].post(f"/api/tasks/{task['id']}/move", json={"list_id": b})
    else:
        response = people[mover].patch(f"/api/tasks/{task['id']}", json={"list_id": b})
    assert response.status_code == 200, response.text
    moved = {task["id"], subtask["id"]}
    expected = {"owner": "task.updated", "both": "task.updated", "a_only": "task.deleted", "b_only": "task.created"}
    for name, kind in expected.items():
        feed = read_feed(people[name], cursors[name])
        seen = [(c["type"], c["id"], c["actor"]) for c in feed if c["id"] in moved and c["type"].startswith("task.")]
        assert sorted(seen) == sorted((kind, i, people[mover].user_id) for i in moved), name  # one event per task
        if kind != "task.deleted":  # a parent comes into sight (or changes) before its subtask
            assert [i for _, i, _ in seen] == [task["id"], subtask["id"]], name
        if kind != "task.deleted":
            assert [c["data"]["list_id"] for c in feed if c["id"] in moved] == [b, b]
    for name in ("owner", "both", "b_only"):  # B held nothing before: the feed since then is all of it
        assert replay(read_feed(people[name], cursors[name])).tasks_of(b) == tasks_by_id(people[name], list_id=b)
    assert replay(read_feed(people["a_only"], cursors["a_only"])).tasks == {}


def test_changes_a_member_who_joined_before_the_move_reproduces_both_lists(two_lists, person):
    people, a, b, task, _ = two_lists
    late = person("late")
    cursor = cursor_now(late)
    join(people["owner"], b, late, "viewer")
    people["both"].post(f"/api/tasks/{task['id']}/move", json={"list_id": b})
    people["both"].post(f"/api/tasks/{task['id']}/move", json={"list_id": a})
    people["owner"].create_task(list_id=b, title="stays in B")
    assert_feed_reproduces(late, cursor, b)
    assert replay(read_feed(late, cursor)).tasks_of(a) == {}


# ----------------------------------------------------------------------------- roles and transfer


def test_changes_a_role_change_is_list_updated_with_the_new_role_in_that_members_feed(team):
    owner, editor, _, list_id = team
    cursor = cursor_now(editor)
    assert set_role(owner, list_id, editor.user_id, "viewer").status_code == 200
    updates = [c for c in read_feed(editor, cursor) if c["type"] == "list.updated" and c["id"] == list_id]
    assert updates and updates[-1]["data"]["role"] == "viewer" and updates[-1]["actor"] == owner.user_id
    assert updates[-1]["data"] == read_list(editor, list_id)


def test_changes_a_transfer_is_list_updated_in_every_members_feed_with_their_own_role(team):
    owner, editor, viewer, list_id = team
    cursors = {user.user_id: cursor_now(user) for user in (owner, editor, viewer)}
    assert owner.post(f"/api/lists/{list_id}/transfer", json={"user_id": viewer.user_id}).status_code == 200
    for user, role in ((owner, "editor"), (editor, "editor"), (viewer, "owner")):
        updates = [c for c in read_feed(user, cursors[user.user_id]) if c["type"] == "list.updated" and c["id"] == list_id]
        assert updates, user.user_id
        assert updates[-1]["data"]["owner_id"] == viewer.user_id and updates[-1]["data"]["role"] == role


# ----------------------------------------------------------------------------- the feed alone


def test_changes_each_members_feed_reproduces_the_list_after_every_kind_of_write(person):
    owner, editor, viewer = person("owner"), person("editor"), person("viewer")
    cursors = {user.user_id: cursor_now(user) for user in (owner, editor, viewer)}
    list_id, private = create_list(owner, "Shared"), create_list(owner, "Private")
    owner.create_task(list_id=list_id, title="before anyone joined")
    join(owner, list_id, editor, "editor")
    join(owner, list_id, viewer, "viewer")
    parent = editor.create_task(list_id=list_id, title="parent", tags=["x"])
    child = owner.create_task(parent_id=parent["id"], title="child", assignee_id=editor.user_id)
    weekly = editor.create_task(list_id=list_id, title="weekly", due_date="2030-01-07T09:00:00Z", recurrence={"rrule": "FREQ=WEEKLY"})
    hidden = owner.create_task(list_id=private, title="comes into sight")
    editor.post(f"/api/tasks/{weekly['id']}/toggle")  # completes it and creates its next occurrence
    owner.patch(f"/api/tasks/{parent['id']}", json={"completed": True})  # with its child
    owner.post(f"/api/tasks/{hidden['id']}/move", json={"list_id": list_id, "after_id": parent["id"]})
    owner.patch(f"/api/tasks/{child['id']}", json={"parent_id": None, "completed": False})
    editor.post(f"/api/tasks/{child['id']}/move", json={"to": "top"})
    owner.post(f"/api/tasks/{parent['id']}/move", json={"list_id": private})  # out of the members' sight
    editor.delete("/api/tasks", params={"completed": "true"})
    owner.patch(f"/api/lists/{list_id}", json={"name": "Renamed", "color": "#123456"})
    set_role(owner, list_id, viewer.user_id, "editor")
    for user in (owner, editor, viewer):
        assert_feed_reproduces(user, cursors[user.user_id], list_id)


# ----------------------------------------------------------------------------- reminders


def test_changes_reminder_due_goes_to_the_feed_of_whom_it_fires_for_with_no_actor(team, database_url, sql_engine):
    owner, editor, viewer, list_id = team
    at = soon(hours=2)
    assigned = owner.create_task(list_id=list_id, title="assigned", reminders=[{"at": z(at)}], assignee_id=editor.user_id)
    owners = owner.create_task(list_id=list_id, title="owner's", reminders=[{"at": z(at)}])
    editors = editor.create_task(list_id=list_id, title="editor's", reminders=[{"at": z(at)}])
    cursors = {user.user_id: cursor_now(user) for user in (owner, editor, viewer)}
    fire(database_url, sql_engine, at + timedelta(seconds=1))

    def due(user) -> list[tuple]:
        return sorted((c["id"], c["actor"]) for c in read_feed(user, cursors[user.user_id]) if c["type"] == "reminder.due")

    assert due(editor) == sorted([(assigned["id"], None), (editors["id"], None)])
    assert due(owner) == [(owners["id"], None)]
    assert due(viewer) == []


def test_a_reminder_of_a_task_whose_creator_left_fires_for_no_one_until_someone_is_assigned(team, database_url, sql_engine):
    owner, editor, viewer, list_id = team
    at = soon(hours=2)
    left_behind = editor.create_task(list_id=list_id, title="editor's", reminders=[{"at": z(at)}])
    assert remove_member(editor, list_id, editor.user_id).status_code == 204
    cursors = {user.user_id: cursor_now(user) for user in (owner, editor, viewer)}
    fire(database_url, sql_engine, at + timedelta(seconds=1))
    for user in (owner, editor, viewer):
        assert [c for c in read_feed(user, cursors[user.user_id]) if c["type"] == "reminder.due"] == []

    later = soon(hours=3)
    assigned = owner.patch(f"/api/tasks/{left_behind['id']}", json={"assignee_id": owner.user_id, "reminders": [{"at": z(later)}]})
    assert assigned.status_code == 200, assigned.text
    fire(database_url, sql_engine, later + timedelta(seconds=1))
    due = [c["id"] for c in read_feed(owner, cursors[owner.user_id]) if c["type"] == "reminder.due"]
    assert due == [left_behind["id"]]
