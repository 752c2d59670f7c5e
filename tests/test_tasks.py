"""Single-task routes and list basics, in both spellings, with two users, on SQLite and PostgreSQL."""
import re
from datetime import datetime, timezone

import pytest

TASK_FIELDS = {
    "id", "user_id", "title", "description", "completed", "priority", "tags",
    "due_date", "list_id", "parent_id", "position", "time_zone", "recurrence", "reminders", "next_occurrence_id", "assignee_id", "completed_at", "created_at", "updated_at",
}
UTC_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


@pytest.fixture(params=["api", "user"], ids=["/api/tasks", "/api/{user_id}/tasks"])
def url(request):
    """`url(user, "/tasks/3")` in the spelling under test."""

    def make(user, path: str) -> str:
        return f"/api{path}" if request.param == "api" else f"/api/{user.user_id}{path}"

    return make


def ts(value: str) -> datetime:
    assert UTC_Z.match(value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code, body
    assert body["detail"] and body["timestamp"]
    return body


def assert_unchanged(owner, task: dict) -> None:
    response = owner.get(f"/api/tasks/{task['id']}")
    assert response.status_code == 200, response.text
    assert response.json() == task


def ids_of(response) -> list[int]:
    assert response.status_code == 200, response.text
    return [task["id"] for task in response.json()]


# ---------------------------------------------------------------- create


def test_post_tasks_returns_201_with_location_etag_and_defaults(alice, url):
    before = datetime.now(timezone.utc)
    response = alice.post(url(alice, "/tasks"), json={"title": "Buy groceries"})
    after = datetime.now(timezone.utc)
    assert response.status_code == 201, response.text
    task = response.json()
    assert set(task) == TASK_FIELDS
    assert isinstance(task["id"], int) and task["id"] > 0
    assert task["user_id"] == alice.user_id
    assert task["title"] == "Buy groceries"
    assert task["description"] is None
    assert task["completed"] is False
    assert task["priority"] == "medium"
    assert task["tags"] == []
    assert task["due_date"] is None
    assert task["completed_at"] is None
    assert task["created_at"] == task["updated_at"]
    assert before <= ts(task["created_at"]) <= after
    assert response.headers["Location"] == url(alice, f"/tasks/{task['id']}")
    assert response.headers["ETag"]
    # Location points at the task, and the ETag is the one a read gives.
    read = alice.get(response.headers["Location"])
    assert read.status_code == 200 and read.json() == task
    assert read.headers["ETag"] == response.headers["ETag"]


def test_post_tasks_stores_every_field_given(alice, url):
    body = {
        "title": "Report",
        "description": "Quarterly",
        "completed": True,
        "priority": "high",
        "tags": ["work", "q4"],
        "due_date": "2030-01-02T03:04:05Z",
    }
    task = alice.post(url(alice, "/tasks"), json=body).json()
    assert {key: task[key] for key in body} == body
    assert task["completed_at"] is not None and ts(task["completed_at"]) == ts(task["created_at"])
    assert alice.get(url(alice, f"/tasks/{task['id']}")).json() == task


def test_post_tasks_user_id_comes_from_the_token(alice, bob, url):
    a = alice.post(url(alice, "/tasks"), json={"title": "mine"}).json()
    b = bob.post(url(bob, "/tasks"), json={"title": "mine"}).json()
    assert a["user_id"] == alice.user_id and b["user_id"] == bob.user_id
    assert a["id"] != b["id"]
    assert ids_of(alice.get(url(alice, "/tasks"))) == [a["id"]]
    assert ids_of(bob.get(url(bob, "/tasks"))) == [b["id"]]


# ---------------------------------------------------------------- read


def test_get_task_returns_the_task_with_etag(alice, url):
    task = alice.create_task(title="read me", tags=["x"])
    response = alice.get(url(alice, f"/tasks/{task['id']}"))
    assert response.status_code == 200
    assert response.json() == task
    assert response.headers["ETag"]


def test_get_task_timestamps_are_utc_with_z(alice, url):
    task = alice.create_task(due_date="2030-06-01T12:00:00+02:00", completed=True)
    read = alice.get(url(alice, f"/tasks/{task['id']}")).json()
    for field in ("created_at", "updated_at", "completed_at", "due_date"):
        assert UTC_Z.match(read[field]), (field, read[field])
    assert ts(read["due_date"]) == datetime(2030, 6, 1, 10, 0, tzinfo=timezone.utc)


# ---------------------------------------------------------------- update


@pytest.mark.parametrize("method", ["put", "patch"])
def test_update_task_changes_given_fields_only(alice, url, method):
    task = alice.create_task(title="t", description="d", priority="low", tags=["a"], due_date="2030-01-01T00:00:00Z")
    old_etag = alice.get(url(alice, f"/tasks/{task['id']}")).headers["ETag"]
    response = getattr(alice, method)(url(alice, f"/tasks/{task['id']}"), json={"priority": "high"})
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["priority"] == "high"
    for field in ("id", "user_id", "title", "description", "tags", "due_date", "completed", "completed_at", "created_at"):
        assert updated[field] == task[field], field
    assert ts(updated["updated_at"]) > ts(task["updated_at"])
    assert response.headers["ETag"] != old_etag
    assert alice.get(url(alice, f"/tasks/{task['id']}")).json() == updated


@pytest.mark.parametrize("method", ["put", "patch"])
def test_update_task_changes_every_field(alice, url, method):
    task = alice.create_task(title="t")
    body = {
        "title": "  new title  ",
        "description": "new",
        "completed": True,
        "priority": "low",
        "tags": ["b", "c"],
        "due_date": "2031-02-03T04:05:06Z",
    }
    updated = getattr(alice, method)(url(alice, f"/tasks/{task['id']}"), json=body).json()
    assert updated["title"] == "new title"
    assert {k: updated[k] for k in body if k != "title"} == {k: v for k, v in body.items() if k != "title"}
    assert updated["completed_at"] is not None
    assert updated["created_at"] == task["created_at"]


@pytest.mark.parametrize("method", ["put", "patch"])
def test_update_task_null_clears_description_and_due_date(alice, url, method):
    task = alice.create_task(description="d", due_date="2030-01-01T00:00:00Z")
    updated = getattr(alice, method)(url(alice, f"/tasks/{task['id']}"), json={"description": None, "due_date": None})
    assert updated.status_code == 200, updated.text
    assert updated.json()["description"] is None and updated.json()["due_date"] is None
    assert updated.json()["title"] == task["title"]


@pytest.mark.parametrize("method", ["put", "patch"])
@pytest.mark.parametrize("field", ["title", "completed", "priority", "tags"])
def test_update_task_null_for_required_field_is_422(alice, url, method, field):
    task = alice.create_task(title="keep", tags=["k"])
    response = getattr(alice, method)(url(alice, f"/tasks/{task['id']}"), json={field: None})
    body = assert_error(response, 422, "VALIDATION_ERROR")
    assert field in [error["field"] for error in body["errors"]]
    assert_unchanged(alice, task)


@pytest.mark.parametrize("method", ["put", "patch"])
def test_update_task_empty_body_changes_nothing_but_is_accepted(alice, url, method):
    task = alice.create_task(title="keep")
    response = getattr(alice, method)(url(alice, f"/tasks/{task['id']}"), json={})
    assert response.status_code == 200, response.text
    after = response.json()
    assert {k: v for k, v in after.items() if k != "updated_at"} == {k: v for k, v in task.items() if k != "updated_at"}
    assert ts(after["updated_at"]) >= ts(task["updated_at"])


def test_update_task_completed_sets_and_clears_completed_at(alice, url):
    task = alice.create_task()
    done = alice.patch(url(alice, f"/tasks/{task['id']}"), json={"completed": True}).json()
    assert done["completed"] is True and done["completed_at"] is not None
    assert ts(done["completed_at"]) >= ts(task["created_at"])
    again = alice.patch(url(alice, f"/tasks/{task['id']}"), json={"completed": True}).json()
    assert again["completed_at"] == done["completed_at"]  # still completed: not moved
    undone = alice.patch(url(alice, f"/tasks/{task['id']}"), json={"completed": False}).json()
    assert undone["completed"] is False and undone["completed_at"] is None


# ---------------------------------------------------------------- delete


def test_delete_task_returns_204_then_404(alice, url):
    task = alice.create_task()
    response = alice.delete(url(alice, f"/tasks/{task['id']}"))
    assert response.status_code == 204
    assert response.content == b""
    assert_error(alice.get(url(alice, f"/tasks/{task['id']}")), 404, "TASK_NOT_FOUND")
    assert_error(alice.delete(url(alice, f"/tasks/{task['id']}")), 404, "TASK_NOT_FOUND")
    assert task["id"] not in ids_of(alice.get(url(alice, "/tasks")))


# ---------------------------------------------------------------- toggle / complete


def test_toggle_task_flips_completed_and_completed_at(alice, url):
    task = alice.create_task()
    on = alice.post(url(alice, f"/tasks/{task['id']}/toggle"))
    assert on.status_code == 200, on.text
    assert on.json()["completed"] is True and on.json()["completed_at"] is not None
    assert on.headers["ETag"]
    off = alice.post(url(alice, f"/tasks/{task['id']}/toggle")).json()
    assert off["completed"] is False and off["completed_at"] is None
    assert ts(task["updated_at"]) < ts(on.json()["updated_at"]) < ts(off["updated_at"])


def test_complete_task_sets_completed_from_body(alice, url):
    task = alice.create_task()
    path = url(alice, f"/tasks/{task['id']}/complete")
    done = alice.patch(path, json={"completed": True})
    assert done.status_code == 200, done.text
    assert done.json()["completed"] is True and done.json()["completed_at"] is not None
    assert done.headers["ETag"]
    still = alice.patch(path, json={"completed": True}).json()
    assert still["completed"] is True and still["completed_at"] == done.json()["completed_at"]
    undone = alice.patch(path, json={"completed": False}).json()
    assert undone["completed"] is False and undone["completed_at"] is None
    still_pending = alice.patch(path, json={"completed": False}).json()
    assert still_pending["completed"] is False


def test_complete_task_without_body_flips(alice, url):
    task = alice.create_task()
    path = url(alice, f"/tasks/{task['id']}/complete")
    first = alice.patch(path)
    assert first.status_code == 200, first.text
    assert first.json()["completed"] is True and first.json()["completed_at"] is not None
    second = alice.patch(path).json()
    assert second["completed"] is False and second["completed_at"] is None


@pytest.mark.parametrize("body", [{"completed": "yes"}, {"completed": None}, {"done": True}, [True]])
def test_complete_task_bad_body_is_422_and_changes_nothing(alice, url, body):
    task = alice.create_task()
    assert_error(alice.patch(url(alice, f"/tasks/{task['id']}/complete"), json=body), 422, "VALIDATION_ERROR")
    assert_unchanged(alice, task)


# ---------------------------------------------------------------- updated_at


def test_updated_at_changes_on_every_write_and_never_goes_back(alice, url):
    task = alice.create_task()
    path = url(alice, f"/tasks/{task['id']}")
    stamps = [ts(task["updated_at"])]
    etags = {alice.get(path).headers["ETag"]}
    writes = [
        lambda: alice.put(path, json={"title": "1"}),
        lambda: alice.patch(path, json={"title": "2"}),
        lambda: alice.post(f"{path}/toggle"),
        lambda: alice.patch(f"{path}/complete", json={"completed": False}),
        lambda: alice.patch(f"{path}/complete"),
        lambda: alice.patch(path, json={"description": "x"}),
    ] * 3  # fast writes, often within the same clock tick
    for write in writes:
        response = write()
        assert response.status_code == 200, response.text
        stamps.append(ts(response.json()["updated_at"]))
        etags.add(response.headers["ETag"])
        assert response.json()["created_at"] == task["created_at"]
    assert all(a < b for a, b in zip(stamps, stamps[1:])), stamps
    assert len(etags) == len(writes) + 1


# ---------------------------------------------------------------- isolation


@pytest.mark.parametrize(
    "method, suffix, body",
    [
        ("get", "", None),
        ("put", "", {"title": "stolen"}),
        ("patch", "", {"title": "stolen"}),
        ("delete", "", None),
        ("post", "/toggle", None),
        ("patch", "/complete", {"completed": True}),
        ("patch", "/complete", None),
    ],
)
def test_task_of_another_user_is_404_and_unchanged(alice, bob, url, method, suffix, body):
    task = alice.create_task(title="alice's", tags=["private"])
    kwargs = {"json": body} if body is not None else {}
    response = getattr(bob, method)(url(bob, f"/tasks/{task['id']}{suffix}"), **kwargs)
    body = assert_error(response, 404, "TASK_NOT_FOUND")
    # Indistinguishable from a task that does not exist.
    missing = getattr(bob, method)(url(bob, f"/tasks/{2**31 - 1}{suffix}"), **kwargs)
    assert missing.status_code == 404 and missing.json()["detail"] == body["detail"]
    assert_unchanged(alice, task)
    assert bob.get(url(bob, "/tasks")).json() == []


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/tasks"),
        ("post", "/tasks"),
        ("get", "/tasks/{id}"),
        ("put", "/tasks/{id}"),
        ("patch", "/tasks/{id}"),
        ("delete", "/tasks/{id}"),
        ("post", "/tasks/{id}/toggle"),
        ("patch", "/tasks/{id}/complete"),
    ],
)
def test_user_path_of_another_user_is_403(alice, bob, method, path):
    task = alice.create_task()
    kwargs = {"json": {"title": "x"}} if method in ("post", "put", "patch") and "complete" not in path else {}
    # Bob names Alice in the path: forbidden, whoever owns the task.
    response = getattr(bob, method)(f"/api/{alice.user_id}{path.format(id=task['id'])}", **kwargs)
    assert_error(response, 403, "FORBIDDEN")
    # Even on his own tasks, through Alice's path.
    own = bob.create_task()
    response = getattr(bob, method)(f"/api/{alice.user_id}{path.format(id=own['id'])}", **kwargs)
    assert_error(response, 403, "FORBIDDEN")
    assert_unchanged(alice, task)
    assert_unchanged(bob, own)
    assert len(alice.get("/api/tasks").json()) == 1


# ---------------------------------------------------------------- bad ids


@pytest.mark.parametrize("task_id", ["0", "-1", str(2**31), str(10**20), "abc", "1.5", "1e3"])
@pytest.mark.parametrize(
    "method, suffix, body",
    [
        ("get", "", None),
        ("put", "", {"title": "x"}),
        ("patch", "", {"title": "x"}),
        ("delete", "", None),
        ("post", "/toggle", None),
        ("patch", "/complete", None),
    ],
)
def test_task_id_not_a_valid_id_is_404_or_422(alice, url, task_id, method, suffix, body):
    kwargs = {"json": body} if body is not None else {}
    response = getattr(alice, method)(url(alice, f"/tasks/{task_id}{suffix}"), **kwargs)
    assert response.status_code in (404, 422), response.text
    assert response.json()["error_code"] in ("TASK_NOT_FOUND", "NOT_FOUND", "VALIDATION_ERROR")


@pytest.mark.parametrize("task_id", ["0", "-1", str(2**31), str(10**20)])
def test_delete_task_bad_id_with_if_match_is_404_or_422(alice, url, task_id):
    response = alice.delete(url(alice, f"/tasks/{task_id}"), headers={"If-Match": "*"})
    assert response.status_code in (404, 422), response.text


# ---------------------------------------------------------------- list basics


def test_get_tasks_lists_newest_first_with_total(new_user, url):
    user = new_user()
    created = [user.create_task(title=f"t{i}") for i in range(4)]
    response = user.get(url(user, "/tasks"))
    assert ids_of(response) == [task["id"] for task in reversed(created)]
    assert response.headers["X-Total-Count"] == "4"
    assert response.json()[0] == created[-1]


def test_get_tasks_filters_completed_and_status(new_user, url):
    user = new_user()
    pending = [user.create_task(title="p1")["id"], user.create_task(title="p2")["id"]]
    done = [user.create_task(title="d1", completed=True)["id"]]
    everything = set(pending + done)

    def listed(query: str) -> tuple[set[int], str]:
        response = user.get(url(user, f"/tasks{query}"))
        return set(ids_of(response)), response.headers["X-Total-Count"]

    assert listed("?completed=true") == (set(done), "1")
    assert listed("?completed=false") == (set(pending), "2")
    assert listed("?status=completed") == (set(done), "1")
    assert listed("?status=pending") == (set(pending), "2")
    assert listed("?status=all") == (everything, "3")
    assert listed("") == (everything, "3")


@pytest.mark.parametrize("query", ["status=done", "status=", "completed=maybe", "limit=0", "limit=501", "limit=-1",
                                   "limit=abc", "offset=-1", "offset=abc"])
def test_get_tasks_bad_parameter_is_422(alice, url, query):
    body = assert_error(alice.get(url(alice, f"/tasks?{query}")), 422, "VALIDATION_ERROR")
    assert body["errors"] and body["errors"][0]["field"] == query.split("=")[0]


def test_get_tasks_limit_and_offset_page_through(new_user, url):
    user = new_user()
    created = [user.create_task(title=f"t{i}")["id"] for i in range(5)]
    newest_first = list(reversed(created))
    first = user.get(url(user, "/tasks?limit=2"))
    assert ids_of(first) == newest_first[:2]
    assert first.headers["X-Total-Count"] == "5"
    second = user.get(url(user, "/tasks?limit=2&offset=2"))
    assert ids_of(second) == newest_first[2:4]
    assert second.headers["X-Total-Count"] == "5"
    last = user.get(url(user, "/tasks?limit=2&offset=4"))
    assert ids_of(last) == newest_first[4:]
    assert last.headers["X-Total-Count"] == "5"
    beyond = user.get(url(user, "/tasks?offset=10"))
    assert ids_of(beyond) == [] and beyond.headers["X-Total-Count"] == "5"
    assert ids_of(user.get(url(user, "/tasks?limit=1"))) == newest_first[:1]
    assert ids_of(user.get(url(user, "/tasks?limit=500"))) == newest_first


def test_get_tasks_total_count_follows_filter_not_page(new_user, url):
    user = new_user()
    for i in range(3):
        user.create_task(title=f"d{i}", completed=True)
    user.create_task(title="p")
    response = user.get(url(user, "/tasks?completed=true&limit=1&offset=1"))
    assert len(response.json()) == 1
    assert response.headers["X-Total-Count"] == "3"


def test_get_tasks_empty_list_for_new_user(new_user, url):
    user = new_user()
    response = user.get(url(user, "/tasks"))
    assert response.status_code == 200 and response.json() == []
    assert response.headers["X-Total-Count"] == "0"


# ---------------------------------------------------------------- ETag / If-None-Match / If-Match


def test_get_task_if_none_match_gives_304(alice, url):
    task = alice.create_task()
    path = url(alice, f"/tasks/{task['id']}")
    etag = alice.get(path).headers["ETag"]
    cached = alice.get(path, headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    assert cached.headers["ETag"] == etag
    alice.patch(path, json={"title": "changed"})
    fresh = alice.get(path, headers={"If-None-Match": etag})
    assert fresh.status_code == 200 and fresh.json()["title"] == "changed"
    assert fresh.headers["ETag"] != etag


def test_get_task_if_none_match_of_another_users_task_is_404(alice, bob, url):
    task = alice.create_task()
    response = bob.get(url(bob, f"/tasks/{task['id']}"), headers={"If-None-Match": "*"})
    assert_error(response, 404, "TASK_NOT_FOUND")


WRITES = [
    ("put", "", {"title": "changed"}),
    ("patch", "", {"title": "changed"}),
    ("post", "/toggle", None),
    ("patch", "/complete", {"completed": True}),
    ("patch", "/complete", None),
]


@pytest.mark.parametrize("method, suffix, body", WRITES)
def test_write_with_stale_if_match_is_412_and_changes_nothing(alice, url, method, suffix, body):
    task = alice.create_task(title="original")
    path = url(alice, f"/tasks/{task['id']}")
    stale = alice.get(path).headers["ETag"]
    current = alice.patch(path, json={"description": "moved on"})
    assert current.status_code == 200
    kwargs = {"json": body} if body is not None else {}
    response = getattr(alice, method)(path + suffix, headers={"If-Match": stale}, **kwargs)
    assert_error(response, 412, "PRECONDITION_FAILED")
    assert_unchanged(alice, current.json())


@pytest.mark.parametrize("method, suffix, body", WRITES)
def test_write_with_matching_if_match_succeeds(alice, url, method, suffix, body):
    task = alice.create_task(title="original")
    path = url(alice, f"/tasks/{task['id']}")
    etag = alice.get(path).headers["ETag"]
    kwargs = {"json": body} if body is not None else {}
    response = getattr(alice, method)(path + suffix, headers={"If-Match": etag}, **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["ETag"] != etag
    assert response.json() != task
    # The old tag is now stale.
    again = getattr(alice, method)(path + suffix, headers={"If-Match": etag}, **kwargs)
    assert_error(again, 412, "PRECONDITION_FAILED")


def test_delete_task_with_stale_if_match_is_412_and_keeps_it(alice, url):
    task = alice.create_task()
    path = url(alice, f"/tasks/{task['id']}")
    stale = alice.get(path).headers["ETag"]
    current = alice.patch(path, json={"title": "newer"}).json()
    assert_error(alice.delete(path, headers={"If-Match": stale}), 412, "PRECONDITION_FAILED")
    assert_unchanged(alice, current)


def test_delete_task_with_matching_if_match_deletes(alice, url):
    task = alice.create_task()
    path = url(alice, f"/tasks/{task['id']}")
    etag = alice.get(path).headers["ETag"]
    response = alice.delete(path, headers={"If-Match": etag})
    assert response.status_code == 204 and response.content == b""
    assert_error(alice.get(path), 404, "TASK_NOT_FOUND")
    assert_error(alice.delete(path, headers={"If-Match": etag}), 404, "TASK_NOT_FOUND")


def test_write_with_if_match_on_another_users_task_is_404(alice, bob, url):
    task = alice.create_task()
    etag = alice.get(f"/api/tasks/{task['id']}").headers["ETag"]
    response = bob.patch(url(bob, f"/tasks/{task['id']}"), json={"title": "x"}, headers={"If-Match": etag})
    assert_error(response, 404, "TASK_NOT_FOUND")
    assert_error(bob.delete(url(bob, f"/tasks/{task['id']}"), headers={"If-Match": etag}), 404, "TASK_NOT_FOUND")
    assert_unchanged(alice, task)


def test_write_with_if_match_star_or_list_succeeds(alice, url):
    task = alice.create_task()
    path = url(alice, f"/tasks/{task['id']}")
    etag = alice.get(path).headers["ETag"]
    assert alice.patch(path, json={"title": "a"}, headers={"If-Match": "*"}).status_code == 200
    current = alice.get(path).headers["ETag"]
    response = alice.patch(path, json={"title": "b"}, headers={"If-Match": f'{etag}, {current}'})
    assert response.status_code == 200, response.text
