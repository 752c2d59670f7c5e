"""GET /api/tasks by keyset cursor (the `rel="next"` link), and `count=false`.

Every test runs on SQLite and PostgreSQL. Walking the `next` links must give every task exactly
once, in the order of the unpaged list, for every sort and order, with ties and tasks without a due
date, also while tasks are being created between pages.
"""
import base64
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from conftest import ApiUser
from test_listing import ids, links, list_ok

SORTS = ["created_at", "updated_at", "due_date", "priority", "title"]


def make_tasks(user: ApiUser) -> list[dict[str, Any]]:
    """Ties on every sort key (same title, priority, due date), and several tasks without a due date."""
    fields = [
        {"title": "Same", "priority": "high", "due_date": "2030-01-01T00:00:00Z"},
        {"title": "same", "priority": "high", "due_date": "2030-01-01T00:00:00Z"},
        {"title": "Alpha", "priority": "low"},
        {"title": "beta", "priority": "medium", "due_date": "2029-05-01"},  # all-day
        {"title": "Same", "priority": "low"},
        {"title": "gamma", "priority": "medium", "due_date": "2031-03-01T08:00:00Z", "completed": True},
        {"title": "Alpha", "priority": "high"},
        {"title": "delta", "priority": "medium", "due_date": "2030-01-01T00:00:00Z", "tags": ["home"]},
        {"title": "same", "priority": "medium"},
    ]
    return [user.create_task(**field) for field in fields]


def walk(user: ApiUser, params: dict[str, Any], between_pages: Any = None) -> tuple[list[int], int]:
    """Follow `next` from the first page; returns the ids seen and the number of pages."""
    response = list_ok(user, "plain", {**params, "limit": 2})
    seen, pages = ids(response), 1
    while "next" in links(response):
        if between_pages:
            between_pages()
        response = user.get(links(response)["next"])
        assert response.status_code == 200, response.text
        seen += ids(response)
        pages += 1
        assert pages < 50
    return seen, pages


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_next_links_walk_every_task_once_in_order(alice, bob, sort, order):
    make_tasks(alice)
    make_tasks(bob)
    params = {"sort": sort, "order": order}
    unpaged = ids(list_ok(alice, "plain", params))
    seen, pages = walk(alice, params)
    assert seen == unpaged
    assert pages == 5  # 9 tasks, 2 a page


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_tasks_created_between_pages_never_duplicate_or_skip_earlier_ones(alice, sort, order):
    make_tasks(alice)
    params = {"sort": sort, "order": order}
    before = ids(list_ok(alice, "plain", params))
    created: list[int] = []

    def create_one() -> None:
        created.append(alice.create_task(title="Same", priority="high", due_date="2030-01-01T00:00:00Z")["id"])

    seen, _ = walk(alice, params, between_pages=create_one)
    assert len(seen) == len(set(seen)), "a task came twice"
    assert set(before) <= set(seen), "a task that was there from the start was skipped"
    assert [task_id for task_id in seen if task_id in before] == before  # in the same order
    assert set(seen) <= set(before) | set(created)


def test_cursor_keeps_the_filters_and_the_count(alice, bob):
    for index in range(5):
        alice.create_task(title=f"home {index}", tags=["home"], priority="high")
        alice.create_task(title=f"work {index}", tags=["work"])
    bob.create_task(title="bob home", tags=["home"], priority="high")
    params = {"tag": "home", "priority": "high", "sort": "title"}
    first = list_ok(alice, "plain", {**params, "limit": 2})
    assert first.headers["x-total-count"] == "5"
    next_url = links(first)["next"]
    query = parse_qs(urlsplit(next_url).query)
    assert query["tag"] == ["home"] and query["priority"] == ["high"] and query["sort"] == ["title"]
    second = alice.get(next_url)
    assert second.headers["x-total-count"] == "5"  # exact on cursor pages too
    prev = parse_qs(urlsplit(links(second)["prev"]).query)
    assert prev["offset"] == ["0"] and "cursor" not in prev
    seen, _ = walk(alice, params)
    assert seen == ids(list_ok(alice, "plain", params))


def test_count_false_sends_no_total_and_keeps_the_links(alice):
    for index in range(5):
        alice.create_task(title=f"t{index}")
    response = list_ok(alice, "plain", {"count": "false", "limit": 2})
    assert "x-total-count" not in response.headers
    assert "next" in links(response)
    seen, pages = walk(alice, {"count": "false"})
    assert len(seen) == 5 and pages == 3
    last = list_ok(alice, "plain", {"count": "false", "limit": 2, "offset": 4})
    assert set(links(last)) == {"prev"}


def _cursor_of(user: ApiUser, params: dict[str, Any]) -> str:
    response = list_ok(user, "plain", {**params, "limit": 1})
    return parse_qs(urlsplit(links(response)["next"]).query)["cursor"][0]


def _tampered(cursor: str) -> str:
    payload, checksum = cursor.split(".")
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).replace(b",", b",1", 1)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + checksum


@pytest.mark.parametrize("case", [
    "other_filter", "other_sort", "other_order", "tampered", "garbage", "not_base64", "with_offset", "tree",
])
def test_a_cursor_that_does_not_fit_is_422_naming_cursor(alice, case):
    for index in range(3):
        alice.create_task(title=f"t{index}", tags=["home"])
    params = {"sort": "title", "tag": "home"}
    cursor = _cursor_of(alice, params)
    sent = {
        "other_filter": {**params, "tag": "work", "cursor": cursor},
        "other_sort": {**params, "sort": "created_at", "cursor": cursor},
        "other_order": {**params, "order": "desc", "cursor": cursor},
        "tampered": {**params, "cursor": _tampered(cursor)},
        "garbage": {**params, "cursor": "garbage"},
        "not_base64": {**params, "cursor": "é.%%"},
        "with_offset": {**params, "cursor": cursor, "offset": 1},
        "tree": {"sort": "position", "cursor": cursor},
    }[case]
    response = alice.get("/api/tasks", params=sent)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error_code"] == "VALIDATION_ERROR"
    assert [error["field"] for error in body["errors"]] == ["cursor"]
    assert "cursor" in body["detail"]
    assert len(ids(list_ok(alice, "plain"))) == 3  # nothing changed


def test_another_users_cursor_shows_nothing_of_theirs(alice, bob):
    for index in range(3):
        bob.create_task(title=f"bob {index}")
        alice.create_task(title=f"alice {index}")
    cursor = _cursor_of(bob, {})
    response = alice.get("/api/tasks", params={"cursor": cursor})
    assert response.status_code == 422, response.text
    assert "bob" not in response.text


def test_sort_position_pages_by_offset(alice):
    for index in range(3):
        alice.create_task(title=f"t{index}")
    response = list_ok(alice, "plain", {"sort": "position", "limit": 2})
    query = parse_qs(urlsplit(links(response)["next"]).query)
    assert query["offset"] == ["2"] and "cursor" not in query


def test_openapi_documents_cursor_and_count(client):
    operation = client.get("/openapi.json").json()["paths"]["/api/tasks"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
    assert parameters["cursor"]["description"] and parameters["count"]["description"]
    assert "cursor" in operation["responses"]["200"]["headers"]["Link"]["description"]
    assert "count=false" in operation["responses"]["200"]["headers"]["X-Total-Count"]["description"]


def test_a_due_on_listing_pages_on_by_cursor_with_the_zone_of_the_settings(alice):
    """The zone `due_on` reads in comes from the user's settings when `tz` is not sent: worked out
    while the page is read, it must not change what the next page's cursor belongs to."""
    alice.patch("/api/settings", json={"time_zone": "Europe/Berlin"})
    created = {alice.create_task(title=f"t{n}", due_date=f"2026-12-01T{8 + n:02d}:00:00Z")["id"] for n in range(5)}
    response, seen = alice.get("/api/tasks", params={"due_on": "2026-12-01", "limit": 2}), set()
    while True:
        assert response.status_code == 200, response.text
        seen |= {task["id"] for task in response.json()}
        if "next" not in response.links:
            break
        response = alice.get(response.links["next"]["url"])
    assert seen == created
