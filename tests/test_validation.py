"""The task rules of CONTRACT §2 at their exact boundaries, on create and on update.

Every rejected request is checked to have changed nothing: the caller's list stays empty after a
rejected create, the task stays as it was after a rejected update.
"""
import re
from datetime import datetime

import pytest

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
METHODS = ["post", "put", "patch"]  # post = create; put / patch = update of an existing task


def assert_validation_error(response, field: str | None = None) -> dict:
    """422 VALIDATION_ERROR with the §5 shape; `field` (or `field.<index>`) among errors[].field."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error_code"] == "VALIDATION_ERROR"
    assert isinstance(body["detail"], str) and body["detail"]
    assert TIMESTAMP.match(body["timestamp"]), body["timestamp"]
    assert isinstance(body["errors"], list) and body["errors"]
    for error in body["errors"]:
        assert set(error) == {"field", "message"}, error
        assert isinstance(error["field"], str) and error["field"]
        assert isinstance(error["message"], str) and error["message"]
    if field is not None:
        fields = [error["field"] for error in body["errors"]]
        assert any(f == field or f.startswith(field + ".") for f in fields), (field, fields)
        assert not any(f.startswith("body") for f in fields), fields
    assert "Traceback" not in response.text
    return body


@pytest.fixture
def user(new_user):
    return new_user("v")


def send(user, method: str, body, **kwargs):
    """Create (post) or update (put / patch) with `body`; returns (response, check_nothing_changed)."""
    if method == "post":
        response = user.post("/api/tasks", json=body, **kwargs)

        def unchanged() -> None:
            listed = user.get("/api/tasks")
            assert listed.json() == [], listed.json()
            assert listed.headers["X-Total-Count"] == "0"

        return response, unchanged
    task = user.create_task(title="original", description="keep", tags=["keep"], due_date="2030-01-01T00:00:00Z")
    response = getattr(user, method)(f"/api/tasks/{task['id']}", json=body, **kwargs)

    def unchanged() -> None:
        assert user.get(f"/api/tasks/{task['id']}").json() == task
        assert len(user.get("/api/tasks").json()) == 1

    return response, unchanged


def accepted(user, method: str, body: dict) -> dict:
    """Send a valid body (with a title on create) and return the stored task as read back."""
    if method == "post":
        body = {"title": "t", **body}
    response, _ = send(user, method, body)
    assert response.status_code == (201 if method == "post" else 200), response.text
    task = response.json()
    assert user.get(f"/api/tasks/{task['id']}").json() == task
    return task


def rejected(user, method: str, body, field: str | None) -> dict:
    if method == "post" and isinstance(body, dict) and "title" not in body and field != "title":
        body = {"title": "t", **body}
    response, unchanged = send(user, method, body)
    error = assert_validation_error(response, field)
    unchanged()
    return error


# ---------------------------------------------------------------- title


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "given, stored",
    [
        ("x", "x"),
        ("  padded\t\n", "padded"),
        ("a" * 255, "a" * 255),
        ("  " + "b" * 255 + "  ", "b" * 255),
        ("é" * 255, "é" * 255),
        ("😀" * 255, "😀" * 255),
        ("in ner  spaces", "in ner  spaces"),
    ],
    ids=["1", "trimmed", "255", "255-after-trim", "255-accented", "255-emoji", "inner-spaces"],
)
def test_title_valid_boundaries_are_stored_trimmed(user, method, given, stored):
    assert accepted(user, method, {"title": given})["title"] == stored


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "title", ["a" * 256, "😀" * 256, "", "   ", "\t\n", 123, 1.5, True, ["a"], {"a": 1}],
    ids=["256", "256-emoji", "empty", "spaces", "whitespace", "int", "float", "bool", "list", "object"],
)
def test_title_invalid_is_422(user, method, title):
    rejected(user, method, {"title": title}, "title")


def test_post_tasks_without_title_is_422(user):
    rejected(user, "post", {"description": "no title"}, "title")


@pytest.mark.parametrize("method", ["put", "patch"])
def test_update_title_null_is_422(user, method):
    rejected(user, method, {"title": None}, "title")


# ---------------------------------------------------------------- description


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("description", ["d" * 1000, "é" * 1000, None, "line\nbreaks"], ids=["1000", "1000-accented", "null", "newlines"])
def test_description_valid_is_stored(user, method, description):
    assert accepted(user, method, {"description": description})["description"] == description


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("description", ["d" * 1001, "😀" * 1001, 5, ["d"]], ids=["1001", "1001-emoji", "int", "list"])
def test_description_invalid_is_422(user, method, description):
    rejected(user, method, {"description": description}, "description")


# ---------------------------------------------------------------- completed


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("completed", ["yes", "true", 1, 0, "1", [True]])
def test_completed_not_a_boolean_is_422(user, method, completed):
    rejected(user, method, {"completed": completed}, "completed")


def test_post_tasks_completed_null_is_422(user):
    rejected(user, "post", {"completed": None}, "completed")


# ---------------------------------------------------------------- priority


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("priority", ["low", "medium", "high"])
def test_priority_known_values_are_stored(user, method, priority):
    assert accepted(user, method, {"priority": priority})["priority"] == priority


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("priority", ["urgent", "", "lowest", 1, None, ["high"]])
def test_priority_unknown_is_422(user, method, priority):
    rejected(user, method, {"priority": priority}, "priority")


# ---------------------------------------------------------------- tags


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "given, stored",
    [
        ([], []),
        (["  home ", "work"], ["home", "work"]),
        (["t" * 50], ["t" * 50]),
        (["  " + "t" * 50 + " "], ["t" * 50]),
        (["Home", "work", "HOME", "home ", "Work", "x"], ["Home", "work", "x"]),
        (["b", "a", "c"], ["b", "a", "c"]),
        ([f"tag{i}" for i in range(20)], [f"tag{i}" for i in range(20)]),
        (["Ünïcode", "ünÏcode"], ["Ünïcode"]),
    ],
    ids=["empty", "trimmed", "50", "50-after-trim", "case-duplicates", "order-kept", "20", "unicode-dup"],
)
def test_tags_are_trimmed_deduplicated_and_ordered(user, method, given, stored):
    assert accepted(user, method, {"tags": given})["tags"] == stored


def test_post_tasks_without_tags_defaults_to_empty_list(user):
    assert accepted(user, "post", {})["tags"] == []


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "tags",
    [
        ["t" * 51],
        [""],
        ["   "],
        ["ok", ""],
        [f"tag{i}" for i in range(21)],
        "home",
        [1],
        [None],
        [["nested"]],
        None,
    ],
    ids=["51", "empty", "spaces", "one-empty", "21", "string", "int", "null-item", "nested", "null"],
)
def test_tags_invalid_is_422(user, method, tags):
    rejected(user, method, {"tags": tags}, "tags")


# ---------------------------------------------------------------- due_date


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "given, stored",
    [
        ("2030-01-02T03:04:05Z", "2030-01-02T03:04:05Z"),
        ("2030-01-02T03:04:05", "2030-01-02T03:04:05Z"),
        ("2030-01-02T03:04:05+02:00", "2030-01-02T01:04:05Z"),
        ("2030-01-02T01:00:00-05:30", "2030-01-02T06:30:00Z"),
        ("2030-01-01T23:30:00-01:00", "2030-01-02T00:30:00Z"),
        ("2030-01-02T03:04:05.250Z", "2030-01-02T03:04:05.250000Z"),
        (None, None),
    ],
    ids=["utc", "naive-is-utc", "plus-offset", "minus-offset", "crosses-midnight", "fraction", "null"],
)
def test_due_date_is_returned_in_utc(user, method, given, stored):
    due = accepted(user, method, {"due_date": given})["due_date"]
    if stored is None:
        assert due is None
    else:
        assert due.endswith("Z")
        assert datetime.fromisoformat(due.replace("Z", "+00:00")) == datetime.fromisoformat(stored.replace("Z", "+00:00"))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "due_date",
    ["tomorrow", "", "2030-13-01T00:00:00Z", "2030-02-30T00:00:00Z", "2030-01-01T25:00:00Z", "01/02/2030",
     "2030-01-01T00:00:00+25:00", 1893456000, True, ["2030-01-01"], {"date": "2030-01-01"}],
    ids=["word", "empty", "month-13", "feb-30", "hour-25", "us-format", "offset-25h", "epoch-int", "bool", "list", "object"],
)
def test_due_date_garbage_is_422(user, method, due_date):
    rejected(user, method, {"due_date": due_date}, "due_date")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("due_date", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"], ids=["before-year-1", "after-9999"])
def test_due_date_out_of_range_after_conversion_is_422(user, method, due_date):
    rejected(user, method, {"due_date": due_date}, "due_date")


# ---------------------------------------------------------------- NUL and broken text


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "body, field",
    [
        ({"title": "bad\x00title"}, "title"),
        ({"title": "\x00"}, "title"),
        ({"description": "bad\x00"}, "description"),
        ({"tags": ["ok", "b\x00d"]}, "tags"),
        ({"priority": "high\x00"}, "priority"),
        ({"due_date": "2030-01-01T00:00:00Z\x00"}, "due_date"),
    ],
    ids=["title", "title-only-nul", "description", "tag", "priority", "due_date"],
)
def test_nul_character_in_a_string_field_is_422(user, method, body, field):
    rejected(user, method, body, field)


@pytest.mark.parametrize("method", METHODS)
def test_lone_surrogate_in_title_is_422_not_500(user, method):
    if method == "post":
        response = user.post("/api/tasks", content=b'{"title": "bad \\ud800 text"}', headers={"Content-Type": "application/json"})
        assert_validation_error(response, "title")
        assert user.get("/api/tasks").json() == []
    else:
        task = user.create_task(title="original")
        response = getattr(user, method)(
            f"/api/tasks/{task['id']}", content=b'{"title": "\\udfff"}', headers={"Content-Type": "application/json"}
        )
        assert_validation_error(response, "title")
        assert user.get(f"/api/tasks/{task['id']}").json() == task


# ---------------------------------------------------------------- unknown fields and body shape


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "field, value",
    [
        ("user_id", "someone_else"),
        ("id", 1),
        ("owner", "someone_else"),
        ("complete", True),
        ("created_at", "2020-01-01T00:00:00Z"),
        ("updated_at", "2020-01-01T00:00:00Z"),
        ("completed_at", "2020-01-01T00:00:00Z"),
        ("Title", "wrong case"),
    ],
)
def test_unknown_field_is_422_naming_it(user, method, field, value):
    body = {"title": "would be valid", field: value}
    error = rejected(user, method, body, field)
    assert field in [e["field"] for e in error["errors"]]


def test_post_tasks_unknown_field_user_id_never_sets_the_owner(user, new_user):
    other = new_user("other")
    rejected(user, "post", {"title": "t", "user_id": other.user_id}, "user_id")
    assert other.get("/api/tasks").json() == []


def test_post_tasks_several_problems_are_all_reported(user):
    error = rejected(user, "post", {"title": "", "priority": "urgent", "tags": [""], "owner": "x"}, None)
    fields = {e["field"].split(".")[0] for e in error["errors"]}
    assert {"title", "priority", "tags", "owner"} <= fields


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("body", [[], ["title"], "title", 1, None, True], ids=["array", "array-of-str", "string", "number", "null", "bool"])
def test_body_not_an_object_is_422(user, method, body):
    response, unchanged = send(user, method, body)
    assert_validation_error(response)
    unchanged()


def test_post_tasks_without_body_is_422(user):
    response = user.post("/api/tasks", headers={"Content-Type": "application/json"})
    assert_validation_error(response)
    assert user.get("/api/tasks").json() == []


@pytest.mark.parametrize("method", ["put", "patch"])
def test_update_without_body_is_422_and_changes_nothing(user, method):
    task = user.create_task(title="original")
    response = getattr(user, method)(f"/api/tasks/{task['id']}")
    assert_validation_error(response)
    assert user.get(f"/api/tasks/{task['id']}").json() == task


@pytest.mark.parametrize("method", METHODS)
def test_one_bad_field_rejects_the_whole_body(user, method):
    # A valid title with an invalid priority: the title must not be applied on its own.
    rejected(user, method, {"title": "half applied?", "description": "also", "priority": "urgent"}, "priority")


def test_complete_task_unknown_field_is_422_naming_it(user):
    task = user.create_task()
    response = user.patch(f"/api/tasks/{task['id']}/complete", json={"completed": True, "complete": True})
    error = assert_validation_error(response, "complete")
    assert "complete" in [e["field"] for e in error["errors"]]
    assert user.get(f"/api/tasks/{task['id']}").json() == task
