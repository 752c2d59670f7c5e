"""`q=` finds the same tasks whichever way it is run: the user's tasks read as they are (a small
user, and SQLite), or the trigram index of migration 0009 (PostgreSQL, a user with many tasks:
forced here), a case-insensitive substring of the title or of the description, wildcards literal."""
import pytest

import queries
from test_listing import ids, list_ok


@pytest.fixture(params=["small_user", "indexed"])
def search_path(request, monkeypatch) -> str:
    if request.param == "indexed":  # as for a user with more than queries.SEARCH_INDEX_FROM tasks

        async def many(connection, user_id):
            return queries.SEARCH_INDEX_FROM + 1

        monkeypatch.setattr(queries, "_tasks_seen_by", many)
    return request.param


def found(user, q: str, **params) -> list[int]:
    return ids(list_ok(user, "plain", {"q": q, **params}))


def test_q_same_matches_either_way(alice, bob, search_path):
    percent = alice.create_task(title="Save 20% now")
    underscore = alice.create_task(title="x", description="snake_case name")
    slash = alice.create_task(title="a\\b and c/d")
    mixed = alice.create_task(title="Quarterly REPORT")
    accents = alice.create_task(title="ÉCOLE", description="Crème brûlée Ωmega")
    no_description = alice.create_task(title="plain words")
    bob.create_task(title="Quarterly report of bob", description="20% snake_case ÉCOLE")
    assert found(alice, "%") == [percent["id"]]
    assert found(alice, "0%") == [percent["id"]]
    assert found(alice, "e_c") == [underscore["id"]]
    assert found(alice, "_") == [underscore["id"]]
    assert found(alice, "a\\b") == [slash["id"]]
    assert found(alice, "c/d") == [slash["id"]]
    assert found(alice, "report") == [mixed["id"]]
    assert found(alice, "RePoRt") == [mixed["id"]]
    assert found(alice, "école") == [accents["id"]]
    assert found(alice, "BRÛLÉE") == [accents["id"]]
    assert found(alice, "ωMEGA") == [accents["id"]]
    assert found(alice, "words") == [no_description["id"]]
    assert found(alice, "zanzibar") == []


def test_q_never_matches_across_title_and_description(alice, search_path):
    task = alice.create_task(title="alpha", description="beta")
    assert found(alice, "alpha") == [task["id"]]
    assert found(alice, "beta") == [task["id"]]
    assert found(alice, "alphabeta") == []
    assert found(alice, "alpha beta") == []
    assert found(alice, "alpha\x1fbeta") == []  # the index's separator: plain search, still no match
    assert found(alice, "a\x1f") == []
    odd = alice.create_task(title="unit\x1fseparator")
    assert found(alice, "t\x1fs") == [odd["id"]]


def test_q_pages_and_count(alice, search_path):
    matching = [alice.create_task(title=f"report {number}")["id"] for number in range(5)]
    alice.create_task(title="other")
    first = list_ok(alice, "plain", {"q": "REPORT", "limit": 2})
    assert first.headers["x-total-count"] == "5"
    assert ids(first) == matching[::-1][:2]
    assert found(alice, "report", sort="created_at", order="asc", limit=3, offset=3) == matching[3:]
    assert found(alice, "report", count="false", sort="title") == sorted(matching)
    assert "x-total-count" not in list_ok(alice, "plain", {"q": "report", "count": "false", "limit": 2}).headers
