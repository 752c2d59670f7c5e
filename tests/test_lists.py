"""Lists (contract §7): the default list, create/read/update/delete/move, ETags, limits, counts,
Idempotency-Key, both spellings, other users' lists. On SQLite and PostgreSQL."""
import uuid

import pytest
import sqlalchemy as sa

import lists as list_store
import store
from conftest import ApiUser

LIST_FIELDS = {
    "id", "name", "color", "is_default", "position", "owner_id", "role", "member_count", "task_count", "completed_count",
    "created_at", "updated_at",
}


def make_list(user: ApiUser, **fields) -> dict:
    response = user.post("/api/lists", json={"name": "Groceries", **fields})
    assert response.status_code == 201, response.text
    return response.json()


def list_ids(user: ApiUser) -> list[int]:
    response = user.get("/api/lists")
    assert response.status_code == 200, response.text
    return [row["id"] for row in response.json()]


@pytest.mark.parametrize("prefix", ["/api", "/api/{user_id}"])
def test_first_request_sees_exactly_one_default_list(alice, prefix):
    response = alice.get(prefix.format(user_id=alice.user_id) + "/lists")
    assert response.status_code == 200
    [inbox] = response.json()
    assert set(inbox) == LIST_FIELDS
    assert inbox["name"] == "Inbox" and inbox["is_default"] is True
    assert inbox["task_count"] == 0 and inbox["completed_count"] == 0 and inbox["color"] is None
    assert alice.get("/api/lists").json() == [inbox]  # not a second one


def test_new_tasks_go_to_the_default_list(alice):
    task = alice.create_task()
    [inbox] = alice.get("/api/lists").json()
    assert task["list_id"] == inbox["id"] and task["parent_id"] is None
    assert inbox["task_count"] == 1


@pytest.mark.parametrize("prefix", ["/api", "/api/{user_id}"])
def test_create_list_answers_201_with_location_etag_and_goes_to_the_end(alice, prefix):
    base = prefix.format(user_id=alice.user_id)
    response = alice.post(base + "/lists", json={"name": "  Work  ", "color": "#16A34A"})
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["name"] == "Work" and created["color"] == "#16a34a" and created["is_default"] is False
    assert response.headers["Location"] == f"{base}/lists/{created['id']}"
    read = alice.get(f"/api/lists/{created['id']}")
    assert read.json() == created and read.headers["ETag"] == response.headers["ETag"]
    second = make_list(alice, name="Home")
    assert list_ids(alice)[-2:] == [created["id"], second["id"]]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": 5}, "name"),
        ({}, "name"),
        ({"name": "ok", "color": "red"}, "color"),
        ({"name": "ok", "color": "#12345"}, "color"),
        ({"name": "ok", "color": "#1234567"}, "color"),
        ({"name": "ok", "is_default": True}, "is_default"),
        ({"name": "ok", "user_id": "someone"}, "user_id"),
        ({"name": "a\x00b"}, "name"),
    ],
)
def test_invalid_list_body_is_422_naming_the_field_and_creates_nothing(alice, body, field):
    before = list_ids(alice)
    response = alice.post("/api/lists", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error_code"] == "VALIDATION_ERROR"
    assert field in {error["field"] for error in response.json()["errors"]}
    assert list_ids(alice) == before


def test_name_of_100_characters_and_null_color_are_fine(alice):
    created = make_list(alice, name="n" * 100, color=None)
    assert created["name"] == "n" * 100 and created["color"] is None


def test_if_none_match_gives_304_and_the_etag_follows_the_counts(alice):
    groceries = make_list(alice)
    path = f"/api/lists/{groceries['id']}"
    etag = alice.get(path).headers["ETag"]
    assert alice.get(path, headers={"If-None-Match": etag}).status_code == 304
    task = alice.create_task(list_id=groceries["id"])
    after_add = alice.get(path)
    assert after_add.json()["task_count"] == 1 and after_add.headers["ETag"] != etag
    assert alice.get(path, headers={"If-None-Match": etag}).status_code == 200
    alice.post(f"/api/tasks/{task['id']}/toggle")
    after_complete = alice.get(path)
    assert after_complete.json()["completed_count"] == 1
    assert after_complete.headers["ETag"] not in (etag, after_add.headers["ETag"])


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
def test_update_list_is_partial_and_honours_if_match(alice, method):
    groceries = make_list(alice, color="#000000")
    path = f"/api/lists/{groceries['id']}"
    etag = alice.get(path).headers["ETag"]
    renamed = alice.request(method, path, json={"name": "Food"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Food" and renamed.json()["color"] == "#000000"
    assert renamed.headers["ETag"] != etag
    stale = alice.request(method, path, json={"name": "Stale"}, headers={"If-Match": etag})
    assert stale.status_code == 412 and stale.json()["error_code"] == "PRECONDITION_FAILED"
    assert alice.get(path).json()["name"] == "Food"
    fresh = alice.request(method, path, json={"color": None}, headers={"If-Match": renamed.headers["ETag"]})
    assert fresh.status_code == 200 and fresh.json()["color"] is None and fresh.json()["name"] == "Food"


def test_a_task_added_since_the_read_makes_if_match_stale(alice):
    groceries = make_list(alice)
    path = f"/api/lists/{groceries['id']}"
    etag = alice.get(path).headers["ETag"]
    alice.create_task(list_id=groceries["id"])
    assert alice.patch(path, json={"name": "x"}, headers={"If-Match": etag}).status_code == 412
    assert alice.delete(path + "?cascade=true", headers={"If-Match": etag}).status_code == 412
    assert alice.get(path).status_code == 200


def test_default_list_can_be_renamed_and_moved_but_never_deleted(alice):
    inbox = alice.get("/api/lists").json()[0]
    work = make_list(alice, name="Work")
    assert alice.patch(f"/api/lists/{inbox['id']}", json={"name": "Later"}).json()["name"] == "Later"
    moved = alice.post(f"/api/lists/{inbox['id']}/move", json={"after_id": work["id"]})
    assert moved.status_code == 200 and moved.json()["is_default"] is True
    assert list_ids(alice) == [work["id"], inbox["id"]]
    response = alice.delete(f"/api/lists/{inbox['id']}")
    assert response.status_code == 409 and response.json()["error_code"] == "CONFLICT"
    assert "default" in response.json()["detail"]
    assert alice.get(f"/api/lists/{inbox['id']}").status_code == 200


def test_delete_an_empty_list(alice):
    groceries = make_list(alice)
    assert alice.delete(f"/api/lists/{groceries['id']}").status_code == 204
    assert alice.get(f"/api/lists/{groceries['id']}").json()["error_code"] == "LIST_NOT_FOUND"
    assert alice.delete(f"/api/lists/{groceries['id']}").status_code == 404


def test_delete_a_list_with_tasks_is_409_saying_how_many_unless_cascade(alice):
    groceries = make_list(alice)
    parent = alice.create_task(list_id=groceries["id"])
    child = alice.create_task(parent_id=parent["id"])
    grandchild = alice.create_task(parent_id=child["id"])
    other = alice.create_task()
    response = alice.delete(f"/api/lists/{groceries['id']}")
    assert response.status_code == 409 and response.json()["error_code"] == "CONFLICT"
    assert "3 task" in response.json()["detail"] and "cascade=true" in response.json()["detail"]
    assert alice.get(f"/api/tasks/{grandchild['id']}").status_code == 200
    assert alice.delete(f"/api/lists/{groceries['id']}?cascade=true").status_code == 204
    for task in (parent, child, grandchild):
        assert alice.get(f"/api/tasks/{task['id']}").status_code == 404
    assert alice.get(f"/api/tasks/{other['id']}").status_code == 200
    assert alice.get(f"/api/lists/{groceries['id']}").status_code == 404


def test_counts_include_subtasks(alice):
    groceries = make_list(alice)
    parent = alice.create_task(list_id=groceries["id"])
    alice.create_task(parent_id=parent["id"], completed=True)
    alice.create_task(parent_id=parent["id"])
    row = alice.get(f"/api/lists/{groceries['id']}").json()
    assert (row["task_count"], row["completed_count"]) == (3, 1)
    assert [r for r in alice.get("/api/lists").json() if r["id"] == groceries["id"]] == [row]


def test_move_list_after_before_top_bottom(alice):
    inbox = list_ids(alice)[0]
    a, b, c = (make_list(alice, name=name)["id"] for name in "abc")
    assert list_ids(alice) == [inbox, a, b, c]
    assert alice.post(f"/api/lists/{c}/move", json={"after_id": inbox}).status_code == 200
    assert list_ids(alice) == [inbox, c, a, b]
    alice.post(f"/api/lists/{inbox}/move", json={"before_id": b})
    assert list_ids(alice) == [c, a, inbox, b]
    alice.post(f"/api/lists/{b}/move", json={"to": "top"})
    assert list_ids(alice) == [b, c, a, inbox]
    alice.post(f"/api/lists/{b}/move", json={})
    assert list_ids(alice) == [c, a, inbox, b]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"after_id": 1, "to": "top"}, "to"),
        ({"after_id": 1, "before_id": 2}, "to"),
        ({"to": "middle"}, "to"),
        ({"after_id": 0}, "after_id"),
        ({"after_id": "1"}, "after_id"),
        ({"list_id": 3}, "list_id"),
    ],
)
def test_invalid_list_move_is_422(alice, body, field):
    groceries = make_list(alice)
    response = alice.post(f"/api/lists/{groceries['id']}/move", json=body)
    assert response.status_code == 422, response.text
    assert field in {error["field"] for error in response.json()["errors"]}


def test_move_list_relative_to_itself_or_another_users_list_is_422_and_changes_nothing(alice, bob):
    a, b = make_list(alice)["id"], make_list(alice)["id"]
    bobs = make_list(bob)["id"]
    before = alice.get("/api/lists").json()
    for reference in (a, bobs, 2**31 - 1, 2**40):
        response = alice.post(f"/api/lists/{a}/move", json={"after_id": reference})
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "after_id"
    assert alice.get("/api/lists").json() == before
    assert alice.post(f"/api/lists/{a}/move", json={"after_id": b}).status_code == 200


def test_move_list_honours_if_match(alice):
    a, b = make_list(alice), make_list(alice)
    stale = '"%d.1.0.0"' % a["id"]
    alice.patch(f"/api/lists/{a['id']}", json={"name": "changed"})
    response = alice.post(f"/api/lists/{a['id']}/move", json={"to": "top"}, headers={"If-Match": stale})
    assert response.status_code == 412
    assert list_ids(alice)[-2:] == [a["id"], b["id"]]


def test_another_users_list_is_404_list_not_found_everywhere(alice, bob):
    bobs = make_list(bob)
    path = f"/api/lists/{bobs['id']}"
    for response in (
        alice.get(path),
        alice.patch(path, json={"name": "mine"}),
        alice.put(path, json={"name": "mine"}),
        alice.delete(path + "?cascade=true"),
        alice.post(path + "/move", json={"to": "top"}),
        alice.get(f"/api/tasks?list_id={bobs['id']}"),
        alice.get(f"/api/tasks/stats?list_id={bobs['id']}"),
        alice.delete(f"/api/tasks?completed=true&list_id={bobs['id']}"),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error_code"] == "LIST_NOT_FOUND"
    assert bob.get(path).json()["name"] == "Groceries"


@pytest.mark.parametrize("list_id", ["0", "-1", str(2**31), str(2**63), "99999999999999999999"])
def test_list_ids_that_cannot_exist_are_404_or_422_never_500(alice, list_id):
    for response in (
        alice.get(f"/api/lists/{list_id}"),
        alice.patch(f"/api/lists/{list_id}", json={"name": "x"}),
        alice.delete(f"/api/lists/{list_id}"),
        alice.post(f"/api/lists/{list_id}/move", json={}),
        alice.get(f"/api/tasks?list_id={list_id}"),
        alice.get(f"/api/tasks/stats?list_id={list_id}"),
    ):
        assert response.status_code in (404, 422), response.text


def test_a_task_in_another_users_list_is_422_naming_list_id(alice, bob):
    bobs = make_list(bob)
    for body in ({"title": "x", "list_id": bobs["id"]}, {"title": "x", "list_id": 2**31 + 5}):
        response = alice.post("/api/tasks", json=body)
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "list_id"
    assert alice.get("/api/tasks").json() == []
    assert bob.get(f"/api/lists/{bobs['id']}").json()["task_count"] == 0


def test_path_spelling_with_another_user_is_403(alice, bob):
    response = alice.get(f"/api/{bob.user_id}/lists")
    assert response.status_code == 403 and response.json()["error_code"] == "FORBIDDEN"
    assert alice.post(f"/api/{bob.user_id}/lists", json={"name": "x"}).status_code == 403


def test_lists_need_a_valid_token(client, make_token):
    assert client.get("/api/lists").status_code == 401
    expired = make_token("someone", exp=1)
    response = client.get("/api/lists", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401 and response.json()["error_code"] == "UNAUTHORIZED"
    forged = make_token("someone", secret="not-the-secret-" + "x" * 40)
    assert client.post("/api/lists", json={"name": "x"}, headers={"Authorization": f"Bearer {forged}"}).status_code == 401


def test_at_most_1000_lists_per_user_default_included(alice, sql_engine):
    alice.get("/api/lists")  # the default list
    now = store.utc_now()
    with sql_engine.begin() as connection:
        ids = connection.execute(
            list_store.list_table.insert().returning(list_store.list_table.c.id),
            [
                {"owner_id": alice.user_id, "name": f"l{i}", "color": None, "is_default": False,
                 "created_at": now, "updated_at": now, "version": 1}
                for i in range(998)
            ],
        ).scalars().all()
        connection.execute(
            list_store.member_table.insert(),
            [{"list_id": list_id, "user_id": alice.user_id, "role": "owner", "position": f"b{i:03d}", "joined_at": now}
             for i, list_id in enumerate(ids)],
        )
    assert len(list_ids(alice)) == 999
    last = alice.post("/api/lists", json={"name": "the thousandth"})
    assert last.status_code == 201, last.text
    response = alice.post("/api/lists", json={"name": "one too many"})
    assert response.status_code == 422
    assert "1000" in response.json()["detail"]
    assert len(list_ids(alice)) == 1000


def test_idempotency_key_on_list_creation(alice):
    key = str(uuid.uuid4())
    first = alice.post("/api/lists", json={"name": "Once"}, headers={"Idempotency-Key": key})
    again = alice.post("/api/lists", json={"name": "Once"}, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert sum(1 for row in alice.get("/api/lists").json() if row["name"] == "Once") == 1
    other = alice.post("/api/lists", json={"name": "Other"}, headers={"Idempotency-Key": key})
    assert other.status_code == 422 and other.json()["error_code"] == "IDEMPOTENCY_KEY_REUSED"


def test_one_idempotency_key_cannot_create_a_task_and_a_list(alice):
    key = str(uuid.uuid4())
    assert alice.post("/api/tasks", json={"title": "Same"}, headers={"Idempotency-Key": key}).status_code == 201
    response = alice.post("/api/lists", json={"name": "Same"}, headers={"Idempotency-Key": key})
    assert response.status_code == 422 and response.json()["error_code"] == "IDEMPOTENCY_KEY_REUSED"
    assert [row["name"] for row in alice.get("/api/lists").json()] == ["Inbox"]


def test_the_default_list_cache_is_per_database(scratch_database):
    """One process, two databases (as in tests, or two apps): each has its own default lists."""
    from fastapi.testclient import TestClient

    from conftest import make_settings, mint_token
    from main import create_app

    headers = {"Authorization": f"Bearer {mint_token('cache_user')}"}
    for _ in range(2):
        with TestClient(create_app(make_settings(scratch_database("sqlite")))) as client:
            client.post("/api/lists", json={"name": "shifts the ids"}, headers=headers)
            task = client.post("/api/tasks", json={"title": "x"}, headers=headers)
            assert task.status_code == 201, task.text
            inbox = client.get("/api/lists", headers=headers).json()[0]
            assert inbox["is_default"] and inbox["name"] == "Inbox"
            assert task.json()["list_id"] == inbox["id"] and inbox["task_count"] == 1


def test_the_default_list_is_created_once_by_concurrent_first_uses(database_url, sql_engine):
    """Two first requests at once (two processes' caches both empty) make one default list."""
    import asyncio

    from conftest import make_settings
    from db import Database

    user_id = f"race_{uuid.uuid4().hex[:8]}"

    async def scenario():
        databases = [Database(make_settings(database_url)) for _ in range(2)]
        for database in databases:
            await database.open()
        try:
            ids = await asyncio.gather(*(list_store.ensure_default_list(database, user_id) for database in databases))
            list_store._cache(databases[0]).clear()
            again = await list_store.ensure_default_list(databases[0], user_id)
            return ids, again
        finally:
            for database in databases:
                await database.close()

    ids, again = asyncio.run(scenario())
    assert ids[0] == ids[1] == again
    with sql_engine.connect() as connection:
        count = connection.execute(sa.text("SELECT count(*) FROM list WHERE owner_id = :u"), {"u": user_id}).scalar()
    assert count == 1
