"""GET /api/tasks (filters, sort, pages, headers), stats, tags, me and DELETE ?completed=true.

Every test runs on SQLite and PostgreSQL and, where it names a route, in both spellings
(`/api/tasks...` and `/api/{user_id}/tasks...`). Bob always owns a copy of Alice's tasks (plus
some of his own), so a filter that forgets the owner shows up as an extra row, count or tag.

Expected results are computed by `reference()`, a plain-Python reading of CONTRACT.md §3, over the
tasks as the API returned them at creation; the API must agree with it for every parameter alone
and in combination.
"""
import re
import uuid
from datetime import datetime, timezone
from itertools import combinations
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import db

from conftest import ApiUser, mint_token

SPELLINGS = ["plain", "user_path"]
LIST_PARAMETERS = [
    "completed", "status", "q", "priority", "tag", "due_before", "due_after", "overdue", "sort", "order", "limit", "offset",
    "list_id", "parent_id",
]

# Titles and descriptions chosen so that an unescaped `%`, `_` or `/` in a LIKE pattern would
# match more than the literal text does.
SEED: list[dict[str, Any]] = [
    {"title": "Buy milk", "description": "2% fat, 1 litre", "priority": "high", "tags": ["Home", "errands"],
     "due_date": "2020-01-01T09:00:00Z"},
    {"title": "Write report", "description": "quarterly_report draft", "priority": "medium", "tags": ["work"],
     "due_date": "2031-01-15T12:00:00+02:00"},
    {"title": "Pay bills", "priority": "low", "tags": ["home", "Finance"], "due_date": "2021-06-01T00:00:00Z",
     "completed": True},
    {"title": "call MOM", "description": "100% sure, no_excuses", "priority": "high", "tags": ["family"]},
    {"title": "Order school books", "description": "12 items for the ÉCOLE, see docs/readme", "priority": "low",
     "due_date": "2031-03-01T08:00:00-05:00"},
    {"title": "plain task", "completed": True},
    {"title": "Fix bike", "description": "HOME repair", "priority": "medium", "tags": ["home", "errands", "Work"],
     "due_date": "2030-06-01T12:00:00Z"},
    {"title": "Renew passport", "priority": "high", "tags": ["admin"], "due_date": "2022-02-02T02:02:02Z",
     "completed": True},
]
BOB_ONLY: list[dict[str, Any]] = [
    {"title": "Bob buys milk too", "description": "HOME 2% _", "priority": "high", "tags": ["bobtag", "home", "work"],
     "due_date": "2020-01-01T09:00:00Z"},
    {"title": "bob overdue", "priority": "low", "tags": ["Home"], "due_date": "2019-05-05T05:05:05Z"},
]


# ----------------------------------------------------------------------------------------------
# Helpers


def prefix(user: ApiUser, spelling: str) -> str:
    return "/api" if spelling == "plain" else f"/api/{user.user_id}"


def ids(response) -> list[int]:
    return [task["id"] for task in response.json()]


def parse_time(value: str | None) -> datetime | None:
    """ISO 8601 to an aware datetime; no offset means UTC (as the API reads it)."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def list_ok(user: ApiUser, spelling: str, params: Any = None, path: str = "/tasks"):
    response = user.get(prefix(user, spelling) + path, params=params)
    assert response.status_code == 200, response.text
    return response


def links(response) -> dict[str, str]:
    """rel -> URL from an RFC 8288 Link header."""
    header = response.headers.get("link")
    if not header:
        return {}
    found = dict((rel, url) for url, rel in re.findall(r'<([^>]*)>\s*;\s*rel="([a-z]+)"', header))
    assert len(found) == header.count("rel="), header
    return found


PRIORITY_RANK = {"low": 1, "medium": 2, "high": 3}


def reference(tasks: list[dict[str, Any]], params: dict[str, Any]) -> list[int]:
    """The ids CONTRACT.md §3 asks for, in order, without paging."""
    now = datetime.now(timezone.utc)

    def keep(task: dict[str, Any]) -> bool:
        due = parse_time(task["due_date"])
        if "completed" in params and task["completed"] != (params["completed"] == "true"):
            return False
        if params.get("status") in ("pending", "completed") and task["completed"] != (params["status"] == "completed"):
            return False
        if "q" in params:
            needle = params["q"].lower()
            if needle not in task["title"].lower() and needle not in (task["description"] or "").lower():
                return False
        if "priority" in params and task["priority"] not in _as_list(params["priority"]):
            return False
        if "tag" in params:
            carried = {tag.lower() for tag in task["tags"]}
            if not all(tag.strip().lower() in carried for tag in _as_list(params["tag"])):
                return False
        if "due_before" in params and (due is None or due > parse_time(params["due_before"])):
            return False
        if "due_after" in params and (due is None or due < parse_time(params["due_after"])):
            return False
        if "overdue" in params:
            is_overdue = not task["completed"] and due is not None and due < now
            if is_overdue != (params["overdue"] == "true"):
                return False
        return True

    kept = [task for task in tasks if keep(task)]
    sort = {"created": "created_at"}.get(params.get("sort", "created_at"), params.get("sort", "created_at"))
    descending = params.get("order", "asc" if sort in ("title", "due_date") else "desc") == "desc"
    if sort == "due_date":
        dated = sorted((t for t in kept if t["due_date"]), key=lambda t: (parse_time(t["due_date"]), t["id"]),
                       reverse=descending)
        undated = sorted((t for t in kept if not t["due_date"]), key=lambda t: t["id"], reverse=descending)
        return [t["id"] for t in dated + undated]  # no due date: last, in both orders
    keys = {
        "created_at": lambda t: (parse_time(t["created_at"]), t["id"]),
        "updated_at": lambda t: (parse_time(t["updated_at"]), t["id"]),
        "priority": lambda t: (PRIORITY_RANK[t["priority"]], t["id"]),
        "title": lambda t: (t["title"].lower(), t["id"]),
    }
    return [t["id"] for t in sorted(kept, key=keys[sort], reverse=descending)]


def _as_list(value: Any) -> list[str]:
    return value if isinstance(value, list) else [value]


# ----------------------------------------------------------------------------------------------
# A read-only world per database: Alice's tasks, and Bob's copy of them plus his own.


class World:
    def __init__(self, client):
        self.alice = ApiUser(client, f"alice_{uuid.uuid4().hex[:10]}", "")
        self.alice.token = mint_token(self.alice.user_id)
        self.bob = ApiUser(client, f"bob_{uuid.uuid4().hex[:10]}", "")
        self.bob.token = mint_token(self.bob.user_id)
        self.alice_tasks: list[dict[str, Any]] = []
        self.bob_tasks: list[dict[str, Any]] = []
        # Interleaved, so that ids and timestamps of both users mix.
        for fields in SEED:
            self.alice_tasks.append(self.alice.create_task(**fields))
            self.bob_tasks.append(self.bob.create_task(**fields))
        for fields in BOB_ONLY:
            self.bob_tasks.append(self.bob.create_task(**fields))
        # Touch an old task so that updated_at order differs from created_at order.
        touched = self.alice.patch(f"/api/tasks/{self.alice_tasks[5]['id']}", json={"description": "touched"})
        assert touched.status_code == 200, touched.text
        self.alice_tasks[5] = touched.json()
        self.bob_ids = {task["id"] for task in self.bob_tasks}


@pytest.fixture(scope="module")
def world(client) -> World:
    return World(client)


@pytest.fixture(params=SPELLINGS)
def spelling(request) -> str:
    return request.param


def check_listing(world: World, spelling: str, params: dict[str, Any]) -> list[int]:
    response = list_ok(world.alice, spelling, params)
    got = ids(response)
    assert not set(got) & world.bob_ids, "Bob's tasks leaked into Alice's list"
    expected = reference(world.alice_tasks, params)
    assert got == expected, f"{params}: got {got}, expected {expected}"
    assert response.headers["x-total-count"] == str(len(expected))
    assert all(task["user_id"] == world.alice.user_id for task in response.json())
    return got


# ----------------------------------------------------------------------------------------------
# Every parameter alone


SINGLE_PARAMETERS = [
    {},
    {"completed": "true"},
    {"completed": "false"},
    {"status": "all"},
    {"status": "pending"},
    {"status": "completed"},
    {"q": "milk"},
    {"q": "MILK"},
    {"q": "home"},  # only in a description ("HOME repair")
    {"q": "Report"},  # title and description
    {"q": "%"},  # literal: only "2% fat" and "100% sure"
    {"q": "2%"},  # unescaped, '%2%%' would also match "12 items"
    {"q": "0%"},
    {"q": "_"},  # literal: only "quarterly_report" and "no_excuses"
    {"q": "y_r"},
    {"q": "o_e"},  # literal: only "no_excuses"
    {"q": "/"},  # SQLAlchemy's default LIKE escape character, matched literally too
    {"q": "s/r"},
    {"q": "nothing matches this"},
    {"priority": "high"},
    {"priority": "low"},
    {"priority": ["high", "low"]},
    {"priority": ["low", "medium", "high"]},
    {"tag": "home"},
    {"tag": "HOME"},  # case-insensitive
    {"tag": " Errands "},  # trimmed like the tags on tasks
    {"tag": ["home", "errands"]},  # all of them
    {"tag": ["home", "work"]},
    {"tag": ["home", "HOME"]},
    {"tag": ["home", "family"]},  # nobody carries both
    {"tag": "bobtag"},  # only Bob's
    {"due_before": "2030-06-01T12:00:00Z"},  # inclusive: "Fix bike" is due exactly then
    {"due_before": "2030-06-01T14:00:00+02:00"},  # the same instant, another offset
    {"due_before": "2030-06-01T11:59:59Z"},
    {"due_after": "2030-06-01T12:00:00Z"},
    {"due_after": "2030-06-01T07:00:00-05:00"},
    {"due_after": "2031-01-15T10:00:00Z"},  # "Write report" was given as 12:00+02:00
    {"due_after": "2031-01-15T10:00:00"},  # no offset: UTC
    {"overdue": "true"},
    {"overdue": "false"},
]


def test_every_parameter_alone(world, spelling):
    for params in SINGLE_PARAMETERS:
        check_listing(world, spelling, params)


@pytest.mark.parametrize("params", SINGLE_PARAMETERS, ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()) or "none")
def test_parameter_alone_shape(world, params):
    """The reference itself is not vacuous: most single filters select some but not all tasks."""
    expected = reference(world.alice_tasks, params)
    if params in ({}, {"status": "all"}, {"priority": ["low", "medium", "high"]}):
        assert len(expected) == len(SEED)
    elif params.get("q") == "nothing matches this" or params.get("tag") in ("bobtag", ["home", "family"]):
        assert expected == []
    else:
        assert 0 < len(expected) < len(SEED), params


def test_literal_wildcards_in_q(world, spelling):
    by_title = {task["title"]: task["id"] for task in world.alice_tasks}
    assert set(check_listing(world, spelling, {"q": "%"})) == {by_title["Buy milk"], by_title["call MOM"]}
    assert set(check_listing(world, spelling, {"q": "2%"})) == {by_title["Buy milk"]}
    assert set(check_listing(world, spelling, {"q": "_"})) == {by_title["Write report"], by_title["call MOM"]}
    assert set(check_listing(world, spelling, {"q": "/"})) == {by_title["Order school books"]}
    assert check_listing(world, spelling, {"q": "MiLk"}) == [by_title["Buy milk"]]


def test_q_non_ascii_case_insensitive(alice, bob):
    """`école` finds `ÉCOLE` and the other way round (Unicode case folding, not only ASCII)."""
    upper = alice.create_task(title="ÉCOLE publique")
    lower = alice.create_task(title="rentrée", description="l'école")
    bob.create_task(title="École de bob")
    assert set(ids(list_ok(alice, "plain", {"q": "école"}))) == {upper["id"], lower["id"]}
    assert set(ids(list_ok(alice, "plain", {"q": "ÉCOLE"}))) == {upper["id"], lower["id"]}
    assert ids(list_ok(alice, "plain", {"q": "RENTRÉE"})) == [lower["id"]]


def test_q_non_ascii_exact_case_works_everywhere(alice, bob):
    task = alice.create_task(title="Crème brûlée", description="Ωmega")
    bob.create_task(title="Crème brûlée")
    assert ids(list_ok(alice, "plain", {"q": "brûlée"})) == [task["id"]]
    assert ids(list_ok(alice, "plain", {"q": "Ωmega"})) == [task["id"]]
    assert ids(list_ok(alice, "plain", {"q": "crème"})) == [task["id"]]  # only the ASCII 'C' differs


# ----------------------------------------------------------------------------------------------
# Combinations


FILTER_CHOICES: dict[str, list[Any]] = {
    "completed": ["true", "false"],
    "status": ["pending", "completed"],
    "q": ["o", "%"],
    "priority": ["high", ["low", "medium"]],
    "tag": ["home", ["home", "errands"]],
    "due_before": ["2030-06-01T14:00:00+02:00"],
    "due_after": ["2021-06-01T00:00:00Z"],
    "overdue": ["true", "false"],
}
SORT_CHOICES = [
    {}, {"sort": "title"}, {"sort": "due_date", "order": "desc"}, {"sort": "priority", "order": "asc"},
    {"sort": "updated_at"}, {"sort": "created"},
]


def _combinations() -> list[dict[str, Any]]:
    """Every pair of filters (each with its first value, then its second), each with a sort."""
    cases = []
    for index, (first, second) in enumerate(combinations(FILTER_CHOICES, 2)):
        for pick in (0, -1):
            params = {first: FILTER_CHOICES[first][pick], second: FILTER_CHOICES[second][pick]}
            if {first, second} == {"completed", "status"}:
                params["status"] = "completed" if params["completed"] == "true" else "pending"
            cases.append({**params, **SORT_CHOICES[index % len(SORT_CHOICES)]})
    cases += [
        {"status": "pending", "q": "o", "priority": ["high", "medium"], "tag": "home", "sort": "due_date"},
        {"completed": "false", "tag": ["HOME", "errands"], "due_before": "2031-01-01T00:00:00Z",
         "due_after": "2019-01-01T00:00:00+05:00", "sort": "title", "order": "desc"},
        {"overdue": "false", "priority": ["low", "high"], "q": "%", "sort": "priority"},
        {"status": "all", "completed": "true", "tag": "home", "sort": "created", "order": "asc"},
        {"overdue": "true", "status": "pending", "tag": "errands", "q": "MILK"},
    ]
    return cases


COMBINATIONS = _combinations()


def test_parameters_in_combination(world, spelling):
    non_empty = 0
    for params in COMBINATIONS:
        non_empty += bool(check_listing(world, spelling, params))
    assert non_empty > len(COMBINATIONS) // 3  # the combinations are not all trivially empty


def test_filters_with_paging_and_sort_combined(world, spelling):
    params = {"status": "pending", "sort": "title", "limit": 2, "offset": 1}
    response = list_ok(world.alice, spelling, params)
    expected = reference(world.alice_tasks, {"status": "pending", "sort": "title"})
    assert ids(response) == expected[1:3]
    assert response.headers["x-total-count"] == str(len(expected))


# ----------------------------------------------------------------------------------------------
# Sorting


@pytest.mark.parametrize("sort", ["created_at", "created", "updated_at", "due_date", "priority", "title"])
@pytest.mark.parametrize("order", [None, "asc", "desc", "DESC"])
def test_sort_and_order(world, spelling, sort, order):
    params = {"sort": sort} if order is None else {"sort": sort, "order": order}
    got = list_ok(world.alice, spelling, params)
    expected = reference(world.alice_tasks, {**params, **({"order": order.lower()} if order else {})})
    assert ids(got) == expected


def test_default_order_is_newest_first(world, spelling):
    expected = [task["id"] for task in reversed(world.alice_tasks)]  # created in this order
    assert ids(list_ok(world.alice, spelling)) == expected
    assert ids(list_ok(world.alice, spelling, {"sort": "created"})) == expected
    assert ids(list_ok(world.alice, spelling, {"sort": "created_at", "order": "desc"})) == expected


def test_updated_at_sort_puts_the_touched_task_first(world, spelling):
    assert ids(list_ok(world.alice, spelling, {"sort": "updated_at"}))[0] == world.alice_tasks[5]["id"]


def test_priority_sorts_by_meaning_not_alphabet(alice, spelling):
    low = alice.create_task(title="l", priority="low")
    high = alice.create_task(title="h", priority="high")
    medium = alice.create_task(title="m", priority="medium")
    assert ids(list_ok(alice, spelling, {"sort": "priority"})) == [high["id"], medium["id"], low["id"]]
    assert ids(list_ok(alice, spelling, {"sort": "priority", "order": "asc"})) == [low["id"], medium["id"], high["id"]]


def test_due_date_sort_puts_due_less_tasks_last_in_both_orders(alice, bob, spelling):
    none_1 = alice.create_task(title="no due 1")
    late = alice.create_task(title="late", due_date="2031-01-01T00:00:00Z")
    none_2 = alice.create_task(title="no due 2")
    early = alice.create_task(title="early", due_date="2029-01-01T00:00:00Z")
    bob.create_task(title="bob's", due_date="2030-01-01T00:00:00Z")
    asc = ids(list_ok(alice, spelling, {"sort": "due_date"}))  # asc by default
    assert asc == [early["id"], late["id"], none_1["id"], none_2["id"]]
    desc = ids(list_ok(alice, spelling, {"sort": "due_date", "order": "desc"}))
    assert desc == [late["id"], early["id"], none_2["id"], none_1["id"]]


def test_title_sort_is_case_insensitive_and_ascending_by_default(alice, spelling):
    banana = alice.create_task(title="Banana")
    apple = alice.create_task(title="apple")
    cherry = alice.create_task(title="cherry")
    assert ids(list_ok(alice, spelling, {"sort": "title"})) == [apple["id"], banana["id"], cherry["id"]]
    assert ids(list_ok(alice, spelling, {"sort": "title", "order": "desc"})) == [cherry["id"], banana["id"], apple["id"]]


@pytest.mark.parametrize(
    "sort, fields",
    [
        ("title", {"title": "Same title"}),
        ("priority", {"priority": "high"}),
        ("due_date", {"due_date": "2030-01-01T00:00:00Z"}),
        ("due_date", {}),  # all without a due date
    ],
)
def test_ties_are_broken_by_id_so_pages_are_stable(alice, spelling, sort, fields):
    created = [alice.create_task(**{"title": f"t{i}", **fields})["id"] for i in range(5)]
    for order, expected in (("asc", created), ("desc", created[::-1])):
        params = {"sort": sort, "order": order}
        assert ids(list_ok(alice, spelling, params)) == expected
        paged = [task_id for offset in range(0, 5, 2)
                 for task_id in ids(list_ok(alice, spelling, {**params, "limit": 2, "offset": offset}))]
        assert paged == expected


# ----------------------------------------------------------------------------------------------
# Paging, X-Total-Count and Link


@pytest.mark.parametrize("params, field", [
    ({"limit": 0}, "limit"),
    ({"limit": 501}, "limit"),
    ({"limit": -1}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"offset": -1}, "offset"),
    ({"offset": "x"}, "offset"),
])
def test_paging_bounds(alice, spelling, params, field):
    response = alice.get(prefix(alice, spelling) + "/tasks", params=params)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error_code"] == "VALIDATION_ERROR"
    assert field in [error["field"] for error in body["errors"]]


def test_paging_limits_accepted(world, spelling):
    assert len(list_ok(world.alice, spelling, {"limit": 1}).json()) == 1
    assert len(list_ok(world.alice, spelling, {"limit": 500}).json()) == len(SEED)
    response = list_ok(world.alice, spelling, {"offset": 1000})
    assert response.json() == []
    assert response.headers["x-total-count"] == str(len(SEED))
    assert "next" not in links(response)


def test_default_page_size_is_100(alice):
    for i in range(101):
        alice.create_task(title=f"task {i}")
    response = list_ok(alice, "plain")
    assert len(response.json()) == 100
    assert response.headers["x-total-count"] == "101"
    assert "next" in links(response)


def test_total_count_ignores_paging(world, spelling):
    total = str(len(SEED))
    for params in ({"limit": 1}, {"limit": 3, "offset": 6}, {"limit": 2, "offset": 100}, {}):
        assert list_ok(world.alice, spelling, params).headers["x-total-count"] == total
    pending = len(reference(world.alice_tasks, {"completed": "false"}))
    assert list_ok(world.alice, spelling, {"completed": "false", "limit": 1}).headers["x-total-count"] == str(pending)


def test_link_next_and_prev_where_they_exist(world, spelling):
    total = len(SEED)  # 8
    first = list_ok(world.alice, spelling, {"limit": 3})
    assert set(links(first)) == {"next"}
    middle = list_ok(world.alice, spelling, {"limit": 3, "offset": 3})
    assert set(links(middle)) == {"next", "prev"}
    last = list_ok(world.alice, spelling, {"limit": 3, "offset": 6})
    assert set(links(last)) == {"prev"}
    assert len(last.json()) == total - 6
    exact = list_ok(world.alice, spelling, {"limit": total})
    assert "link" not in exact.headers  # everything fits: no Link at all
    exact_two_pages = list_ok(world.alice, spelling, {"limit": 4, "offset": 4})
    assert set(links(exact_two_pages)) == {"prev"}
    query = parse_qs(urlsplit(links(middle)["prev"]).query)
    assert query["offset"] == ["0"] and query["limit"] == ["3"]
    query = parse_qs(urlsplit(links(middle)["next"]).query)  # next goes by cursor: the page after offset 6
    assert "offset" not in query and query["limit"] == ["3"] and query["cursor"]
    assert ids(world.alice.get(links(middle)["next"])) == ids(last)


@pytest.mark.parametrize("params", [
    {},
    {"sort": "title"},
    {"tag": ["home", "Errands"], "priority": ["high", "medium"], "sort": "due_date", "order": "desc"},
    {"q": "%", "status": "pending"},
    {"due_after": "2020-01-01T00:00:00+01:00", "overdue": "false", "sort": "priority"},
    {"completed": "false", "sort": "created"},
])
def test_following_next_links_yields_every_task_once(world, spelling, params):
    """The Link URLs keep every filter: walking them gives exactly the unpaged result."""
    expected = reference(world.alice_tasks, params)
    url = prefix(world.alice, spelling) + "/tasks"
    response = world.alice.get(url, params={**params, "limit": 1})
    seen: list[int] = []
    pages = 0
    while True:
        assert response.status_code == 200, response.text
        assert response.headers["x-total-count"] == str(len(expected))
        seen += ids(response)
        pages += 1
        assert pages <= len(SEED) + 1
        next_url = links(response).get("next")
        if next_url is None:
            break
        assert next_url.startswith(url + "?")  # same spelling, same route
        next_query = parse_qs(urlsplit(next_url).query)
        for name, value in params.items():
            assert next_query[name] == _as_list(value), (name, next_url)
        response = world.alice.get(next_url)
    assert seen == expected
    assert len(set(seen)) == len(seen)
    # And back: prev links from the last page walk the same tasks in reverse.
    back: list[int] = []
    while True:
        back = ids(response) + back
        prev_url = links(response).get("prev")
        if prev_url is None:
            break
        response = world.alice.get(prev_url)
        assert response.status_code == 200
    assert back == expected


def test_link_keeps_an_offset_given_with_a_plus_sign(world, spelling):
    """A `+` left unencoded in a date-time offset reads as a space; it is still understood."""
    url = prefix(world.alice, spelling) + "/tasks?due_after=2020-01-01T10:00:00+01:00&limit=1"
    response = world.alice.get(url)
    assert response.status_code == 200, response.text
    expected = reference(world.alice_tasks, {"due_after": "2020-01-01T10:00:00+01:00"})
    assert response.headers["x-total-count"] == str(len(expected))
    seen = ids(response)
    while "next" in links(response):
        response = world.alice.get(links(response)["next"])
        assert response.status_code == 200, response.text
        seen += ids(response)
    assert seen == expected


# ----------------------------------------------------------------------------------------------
# Enumerations and other invalid values


@pytest.mark.parametrize("params, field, allowed", [
    ({"status": "done"}, "status", ["all", "pending", "completed"]),
    ({"priority": "urgent"}, "priority", ["low", "medium", "high"]),
    ({"priority": ["high", "urgent"]}, "priority", ["low", "medium", "high"]),
    ({"sort": "foo"}, "sort", ["created_at", "created", "updated_at", "due_date", "priority", "title"]),
    ({"order": "up"}, "order", ["asc", "desc"]),
])
def test_unknown_enum_value_is_422_naming_parameter_and_allowed_values(alice, spelling, params, field, allowed):
    alice.create_task(title="there is something to list")
    response = alice.get(prefix(alice, spelling) + "/tasks", params=params)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error_code"] == "VALIDATION_ERROR"
    errors = [error for error in body["errors"] if error["field"] == field]
    assert errors, body
    for value in allowed:
        assert f"'{value}'" in errors[0]["message"], errors[0]["message"]
    assert field in body["detail"]


@pytest.mark.parametrize("params, field", [
    ({"completed": "maybe"}, "completed"),
    ({"overdue": "sometimes"}, "overdue"),
    ({"due_before": "tomorrow"}, "due_before"),
    ({"due_after": "2026-13-01T00:00:00Z"}, "due_after"),
    ({"q": "x" * 201}, "q"),
    ({"tag": "t" * 51}, "tag"),
    ({"completed": "true", "status": "pending"}, "status"),  # contradictory
])
def test_invalid_values_are_422(alice, spelling, params, field):
    response = alice.get(prefix(alice, spelling) + "/tasks", params=params)
    assert response.status_code == 422, response.text
    assert field in [error["field"] for error in response.json()["errors"]]


def test_enumerated_values_are_case_insensitive(world, spelling):
    expected = reference(world.alice_tasks, {"status": "pending", "priority": "high", "sort": "title", "order": "desc"})
    got = list_ok(world.alice, spelling, {"status": "PENDING", "priority": "High", "sort": "Title", "order": "DESC"})
    assert ids(got) == expected


# ----------------------------------------------------------------------------------------------
# due_before / due_after / overdue


def test_due_bounds_are_inclusive_whatever_the_offset(alice, bob, spelling):
    at = alice.create_task(title="at", due_date="2030-06-01T12:00:00Z")["id"]
    after = alice.create_task(title="after", due_date="2030-06-01T12:00:01Z")["id"]
    before = alice.create_task(title="before", due_date="2030-06-01T11:59:59.999999Z")["id"]
    alice.create_task(title="no due date")
    bob.create_task(title="bob at", due_date="2030-06-01T12:00:00Z")

    def due(**params):
        return set(ids(list_ok(alice, spelling, {"sort": "due_date", **params})))

    for instant in ("2030-06-01T12:00:00Z", "2030-06-01T14:00:00+02:00", "2030-06-01T07:00:00-05:00",
                    "2030-06-01T12:00:00", "2030-06-01T12:00:00.000000+00:00", "2030-06-01T17:30:00+05:30"):
        assert due(due_before=instant) == {at, before}, instant
        assert due(due_after=instant) == {at, after}, instant
        assert due(due_before=instant, due_after=instant) == {at}, instant
    assert due(due_after="2030-06-01T11:59:59.999999Z", due_before="2030-06-01T12:00:01Z") == {at, after, before}
    assert due(due_after="2030-06-02T00:00:00+14:00") == {at, after, before}  # 2030-06-01T10:00Z
    assert due(due_after="2030-06-01T12:00:00.000001Z") == {after}
    assert due(due_before="2030-06-01T11:00:00-01:00", due_after="2030-06-01T13:00:00+01:00") == {at}


def test_overdue_true_and_false(alice, bob, spelling):
    overdue = alice.create_task(title="late", due_date="2020-01-01T00:00:00Z")["id"]
    done_late = alice.create_task(title="late but done", due_date="2020-01-01T00:00:00Z", completed=True)["id"]
    future = alice.create_task(title="future", due_date="2099-01-01T00:00:00Z")["id"]
    undated = alice.create_task(title="undated")["id"]
    bob.create_task(title="bob late", due_date="2020-01-01T00:00:00Z")
    assert ids(list_ok(alice, spelling, {"overdue": "true"})) == [overdue]
    assert set(ids(list_ok(alice, spelling, {"overdue": "false"}))) == {done_late, future, undated}
    assert ids(list_ok(alice, spelling, {"overdue": "true", "completed": "true"})) == []
    stats = list_ok(alice, spelling, path="/tasks/stats").json()
    assert stats["overdue"] == 1


# ----------------------------------------------------------------------------------------------
# Stats, tags, me


def test_stats_count_only_the_callers_tasks(world, spelling):
    now = datetime.now(timezone.utc)
    tasks = world.alice_tasks
    expected = {
        "total": len(tasks),
        "completed": sum(t["completed"] for t in tasks),
        "pending": sum(not t["completed"] for t in tasks),
        "overdue": sum(not t["completed"] and t["due_date"] is not None and parse_time(t["due_date"]) < now
                       for t in tasks),
        "by_priority": {p: sum(t["priority"] == p for t in tasks) for p in ("low", "medium", "high")},
    }
    assert expected == {"total": 8, "completed": 3, "pending": 5, "overdue": 1,
                        "by_priority": {"low": 2, "medium": 3, "high": 3}}
    assert list_ok(world.alice, spelling, path="/tasks/stats").json() == expected
    bob_stats = list_ok(world.bob, spelling, path="/tasks/stats").json()
    assert bob_stats["total"] == len(SEED) + len(BOB_ONLY)
    assert bob_stats["overdue"] == 3


def test_stats_of_a_user_without_tasks(new_user, spelling):
    nobody = new_user("nobody")
    assert list_ok(nobody, spelling, path="/tasks/stats").json() == {
        "total": 0, "completed": 0, "pending": 0, "overdue": 0, "by_priority": {"low": 0, "medium": 0, "high": 0},
    }
    assert list_ok(nobody, spelling, path="/tags").json() == []
    response = list_ok(nobody, spelling)
    assert response.json() == [] and response.headers["x-total-count"] == "0" and "link" not in response.headers


def test_tags_most_used_first_case_insensitive_and_scoped(world, spelling):
    tags = list_ok(world.alice, spelling, path="/tags").json()
    assert [(tag["tag"].lower(), tag["count"]) for tag in tags] == [
        ("home", 3), ("errands", 2), ("work", 2), ("admin", 1), ("family", 1), ("finance", 1),
    ]
    spellings = {tag["tag"].lower(): tag["tag"] for tag in tags}
    assert spellings["home"] in ("Home", "home") and spellings["work"] in ("Work", "work")
    assert spellings["finance"] == "Finance"  # the only spelling used
    bob_tags = {tag["tag"].lower(): tag["count"] for tag in list_ok(world.bob, spelling, path="/tags").json()}
    assert bob_tags["home"] == 5 and bob_tags["bobtag"] == 1 and bob_tags["work"] == 3


def test_tags_follow_updates_and_deletes(alice, bob, spelling):
    first = alice.create_task(title="a", tags=["x", "Y"])
    second = alice.create_task(title="b", tags=["y"])
    bob.create_task(title="bob", tags=["x", "y", "z"])

    def tag_counts():
        return [(t["tag"].lower(), t["count"]) for t in list_ok(alice, spelling, path="/tags").json()]

    assert tag_counts() == [("y", 2), ("x", 1)]
    assert alice.patch(f"/api/tasks/{first['id']}", json={"tags": ["z"]}).status_code == 200
    assert tag_counts() == [("y", 1), ("z", 1)]
    assert ids(list_ok(alice, spelling, {"tag": "x"})) == []
    assert alice.delete(f"/api/tasks/{second['id']}").status_code == 204
    assert tag_counts() == [("z", 1)]


def test_me(new_user, alice, bob, spelling):
    carol = new_user("carol", email="carol@example.com", name="Carol C.")
    assert list_ok(carol, spelling, path="/me").json() == {
        "user_id": carol.user_id, "email": "carol@example.com", "name": "Carol C.",
    }
    assert list_ok(alice, spelling, path="/me").json() == {"user_id": alice.user_id, "email": None, "name": None}


@pytest.mark.parametrize("method, path", [
    ("GET", "/tasks"), ("GET", "/tasks/stats"), ("GET", "/tags"), ("GET", "/me"), ("DELETE", "/tasks?completed=true"),
])
def test_user_path_spelling_must_name_the_caller(alice, bob, method, path):
    bob.create_task(title="bob's", completed=True)
    response = alice.request(method, f"/api/{bob.user_id}{path}")
    assert response.status_code == 403, response.text
    assert response.json()["error_code"] == "FORBIDDEN"
    assert list_ok(bob, "plain", path="/tasks/stats").json()["completed"] == 1


# ----------------------------------------------------------------------------------------------
# DELETE /api/tasks?completed=true


def test_delete_completed_clears_only_the_callers_completed_tasks(alice, bob, spelling):
    keep = [alice.create_task(title="pending 1", tags=["keep"]), alice.create_task(title="pending 2")]
    for i in range(3):
        alice.create_task(title=f"done {i}", completed=True, tags=["gone"])
    bob_done = [bob.create_task(title=f"bob done {i}", completed=True, tags=["gone"]) for i in range(2)]
    bob_pending = bob.create_task(title="bob pending")
    url = prefix(alice, spelling) + "/tasks"

    response = alice.delete(url, params={"completed": "true"})
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": 3}
    assert set(ids(list_ok(alice, spelling))) == {task["id"] for task in keep}
    assert [t["tag"] for t in list_ok(alice, spelling, path="/tags").json()] == ["keep"]
    assert set(ids(list_ok(bob, "plain"))) == {task["id"] for task in bob_done} | {bob_pending["id"]}
    assert list_ok(bob, "plain", path="/tasks/stats").json()["completed"] == 2

    again = alice.delete(url, params={"completed": "true"})
    assert again.status_code == 200 and again.json() == {"deleted": 0}


@pytest.mark.parametrize("query", ["", "?completed=false", "?completed=0", "?completed=maybe", "?status=completed"])
def test_delete_without_the_completed_flag_is_422(alice, spelling, query):
    done = alice.create_task(title="done", completed=True)
    response = alice.delete(prefix(alice, spelling) + "/tasks" + query)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error_code"] == "VALIDATION_ERROR"
    assert "completed" in [error["field"] for error in body["errors"]]
    assert ids(list_ok(alice, spelling)) == [done["id"]]


# ----------------------------------------------------------------------------------------------
# OpenAPI


@pytest.mark.parametrize("path", ["/api/tasks", "/api/{user_id}/tasks"])
def test_openapi_documents_every_list_parameter(client, path):
    spec = client.get("/openapi.json").json()
    operation = spec["paths"][path]["get"]
    parameters = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
    assert set(LIST_PARAMETERS) <= set(parameters), set(LIST_PARAMETERS) - set(parameters)
    for name in LIST_PARAMETERS:
        parameter = parameters[name]
        assert parameter.get("description"), name
        schema = parameter["schema"]
        has_example = "example" in parameter or "examples" in parameter or "examples" in schema or "example" in schema
        assert has_example, f"{name} has no example"
    assert set(_enum(parameters["sort"]["schema"])) == {"created_at", "created", "updated_at", "due_date", "priority", "title", "position"}
    assert set(_enum(parameters["order"]["schema"])) == {"asc", "desc"}
    assert set(_enum(parameters["status"]["schema"])) == {"all", "pending", "completed"}
    assert set(_enum(parameters["priority"]["schema"])) == {"low", "medium", "high"}
    headers = operation["responses"]["200"]["headers"]
    assert {"X-Total-Count", "Link"} <= set(headers)


@pytest.mark.parametrize("prefix_path", ["/api", "/api/{user_id}"])
def test_openapi_documents_stats_tags_me_and_delete_completed(client, prefix_path):
    paths = client.get("/openapi.json").json()["paths"]
    for path, method in (("/tasks/stats", "get"), ("/tags", "get"), ("/me", "get"), ("/tasks", "delete")):
        operation = paths[prefix_path + path][method]
        assert operation.get("summary"), path
        assert "application/json" in operation["responses"]["200"]["content"], path
    delete = paths[prefix_path + "/tasks"]["delete"]
    assert any(p["name"] == "completed" and p["in"] == "query" and p.get("description") for p in delete["parameters"])
    assert "422" in delete["responses"]


def _enum(schema: dict[str, Any]) -> list[str]:
    if "enum" in schema:
        return schema["enum"]
    for part in schema.get("anyOf", []):
        if "enum" in part:
            return part["enum"]
        if part.get("type") == "array":
            return _enum(part["items"])
    if schema.get("type") == "array":
        return _enum(schema["items"])
    return []


# ----------------------------------------------------------------------------------------------
# Statements per request


def test_statements_per_list_request_do_not_grow_with_page_size(new_user, monkeypatch):
    user = new_user("many")
    for i in range(60):
        user.create_task(title=f"task {i}", tags=["common", f"group{i % 3}", f"own{i}"], priority=("low", "high")[i % 2])
    statements: list[str] = []
    real_execute = db.Connection._execute

    async def counting_execute(self, sql, *args):
        statements.append(sql)
        return await real_execute(self, sql, *args)

    # A user's first tag or search listing also asks (once a minute) whether they have many tasks.
    user.get("/api/tasks", params={"tag": "common"})
    monkeypatch.setattr(db.Connection, "_execute", counting_execute)
    counts = {}
    for limit in (5, 50):
        statements.clear()
        response = user.get("/api/tasks", params={"tag": "common", "priority": ["low", "high"], "limit": limit})
        assert response.status_code == 200, response.text
        assert len(response.json()) == limit
        assert all(len(task["tags"]) == 3 for task in response.json())
        assert response.headers["x-total-count"] == "60"
        counts[limit] = list(statements)
    assert len(counts[5]) == len(counts[50]), (counts[5], counts[50])
    assert 1 <= len(counts[50]) <= 2, counts[50]  # the page, and the total count
