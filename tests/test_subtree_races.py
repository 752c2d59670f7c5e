"""Requests on one subtree at the same moment (§8): adding subtasks, completing, deleting and moving
it, through two worker processes. Each round releases the requests together (a barrier), then checks
that the rules hold as if they had run one after the other: subtasks in their parent's list, at most
four levels, every task in its list's tree order, and no 503 or 409 for the collision itself.

PostgreSQL runs ROUNDS rounds (the races it had failed 6 to 15 rounds in 100); SQLite's single writer
orders every write, so fewer rounds there only check that the same requests keep working.
"""
import uuid
from typing import Any

import httpx
import pytest

from conftest import TEST_SECRET, mint_token
from live_server import LiveServer
from test_concurrency import run_together

pytestmark = pytest.mark.slow

ROUNDS = {"postgres": 100, "sqlite": 15}
MAX_DEPTH = 4


@pytest.fixture(scope="module")
def live(backend, scratch_database):
    with LiveServer(scratch_database(backend), secret=TEST_SECRET, workers=2, env={"LOG_LEVEL": "WARNING"}) as server:
        yield server


@pytest.fixture
def http(live):
    user_id = f"race_{uuid.uuid4().hex[:10]}"
    headers = {"Authorization": f"Bearer {mint_token(user_id)}"}
    with httpx.Client(base_url=live.url, headers=headers, timeout=30.0) as client:
        yield client


def create(http: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = http.post("/api/tasks", json={"title": "t", **fields})
    assert response.status_code == 201, response.text
    return response.json()


def new_list(http: httpx.Client) -> int:
    response = http.post("/api/lists", json={"name": f"l-{uuid.uuid4().hex[:6]}"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def tasks_of(http: httpx.Client, list_id: int) -> list[dict[str, Any]]:
    response = http.get("/api/tasks", params={"list_id": list_id, "sort": "position", "limit": 500})
    assert response.status_code == 200, response.text
    return response.json()


def assert_tree_holds(http: httpx.Client, list_ids: list[int]) -> None:
    """Every task is in its parent's list, at most MAX_DEPTH deep, and the tree order shows every task
    its list counts."""
    everything = {task["id"]: task for task in http.get("/api/tasks", params={"limit": 500}).json()}
    for task in everything.values():
        depth, current = 1, task
        while current["parent_id"] is not None:
            parent = everything[current["parent_id"]]
            assert parent["list_id"] == current["list_id"], f"task {current['id']} is not in its parent's list"
            depth, current = depth + 1, parent
        assert depth <= MAX_DEPTH, f"task {task['id']} is {depth} levels deep"
    for list_id in list_ids:
        listed = http.get(f"/api/lists/{list_id}").json()
        in_tree = tasks_of(http, list_id)
        assert listed["task_count"] == len(in_tree), f"list {list_id} counts tasks its tree order does not show"


def statuses(replies: list[Any]) -> list[int]:
    return [reply.status for reply in replies]


class NoDeadlocks:
    """The service logs each statement the database undid over a collision (and ran again): a
    deadlock answers late (the database waits 1 s before it looks for one) or, in a transaction, 503."""

    def __init__(self, live: LiveServer):
        self.live, self.start = live, len(live.output())

    def check(self) -> None:
        logged = self.live.output()[self.start:]
        assert "DeadlockDetected" not in logged, f"{logged.count('DeadlockDetected')} deadlocks"


def test_subtasks_created_while_their_parent_moves_to_another_list_follow_it(backend, http):
    source, destination = new_list(http), new_list(http)
    for _ in range(ROUNDS[backend]):
        parent = create(http, list_id=source)

        def request(client: httpx.Client, index: int) -> httpx.Response:
            if index == 3:
                return client.post(f"/api/tasks/{parent['id']}/move", json={"list_id": destination})
            return client.post("/api/tasks", json={"title": f"child {index}", "parent_id": parent["id"]})

        replies = run_together(4, request, http)
        assert statuses(replies) == [201, 201, 201, 200], [(r.status, r.body) for r in replies]
        for child in (reply.body for reply in replies[:3]):
            assert http.get(f"/api/tasks/{child['id']}").json()["list_id"] == destination
    assert_tree_holds(http, [source, destination])
    response = http.delete(f"/api/lists/{destination}", params={"cascade": "true"})
    assert response.status_code == 204, response.text


def test_subtasks_created_while_their_ancestor_moves_deeper_never_nest_past_four_levels(backend, http):
    list_id = new_list(http)
    for _ in range(ROUNDS[backend]):
        top = create(http, list_id=list_id)
        middle = create(http, parent_id=top["id"])
        bottom = create(http, parent_id=middle["id"])
        new_parent = create(http, list_id=list_id)

        def request(client: httpx.Client, index: int) -> httpx.Response:
            if index == 3:
                return client.post(f"/api/tasks/{top['id']}/move", json={"parent_id": new_parent["id"]})
            return client.post("/api/tasks", json={"title": f"child {index}", "parent_id": bottom["id"]})

        replies = run_together(4, request, http)
        created, moved = replies[:3], replies[3]
        # One after the other: the creates first (the move is then too deep: 422), or the move first
        # (then each create is too deep: 422). Never both applied, never a 5xx.
        assert all(reply.status in (201, 422) for reply in created), [(r.status, r.body) for r in created]
        assert moved.status in (200, 422), (moved.status, moved.body)
        assert (moved.status == 200) != any(reply.status == 201 for reply in created)
        response = http.delete(f"/api/tasks/{new_parent['id']}")
        assert response.status_code == 204, response.text
        response = http.delete(f"/api/tasks/{top['id']}")
        assert response.status_code in (204, 404), response.text  # gone with new_parent if it moved
    assert_tree_holds(http, [list_id])


@pytest.mark.parametrize("move", [{"to": "top"}, {"parent_id": None}, "to another list"])
def test_completing_a_task_while_its_subtask_moves_is_never_a_503(backend, live, http, move):
    deadlocks = NoDeadlocks(live)
    list_id, other_list = new_list(http), new_list(http)
    body = {"list_id": other_list} if move == "to another list" else move
    for _ in range(ROUNDS[backend]):
        parent = create(http, list_id=list_id)
        child = create(http, parent_id=parent["id"])
        create(http, parent_id=child["id"])
        create(http, parent_id=parent["id"])

        def request(client: httpx.Client, index: int) -> httpx.Response:
            if index == 0:
                return client.patch(f"/api/tasks/{parent['id']}/complete", json={"completed": True})
            return client.post(f"/api/tasks/{child['id']}/move", json=body)

        replies = run_together(2, request, http)
        assert statuses(replies) == [200, 200], [(r.status, r.body) for r in replies]
    assert_tree_holds(http, [list_id, other_list])
    deadlocks.check()


@pytest.mark.parametrize("move", [{"to": "top"}, "to another list"])
def test_deleting_a_task_while_its_subtask_moves_is_never_a_503(backend, live, http, move):
    deadlocks = NoDeadlocks(live)
    list_id, other_list = new_list(http), new_list(http)
    body = {"list_id": other_list} if move == "to another list" else move
    for _ in range(ROUNDS[backend]):
        parent = create(http, list_id=list_id)
        child = create(http, parent_id=parent["id"])
        create(http, parent_id=child["id"])

        def request(client: httpx.Client, index: int) -> httpx.Response:
            if index == 0:
                return client.delete(f"/api/tasks/{parent['id']}")
            return client.post(f"/api/tasks/{child['id']}/move", json=body)

        replies = run_together(2, request, http)
        # One after the other: the move first (200; the delete takes the task too unless it left the
        # list), or the delete first (the move then finds no task: 404).
        assert replies[0].status == 204, (replies[0].status, replies[0].body)
        assert replies[1].status in (200, 404), (replies[1].status, replies[1].body)
    assert_tree_holds(http, [list_id, other_list])
    deadlocks.check()
