"""Manual order under real concurrency (the real service, two workers, requests released together):
two moves into one gap both land in it; a move racing the delete of its neighbour is a clean 422
or a correct order, never a 500 or a lost task."""
import uuid
from collections import Counter

import httpx
import pytest

from conftest import TEST_SECRET, mint_token
from live_server import LiveServer
from test_concurrency import overlapped, run_together

pytestmark = pytest.mark.slow

ROUNDS = 4


@pytest.fixture(scope="module")
def live(backend, scratch_database):
    with LiveServer(scratch_database(backend), secret=TEST_SECRET, workers=2, env={"LOG_LEVEL": "WARNING"}) as server:
        yield server


@pytest.fixture
def user(live):
    user_id = f"order_{uuid.uuid4().hex[:10]}"
    http = httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {mint_token(user_id)}"}, timeout=30.0)
    yield http
    http.close()


def new_list(http: httpx.Client) -> int:
    response = http.post("/api/lists", json={"name": "race"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def add(http: httpx.Client, list_id: int, title: str) -> int:
    response = http.post("/api/tasks", json={"title": title, "list_id": list_id})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def order(http: httpx.Client, list_id: int) -> list[int]:
    response = http.get(f"/api/tasks?list_id={list_id}&sort=position")
    assert response.status_code == 200, response.text
    return [task["id"] for task in response.json()]


def test_two_moves_into_one_gap_both_land_in_it(live, user):
    overlaps = 0
    for _ in range(ROUNDS):
        list_id = new_list(user)
        above, below = add(user, list_id, "above"), add(user, list_id, "below")
        movers = [add(user, list_id, f"mover {i}") for i in range(2)]
        replies = run_together(2, lambda http, i: http.post(f"/api/tasks/{movers[i]}/move", json={"after_id": above}), user)
        overlaps += overlapped(replies)
        assert [reply.status for reply in replies] == [200, 200], [reply.body for reply in replies]
        final = order(user, list_id)
        assert final[0] == above and final[-1] == below and set(final[1:3]) == set(movers), final
    assert overlaps >= 1, "the requests never overlapped: this test proved nothing"


@pytest.mark.parametrize("neighbour", ["reference", "next"])
def test_a_move_racing_the_delete_of_its_neighbour_is_a_clean_422_or_a_correct_order(live, user, neighbour):
    outcomes: Counter = Counter()
    overlaps = 0
    for _ in range(ROUNDS):
        list_id = new_list(user)
        first, second, third = (add(user, list_id, name) for name in ("first", "second", "third"))
        mover = add(user, list_id, "mover")
        doomed = first if neighbour == "reference" else second

        def act(http: httpx.Client, index: int) -> httpx.Response:
            if index == 0:
                return http.post(f"/api/tasks/{mover}/move", json={"after_id": first})
            return http.delete(f"/api/tasks/{doomed}")

        replies = run_together(2, act, user)
        overlaps += overlapped(replies)
        moved, deleted = replies
        assert deleted.status == 204, deleted.body
        assert moved.status in (200, 422), moved.body
        outcomes[moved.status] += 1
        final = order(user, list_id)
        survivors = [task for task in (first, second, third) if task != doomed]
        assert sorted(final) == sorted([*survivors, mover]), final  # nothing lost, nothing extra
        if moved.status == 422:
            assert moved.body["errors"][0]["field"] == "after_id"
            assert final == [*survivors, mover]  # unchanged
        elif neighbour == "next":
            assert final == [first, mover, third]
        else:  # moved after `first`, which is gone: right where it was
            assert final == [mover, second, third]
    assert overlaps >= 1, "the requests never overlapped: this test proved nothing"
