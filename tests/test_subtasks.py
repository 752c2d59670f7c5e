"""Subtasks and manual order (contract §7, §8): placement, moves, the tree listing, cascade delete
and cascade complete. On SQLite and PostgreSQL."""
import pytest

from conftest import ApiUser
from models import POSITION_LENGTH


def make_list(user: ApiUser, name: str = "Work") -> int:
    response = user.post("/api/lists", json={"name": name})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def tree_ids(user: ApiUser, query: str = "") -> list[int]:
    response = user.get(f"/api/tasks?sort=position&limit=500{query}")
    assert response.status_code == 200, response.text
    return [task["id"] for task in response.json()]


def move(user: ApiUser, task_id: int, **body) -> dict:
    response = user.post(f"/api/tasks/{task_id}/move", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def errors_of(response) -> set[str]:
    assert response.status_code == 422, response.text
    return {error["field"] for error in response.json()["errors"]}


@pytest.fixture
def family(alice):
    """In a list of its own: a (b (c (d)), e), f."""
    list_id = make_list(alice)
    a = alice.create_task(title="a", list_id=list_id)
    b = alice.create_task(title="b", parent_id=a["id"])
    c = alice.create_task(title="c", parent_id=b["id"])
    d = alice.create_task(title="d", parent_id=c["id"])
    e = alice.create_task(title="e", parent_id=a["id"])
    f = alice.create_task(title="f", list_id=list_id)
    return list_id, {task["title"]: task["id"] for task in (a, b, c, d, e, f)}


# ---------------------------------------------------------------- placement on create


def test_new_tasks_go_to_the_end_and_subtasks_are_in_their_parents_list(alice, family):
    list_id, ids = family
    assert tree_ids(alice, f"&list_id={list_id}") == [ids[name] for name in "abcdef"]
    child = alice.get(f"/api/tasks/{ids['b']}").json()
    assert child["list_id"] == list_id and child["parent_id"] == ids["a"]
    explicit = alice.post("/api/tasks", json={"title": "g", "parent_id": ids["a"], "list_id": list_id})
    assert explicit.status_code == 201 and explicit.json()["list_id"] == list_id


def test_positions_compare_byte_wise_and_grow_at_the_end(alice):
    list_id = make_list(alice)
    positions = [alice.create_task(list_id=list_id)["position"] for _ in range(70)]
    assert positions == sorted(positions) and len(set(positions)) == 70


def test_a_subtask_in_another_list_than_its_parent_is_422_naming_list_id(alice, family):
    list_id, ids = family
    response = alice.post("/api/tasks", json={"title": "x", "parent_id": ids["a"], "list_id": make_list(alice, "Other")})
    assert errors_of(response) == {"list_id"}


def test_parent_that_is_not_yours_is_422_naming_parent_id(alice, bob):
    bobs = bob.create_task()
    for parent in (bobs["id"], 2**31 - 1, 2**31 + 7):
        assert errors_of(alice.post("/api/tasks", json={"title": "x", "parent_id": parent})) == {"parent_id"}
    assert alice.get("/api/tasks").json() == []
    assert bob.get(f"/api/tasks?parent_id={bobs['id']}").json() == []


def test_a_fifth_level_is_422_and_nothing_is_created(alice, family):
    _, ids = family
    response = alice.post("/api/tasks", json={"title": "too deep", "parent_id": ids["d"]})
    assert errors_of(response) == {"parent_id"}
    assert "4 levels" in response.json()["errors"][0]["message"]
    assert alice.get(f"/api/tasks?parent_id={ids['d']}").json() == []


@pytest.mark.parametrize("body", [{"list_id": True}, {"list_id": "3"}, {"parent_id": 0}, {"parent_id": -2}, {"list_id": None, "parent_id": 1.5}])
def test_ids_in_a_body_are_positive_integers(alice, body):
    response = alice.post("/api/tasks", json={"title": "x", **body})
    assert response.status_code == 422


# ---------------------------------------------------------------- listing


def test_parent_id_filter_lists_direct_subtasks_and_none_lists_top_level(alice, family):
    list_id, ids = family
    children = alice.get(f"/api/tasks?parent_id={ids['a']}&sort=position").json()
    assert [task["id"] for task in children] == [ids["b"], ids["e"]]
    top = {task["id"] for task in alice.get(f"/api/tasks?parent_id=none&list_id={list_id}").json()}
    assert top == {ids["a"], ids["f"]}
    assert alice.get(f"/api/tasks?parent_id={ids['d']}").json() == []
    assert alice.get("/api/tasks?parent_id=NONE").status_code == 200
    assert errors_of(alice.get("/api/tasks?parent_id=abc")) == {"parent_id"}


def test_another_users_parent_in_a_filter_is_404(alice, bob):
    bobs = bob.create_task()
    bob.create_task(parent_id=bobs["id"])
    response = alice.get(f"/api/tasks?parent_id={bobs['id']}")
    assert response.status_code == 404 and response.json()["error_code"] == "TASK_NOT_FOUND"


def test_tree_order_spans_lists_in_their_order(alice, family):
    list_id, ids = family
    inbox_task = alice.create_task(title="in the inbox")
    everything = tree_ids(alice)
    assert everything == [inbox_task["id"], *(ids[name] for name in "abcdef")]
    alice.post(f"/api/lists/{list_id}/move", json={"to": "top"})
    assert tree_ids(alice) == [*(ids[name] for name in "abcdef"), inbox_task["id"]]


def test_tree_order_with_filters_and_pages(alice, family):
    list_id, ids = family
    alice.patch(f"/api/tasks/{ids['c']}", json={"priority": "high"})
    alice.patch(f"/api/tasks/{ids['e']}", json={"priority": "high"})
    response = alice.get(f"/api/tasks?sort=position&list_id={list_id}&priority=high")
    assert [task["id"] for task in response.json()] == [ids["c"], ids["e"]]
    assert response.headers["X-Total-Count"] == "2"
    page = alice.get(f"/api/tasks?sort=position&list_id={list_id}&limit=2&offset=2")
    assert [task["id"] for task in page.json()] == [ids["c"], ids["d"]]
    assert page.headers["X-Total-Count"] == "6" and 'rel="next"' in page.headers["Link"]


def test_sort_position_has_no_desc(alice):
    assert errors_of(alice.get("/api/tasks?sort=position&order=desc")) == {"order"}
    assert alice.get("/api/tasks?sort=position&order=asc").status_code == 200


def test_ties_between_equal_positions_are_broken_by_id_with_subtrees_kept_together(alice, sql_engine, family):
    """Two concurrent moves into one gap give equal positions: each keeps its subtree under it."""
    list_id, ids = family
    import sqlalchemy as sa

    with sql_engine.begin() as connection:
        position = connection.execute(sa.text("SELECT position FROM task WHERE id = :id"), {"id": ids["a"]}).scalar()
        connection.execute(sa.text("UPDATE task SET position = :p WHERE id = :id"), {"p": position, "id": ids["f"]})
    assert tree_ids(alice, f"&list_id={list_id}") == [ids[name] for name in "abcdef"]
    # A position that a longer one extends sorts first, subtree included ("a0" < "a0V").
    with sql_engine.begin() as connection:
        connection.execute(sa.text("UPDATE task SET position = :p WHERE id = :id"), {"p": position + "V", "id": ids["f"]})
    assert tree_ids(alice, f"&list_id={list_id}") == [ids[name] for name in "abcdef"]


# ---------------------------------------------------------------- moves


def test_move_after_before_top_bottom_keeps_ids(alice):
    list_id = make_list(alice)
    a, b, c, d = (alice.create_task(title=t, list_id=list_id)["id"] for t in "abcd")
    assert move(alice, d, after_id=a)["id"] == d
    assert tree_ids(alice, f"&list_id={list_id}") == [a, d, b, c]
    move(alice, a, before_id=c)
    assert tree_ids(alice, f"&list_id={list_id}") == [d, b, a, c]
    move(alice, c, to="top")
    assert tree_ids(alice, f"&list_id={list_id}") == [c, d, b, a]
    move(alice, c)
    assert tree_ids(alice, f"&list_id={list_id}") == [d, b, a, c]
    move(alice, b, after_id=c)
    assert tree_ids(alice, f"&list_id={list_id}") == [d, a, c, b]


def test_drag_and_drop_between_two_tasks_sends_after_id_of_the_one_above(alice):
    list_id = make_list(alice)
    first, second, third = (alice.create_task(list_id=list_id)["id"] for _ in range(3))
    moved = move(alice, third, after_id=first)
    order = alice.get(f"/api/tasks?list_id={list_id}&sort=position").json()
    assert [task["id"] for task in order] == [first, third, second]
    assert order[0]["position"] < moved["position"] < order[2]["position"]


def test_move_writes_only_the_moved_task(alice):
    list_id = make_list(alice)
    tasks = [alice.create_task(list_id=list_id) for _ in range(4)]
    before = {task["id"]: alice.get(f"/api/tasks/{task['id']}").headers["ETag"] for task in tasks}
    move(alice, tasks[3]["id"], after_id=tasks[0]["id"])
    for task in tasks[:3]:
        assert alice.get(f"/api/tasks/{task['id']}").headers["ETag"] == before[task["id"]]
    assert alice.get(f"/api/tasks/{tasks[3]['id']}").headers["ETag"] != before[tasks[3]["id"]]


def test_move_with_subtree_to_another_list_and_parent(alice, family):
    list_id, ids = family
    other = make_list(alice, "Other")
    target = alice.create_task(title="target", list_id=other)
    etag_of_d = alice.get(f"/api/tasks/{ids['d']}").headers["ETag"]
    moved = move(alice, ids["b"], parent_id=target["id"])
    assert moved["list_id"] == other and moved["parent_id"] == target["id"]
    for name in "cd":
        assert alice.get(f"/api/tasks/{ids[name]}").json()["list_id"] == other
    assert alice.get(f"/api/tasks/{ids['d']}").headers["ETag"] != etag_of_d
    assert tree_ids(alice, f"&list_id={other}") == [target["id"], ids["b"], ids["c"], ids["d"]]
    assert tree_ids(alice, f"&list_id={list_id}") == [ids["a"], ids["e"], ids["f"]]
    counts = {row["id"]: row["task_count"] for row in alice.get("/api/lists").json()}
    assert counts[other] == 4 and counts[list_id] == 3


def test_move_to_another_list_without_parent_id_goes_to_its_top_level(alice, family):
    _, ids = family
    other = make_list(alice, "Other")
    moved = move(alice, ids["c"], list_id=other)
    assert moved["parent_id"] is None and moved["list_id"] == other
    assert tree_ids(alice, f"&list_id={other}") == [ids["c"], ids["d"]]


def test_move_parent_null_goes_to_top_level_of_the_same_list(alice, family):
    list_id, ids = family
    moved = move(alice, ids["c"], parent_id=None, after_id=ids["a"])
    assert moved["parent_id"] is None and moved["list_id"] == list_id
    assert tree_ids(alice, f"&list_id={list_id}") == [ids[name] for name in "abecdf"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"parent_id": "self"}, "parent_id"),
        ({"parent_id": "d"}, "parent_id"),
        ({"after_id": "f"}, "after_id"),  # not a sibling of b at its place (under a)
        ({"before_id": "c"}, "before_id"),
        ({"after_id": "b"}, "after_id"),
        ({"after_id": "e", "to": "top"}, "to"),
        ({"after_id": "e", "before_id": "e"}, "to"),
        ({"to": "middle"}, "to"),
        ({"parent_id": "g"}, "parent_id"),  # b, c, d under g (under f): 5 levels
        ({"list_id": "other", "parent_id": "a"}, "list_id"),
    ],
)
def test_invalid_moves_are_422_and_change_nothing(alice, family, body, field):
    list_id, ids = family
    g = alice.create_task(title="g", parent_id=ids["f"])
    other = make_list(alice, "Other")
    names = {**ids, "g": g["id"], "self": ids["b"], "other": other}
    resolved = {key: names.get(value, value) if isinstance(value, str) and key != "to" else value for key, value in body.items()}
    before = alice.get(f"/api/tasks?list_id={list_id}&sort=position").json()
    assert field in errors_of(alice.post(f"/api/tasks/{ids['b']}/move", json=resolved))
    assert alice.get(f"/api/tasks?list_id={list_id}&sort=position").json() == before


def test_moves_naming_another_users_things_are_422(alice, bob, family):
    _, ids = family
    bobs_list = make_list(bob, "Bob's")
    bobs_task = bob.create_task(list_id=bobs_list)
    assert errors_of(alice.post(f"/api/tasks/{ids['f']}/move", json={"list_id": bobs_list})) == {"list_id"}
    assert errors_of(alice.post(f"/api/tasks/{ids['f']}/move", json={"parent_id": bobs_task["id"]})) == {"parent_id"}
    assert errors_of(alice.post(f"/api/tasks/{ids['f']}/move", json={"after_id": bobs_task["id"]})) == {"after_id"}
    response = bob.post(f"/api/tasks/{ids['f']}/move", json={"to": "top"})
    assert response.status_code == 404 and response.json()["error_code"] == "TASK_NOT_FOUND"
    assert bob.get(f"/api/tasks?list_id={bobs_list}").json()[0]["id"] == bobs_task["id"]


def test_move_honours_if_match(alice, family):
    list_id, ids = family
    etag = alice.get(f"/api/tasks/{ids['f']}").headers["ETag"]
    alice.patch(f"/api/tasks/{ids['f']}", json={"title": "changed"})
    response = alice.post(f"/api/tasks/{ids['f']}/move", json={"to": "top"}, headers={"If-Match": etag})
    assert response.status_code == 412
    assert tree_ids(alice, f"&list_id={list_id}")[-1] == ids["f"]
    fresh = alice.get(f"/api/tasks/{ids['f']}").headers["ETag"]
    assert alice.post(f"/api/tasks/{ids['f']}/move", json={"to": "top"}, headers={"If-Match": fresh}).status_code == 200


def test_move_path_spelling_with_another_user_is_403(alice, bob, family):
    _, ids = family
    assert alice.post(f"/api/{alice.user_id}/tasks/{ids['f']}/move", json={"to": "top"}).status_code == 200
    assert alice.post(f"/api/{bob.user_id}/tasks/{ids['f']}/move", json={"to": "top"}).status_code == 403


def test_patch_list_id_or_parent_id_moves_to_the_end_and_the_same_place_moves_nothing(alice, family):
    list_id, ids = family
    other = make_list(alice, "Other")
    first = alice.create_task(list_id=other)
    patched = alice.patch(f"/api/tasks/{ids['b']}", json={"list_id": other, "title": "b moved"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["title"] == "b moved" and patched.json()["parent_id"] is None
    assert tree_ids(alice, f"&list_id={other}") == [first["id"], ids["b"], ids["c"], ids["d"]]
    put = alice.put(f"/api/tasks/{ids['f']}", json={"parent_id": ids["a"]})
    assert put.json()["parent_id"] == ids["a"]
    assert tree_ids(alice, f"&list_id={list_id}") == [ids["a"], ids["e"], ids["f"]]
    position = alice.get(f"/api/tasks/{ids['e']}").json()["position"]
    same = alice.patch(f"/api/tasks/{ids['e']}", json={"list_id": list_id, "parent_id": ids["a"], "title": "e2"})
    assert same.json()["position"] == position and same.json()["title"] == "e2"
    assert errors_of(alice.patch(f"/api/tasks/{ids['a']}", json={"parent_id": ids["a"]})) == {"parent_id"}
    assert errors_of(alice.patch(f"/api/tasks/{ids['a']}", json={"list_id": None})) == {"list_id"}


def test_a_thousand_moves_to_the_same_spot_keep_the_exact_order(alice):
    list_id = make_list(alice)
    top, bottom = alice.create_task(title="top", list_id=list_id)["id"], alice.create_task(title="bottom", list_id=list_id)["id"]
    movers = [alice.create_task(title=f"m{i}", list_id=list_id)["id"] for i in range(4)]
    expected = [top, bottom, *movers]
    longest = 0
    for step in range(1000):
        task_id = movers[step % len(movers)]
        moved = move(alice, task_id, after_id=top)  # always into the gap right below `top`
        longest = max(longest, len(moved["position"]))
        expected.remove(task_id)
        expected.insert(1, task_id)
    assert tree_ids(alice, f"&list_id={list_id}") == expected
    assert longest <= POSITION_LENGTH // 2, longest


# ---------------------------------------------------------------- cascade delete


def test_deleting_a_task_deletes_its_whole_subtree(alice, family):
    list_id, ids = family
    assert alice.delete(f"/api/tasks/{ids['a']}").status_code == 204
    for name in "abcde":
        response = alice.get(f"/api/tasks/{ids[name]}")
        assert response.status_code == 404 and response.json()["error_code"] == "TASK_NOT_FOUND"
    assert tree_ids(alice, f"&list_id={list_id}") == [ids["f"]]
    assert alice.delete(f"/api/tasks/{ids['a']}").status_code == 404


def test_delete_with_stale_if_match_deletes_nothing(alice, family):
    _, ids = family
    etag = alice.get(f"/api/tasks/{ids['b']}").headers["ETag"]
    alice.patch(f"/api/tasks/{ids['b']}", json={"title": "new"})
    assert alice.delete(f"/api/tasks/{ids['b']}", headers={"If-Match": etag}).status_code == 412
    assert alice.get(f"/api/tasks/{ids['d']}").status_code == 200


def test_clearing_completed_tasks_takes_their_subtrees_and_counts_every_task(alice, family):
    list_id, ids = family
    inbox_done = alice.create_task(completed=True)
    alice.patch(f"/api/tasks/{ids['b']}/complete", json={"completed": True})  # b, c, d
    alice.patch(f"/api/tasks/{ids['d']}/complete", json={"completed": False})  # d open again
    response = alice.delete(f"/api/tasks?completed=true&list_id={list_id}")
    assert response.status_code == 200 and response.json() == {"deleted": 3}
    assert tree_ids(alice, f"&list_id={list_id}") == [ids["a"], ids["e"], ids["f"]]
    assert alice.get(f"/api/tasks/{inbox_done['id']}").status_code == 200
    assert alice.delete("/api/tasks?completed=true").json() == {"deleted": 1}


# ---------------------------------------------------------------- cascade complete

COMPLETIONS = {
    "PATCH": lambda user, path: user.patch(path, json={"completed": True}),
    "PUT": lambda user, path: user.put(path, json={"completed": True, "title": "done"}),
    "toggle": lambda user, path: user.post(path + "/toggle"),
    "complete": lambda user, path: user.patch(path + "/complete"),
    "complete true": lambda user, path: user.patch(path + "/complete", json={"completed": True}),
}


@pytest.mark.parametrize("route", list(COMPLETIONS))
def test_completing_a_task_by_any_route_completes_its_open_subtasks(alice, family, route):
    _, ids = family
    alice.patch(f"/api/tasks/{ids['c']}", json={"completed": True})  # c and d, earlier
    done_earlier = {name: alice.get(f"/api/tasks/{ids[name]}") for name in "cd"}
    open_before = {name: alice.get(f"/api/tasks/{ids[name]}") for name in "be"}
    response = COMPLETIONS[route](alice, f"/api/tasks/{ids['a']}")
    assert response.status_code == 200, response.text
    assert response.json()["completed"] is True
    for name, before in open_before.items():
        after = alice.get(f"/api/tasks/{ids[name]}")
        assert after.json()["completed"] is True and after.json()["completed_at"] is not None
        assert after.headers["ETag"] != before.headers["ETag"]
        assert after.json()["updated_at"] >= before.json()["updated_at"]
    for name, before in done_earlier.items():  # already completed: untouched
        after = alice.get(f"/api/tasks/{ids[name]}")
        assert after.headers["ETag"] == before.headers["ETag"] and after.json() == before.json()
    assert alice.get(f"/api/tasks/{ids['f']}").json()["completed"] is False


def test_reopening_reopens_nothing_else_and_a_subtask_can_be_done_alone(alice, family):
    _, ids = family
    alice.post(f"/api/tasks/{ids['a']}/toggle")
    reopened = alice.post(f"/api/tasks/{ids['a']}/toggle")
    assert reopened.json()["completed"] is False
    assert all(alice.get(f"/api/tasks/{ids[name]}").json()["completed"] for name in "bcde")
    alice.patch(f"/api/tasks/{ids['c']}", json={"completed": False})
    assert alice.get(f"/api/tasks/{ids['c']}").json()["completed"] is False
    assert alice.get(f"/api/tasks/{ids['d']}").json()["completed"] is True
    # Completing an already completed task does not re-complete a subtask reopened alone.
    alice.patch(f"/api/tasks/{ids['b']}/complete", json={"completed": True})
    alice.patch(f"/api/tasks/{ids['d']}/complete", json={"completed": False})
    alice.put(f"/api/tasks/{ids['b']}", json={"completed": True, "title": "b again"})
    assert alice.get(f"/api/tasks/{ids['d']}").json()["completed"] is False


def test_a_stale_if_match_on_completion_completes_nothing(alice, family):
    _, ids = family
    etag = alice.get(f"/api/tasks/{ids['a']}").headers["ETag"]
    alice.patch(f"/api/tasks/{ids['a']}", json={"title": "changed"})
    assert alice.post(f"/api/tasks/{ids['a']}/toggle", headers={"If-Match": etag}).status_code == 412
    assert not any(alice.get(f"/api/tasks/{ids[name]}").json()["completed"] for name in "abcde")


def test_stats_narrow_to_a_list(alice, family):
    list_id, ids = family
    alice.create_task(priority="high")
    alice.patch(f"/api/tasks/{ids['c']}", json={"completed": True})
    stats = alice.get(f"/api/tasks/stats?list_id={list_id}").json()
    assert (stats["total"], stats["completed"], stats["pending"]) == (6, 2, 4)
    assert alice.get("/api/tasks/stats").json()["total"] == 7
    empty = make_list(alice, "Empty")
    assert alice.get(f"/api/tasks/stats?list_id={empty}").json()["total"] == 0
