"""`sort=position` pages: a page without filters reads only the first top-level tasks and their
subtasks (listing_sql.tree_page_statement); every page is still exactly its slice of the whole tree,
with subtasks under any number of roots, moves, and another user's list never shown."""
import pytest


def tree(user, **params) -> list[int]:
    response = user.get("/api/tasks", params={"sort": "position", **params})
    assert response.status_code == 200, response.text
    return [task["id"] for task in response.json()]


@pytest.fixture
def forest(alice):
    """A list of 6 roots (one moved to the top, one with a subtree 4 deep, one with 3 children)
    and a second list; returns (list_id, the tree in order)."""
    list_id = alice.post("/api/lists", json={"name": "Forest"}).json()["id"]
    roots = [alice.create_task(title=f"root {number}", list_id=list_id)["id"] for number in range(6)]
    chain = [roots[1]]
    for depth in range(3):
        chain.append(alice.create_task(title=f"deep {depth}", parent_id=chain[-1])["id"])
    children = [alice.create_task(title=f"child {number}", parent_id=roots[3])["id"] for number in range(3)]
    grandchild = alice.create_task(title="grandchild", parent_id=children[0])["id"]
    alice.post(f"/api/tasks/{roots[4]}/move", json={"to": "top"})
    alice.post(f"/api/tasks/{children[2]}/move", json={"to": "top"})
    alice.create_task(title="elsewhere")  # the inbox
    expected = [
        roots[4], roots[0], *chain, roots[2], roots[3], children[2], children[0], grandchild, children[1], roots[5],
    ]
    return list_id, expected


def test_tree_pages_are_slices_of_the_whole_tree(alice, forest):
    list_id, expected = forest
    assert tree(alice, list_id=list_id) == expected
    for limit in (1, 2, 3, 5, 500):
        for offset in range(len(expected) + 1):
            assert tree(alice, list_id=list_id, limit=limit, offset=offset) == expected[offset:offset + limit], (limit, offset)


def test_tree_pages_of_all_lists_and_the_top_level(alice, forest):
    list_id, expected = forest
    everything = tree(alice)
    assert everything[1:] == expected or everything[:-1] == expected  # the inbox's task before or after
    for limit in (1, 4, 7):
        assert tree(alice, limit=limit) == everything[:limit]
        assert tree(alice, limit=limit, offset=3) == everything[3:3 + limit]
    top = [task_id for task_id in expected if task_id in set(tree(alice, list_id=list_id, parent_id="none"))]
    assert tree(alice, list_id=list_id, parent_id="none", limit=2, offset=1) == top[1:3]


def test_tree_page_total_and_next_link(alice, forest):
    list_id, expected = forest
    response = alice.get("/api/tasks", params={"sort": "position", "list_id": list_id, "limit": 4})
    assert response.headers["X-Total-Count"] == str(len(expected))
    assert 'rel="next"' in response.headers["Link"]


def test_another_users_list_in_tree_order_is_404(alice, bob, forest):
    list_id, _ = forest
    response = bob.get("/api/tasks", params={"sort": "position", "list_id": list_id})
    assert response.status_code == 404 and response.json()["error_code"] == "LIST_NOT_FOUND"
    bob.create_task(title="bob's")
