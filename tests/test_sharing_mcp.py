"""The MCP tools with sharing (contract §12 on §11), through /mcp with the official SDK's client
against the real service: the tools follow the roles exactly as REST does, list_lists shows the
caller's role, add_task / update_task take assignee_id. On SQLite and PostgreSQL."""
import uuid
from typing import Any

import pytest

from conftest import TEST_SECRET, mint_token
from live_server import LiveServer
from sharing_helpers import (
    BODY_ID_REFUSED,
    create_list,
    cursor_now,
    email_for,
    join,
    read_feed,
)
from test_mcp import Agent

pytestmark = pytest.mark.slow


class Member(Agent):
    """An MCP agent whose token carries an email, with REST methods for the sharing helpers."""

    def __init__(self, base_url: str, prefix: str):
        user_id = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.email = email_for(prefix)
        super().__init__(base_url, user_id, mint_token(user_id, email=self.email, email_verified=True))

    def request(self, method: str, url: str, **kwargs: Any):
        return self.rest.request(method, url, **kwargs)

    def get(self, url: str, **kwargs: Any):
        return self.rest.get(url, **kwargs)

    def post(self, url: str, **kwargs: Any):
        return self.rest.post(url, **kwargs)

    def patch(self, url: str, **kwargs: Any):
        return self.rest.patch(url, **kwargs)

    def delete(self, url: str, **kwargs: Any):
        return self.rest.delete(url, **kwargs)


@pytest.fixture(scope="module")
def server(database_url):
    with LiveServer(database_url, secret=TEST_SECRET) as live:
        yield live


@pytest.fixture
def team(server):
    """Owner, editor, viewer and stranger agents, and the shared list with one task of the owner's."""
    people = {role: Member(server.url, role) for role in ("owner", "editor", "viewer", "stranger")}
    owner = people["owner"]
    list_id = create_list(owner, "Shared")
    join(owner, list_id, people["editor"], "editor")
    join(owner, list_id, people["viewer"], "viewer")
    task = owner.create(list_id=list_id, title="shared", tags=["shared"])
    yield people, list_id, task
    for agent in people.values():
        agent.rest.close()


def unchanged(owner: Member, task: dict, since: str) -> None:
    """The task is as it was, and the owner's feed recorded nothing since `since`."""
    assert owner.rest.get(f"/api/tasks/{task['id']}").json() == task
    assert read_feed(owner, since) == []


def test_list_lists_shows_my_role_the_owner_and_the_member_count(team):
    people, list_id, _ = team
    for role in ("owner", "editor", "viewer"):
        lists = {row["id"]: row for row in people[role].ok("list_lists")["lists"]}
        assert lists[list_id]["role"] == role
        assert lists[list_id]["owner_id"] == people["owner"].user_id and lists[list_id]["member_count"] == 3
    assert list_id not in [row["id"] for row in people["stranger"].ok("list_lists")["lists"]]


def test_list_tasks_get_task_and_task_stats_read_the_shared_list_for_a_viewer(team):
    people, list_id, task = team
    viewer = people["viewer"]
    assert [row["id"] for row in viewer.ok("list_tasks")["tasks"]] == [task["id"]]
    assert viewer.ok("list_tasks", list_id=list_id)["total"] == 1
    assert viewer.ok("get_task", task_id=task["id"])["task"] == task
    assert viewer.ok("task_stats")["total"] == 1 and viewer.ok("task_stats", list_id=list_id)["total"] == 1


@pytest.mark.parametrize(
    "tool, arguments",
    [("update_task", {"title": "changed by a viewer"}), ("update_task", {"assignee_id": None}),
     ("complete_task", {}), ("delete_task", {})],
)
def test_viewer_task_writes_are_forbidden_tool_errors_and_change_nothing(team, tool, arguments):
    people, _, task = team
    since = cursor_now(people["owner"])
    body = people["viewer"].refused(tool, "FORBIDDEN", task_id=task["id"], **arguments)
    assert "editor" in body["detail"].lower()
    unchanged(people["owner"], task, since)


@pytest.mark.parametrize("field", ["list_id", "parent_id"])
def test_viewer_add_task_into_the_list_is_refused_as_rest_refuses_it(team, field):
    people, list_id, task = team
    viewer, owner = people["viewer"], people["owner"]
    arguments = {"title": "planted", field: list_id if field == "list_id" else task["id"]}
    since = cursor_now(owner)
    rest = viewer.rest.post("/api/tasks", json=arguments)
    assert (rest.status_code, rest.json()["error_code"]) == BODY_ID_REFUSED
    body = viewer.refused("add_task", rest.json()["error_code"], **arguments)
    assert body.get("errors") == rest.json().get("errors") and field in {e["field"] for e in body.get("errors", [])}
    assert viewer.task_ids() == [task["id"]]
    unchanged(owner, task, since)


@pytest.mark.parametrize("tool", ["get_task", "update_task", "complete_task", "delete_task"])
def test_stranger_task_tools_are_task_not_found(team, tool):
    people, _, task = team
    since = cursor_now(people["owner"])
    arguments = {"title": "pwned"} if tool == "update_task" else {}
    body = people["stranger"].refused(tool, "TASK_NOT_FOUND", task_id=task["id"], **arguments)
    assert "shared" not in str(body)
    unchanged(people["owner"], task, since)


def test_stranger_list_tools_are_list_not_found_and_add_task_names_list_id(team):
    people, list_id, task = team
    stranger = people["stranger"]
    stranger.refused("list_tasks", "LIST_NOT_FOUND", list_id=list_id)
    stranger.refused("task_stats", "LIST_NOT_FOUND", list_id=list_id)
    body = stranger.refused("add_task", "VALIDATION_ERROR", title="planted", list_id=list_id)
    assert "list_id" in {error["field"] for error in body["errors"]}
    assert stranger.ok("list_tasks")["total"] == 0


def test_editor_tools_write_in_the_shared_list_with_assignee_id(team):
    people, list_id, task = team
    owner, editor = people["owner"], people["editor"]
    since = cursor_now(owner)
    added = editor.ok("add_task", title="by the agent", list_id=list_id, assignee_id=owner.user_id)["task"]
    assert added["assignee_id"] == owner.user_id and added["user_id"] == editor.user_id
    updated = editor.ok("update_task", task_id=task["id"], assignee_id=editor.user_id)["task"]
    assert updated["assignee_id"] == editor.user_id
    assert editor.ok("list_tasks", assignee="me")["total"] == 1
    assert editor.ok("complete_task", task_id=task["id"])["task"]["completed"] is True
    editor.ok("delete_task", task_id=added["id"])
    feed = read_feed(owner, since)
    assert [(c["type"], c["actor"]) for c in feed] == [
        ("task.created", editor.user_id), ("task.updated", editor.user_id),
        ("task.updated", editor.user_id), ("task.deleted", editor.user_id),
    ]


@pytest.mark.parametrize("who", ["viewer", "stranger"])
def test_assignee_id_of_a_viewer_or_stranger_is_a_validation_error_naming_it(team, who):
    people, list_id, task = team
    editor, owner = people["editor"], people["owner"]
    since = cursor_now(owner)
    assignee = people[who].user_id
    body = editor.refused("update_task", "VALIDATION_ERROR", task_id=task["id"], assignee_id=assignee)
    assert "assignee_id" in {error["field"] for error in body["errors"]}
    body = editor.refused("add_task", "VALIDATION_ERROR", title="x", list_id=list_id, assignee_id=assignee)
    assert "assignee_id" in {error["field"] for error in body["errors"]}
    unchanged(owner, task, since)


def test_add_task_and_update_task_schemas_describe_assignee_id(team):
    people, _, _ = team
    tools = people["editor"].tools()
    for name in ("add_task", "update_task"):
        assert "assignee_id" in tools[name].input_schema["properties"], name
