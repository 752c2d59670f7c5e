"""§9: dates are years 1 to 9999. Every route that takes a date accepts both ends of that range, in
the zones furthest from UTC, or answers a 422 naming the field: never a 500. On both databases.

The sweep sends every date-taking input (due dates, zones, rules, reminders, listing filters,
settings, completions, previews, the MCP tool) at the edges; the tests after it pin what a user
gets in the cases that used to fail."""
from datetime import datetime, timezone
from typing import Any

import orjson
import pytest

import webhooks
from responses import to_json

MOMENTS = [
    "0001-01-01T00:00:00Z", "0001-01-01T09:00:00Z", "0001-01-01T23:59:59Z",
    "9999-12-31T00:00:00Z", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59.999999Z",
]
DAYS = ["0001-01-01", "0001-01-02", "9999-12-30", "9999-12-31"]
ZONES = [None, "Pacific/Kiritimati", "Etc/GMT+12", "Pacific/Niue", "Asia/Tokyo"]  # +14, -12, -11, +9
RULES = [
    {"rrule": "FREQ=DAILY"}, {"rrule": "FREQ=DAILY;INTERVAL=3", "from": "completion"}, {"rrule": "FREQ=WEEKLY;INTERVAL=2"},
    {"rrule": "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA,SU"}, {"rrule": "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1"},
    {"rrule": "FREQ=YEARLY;COUNT=3"}, {"rrule": "FREQ=DAILY;UNTIL=99991231T235959Z"}, {"rrule": "FREQ=DAILY;UNTIL=00010105"},
]
REMINDERS = [
    [{"before_minutes": 600}], [{"before_minutes": 40320}], [{"at": "0001-01-01T00:00:00Z"}], [{"at": "9999-12-31T23:59:59Z"}],
]
DATED_FIELDS = {"due_date", "time_zone", "recurrence", "reminders"}


def fields_named(response) -> set[str]:
    return {error["field"] for error in response.json().get("errors", [])}


def assert_answered(response, *, fields: set[str] = DATED_FIELDS) -> bool:
    """No 5xx; a 422 names one of `fields`. True for a 2xx."""
    assert response.status_code < 500, (response.request.url, response.text)
    if response.status_code == 422:
        assert fields_named(response) and fields_named(response) <= fields, response.text
    else:
        assert response.status_code < 300, response.text
    return response.status_code < 300


def exercise(user, body: dict[str, Any]) -> None:
    """Create the task; if it was created, read it back, preview, complete and move it at the edges."""
    created = user.post("/api/tasks", json={"title": "edge", **body})
    if not assert_answered(created):
        return
    task = created.json()
    read = user.get(f"/api/tasks/{task['id']}")
    assert read.status_code == 200 and read.json()["due_date"] == task["due_date"], read.text
    if task["recurrence"] is not None:
        assert user.get(f"/api/tasks/{task['id']}/occurrences?count=50").status_code == 200
        completed = user.patch(f"/api/tasks/{task['id']}/complete", json={"completed": True})
        assert completed.status_code == 200, completed.text
        following = completed.json()["next_occurrence_id"]
        if following is not None:
            assert user.get(f"/api/tasks/{following}").status_code == 200
    for due in ("0001-01-01T09:00:00Z", "9999-12-30", "9999-12-31"):
        assert_answered(user.patch(f"/api/tasks/{task['id']}", json={"due_date": due}))


@pytest.mark.parametrize("due", MOMENTS + DAYS)
@pytest.mark.parametrize("zone", ZONES)
def test_every_dated_input_at_the_edges_is_accepted_or_a_422_naming_it(alice, due, zone):
    base = {"due_date": due, "time_zone": zone}
    for rule in RULES:
        exercise(alice, {**base, "recurrence": rule})
    for reminders in REMINDERS:
        exercise(alice, {**base, "reminders": reminders})
    exercise(alice, {**base, "recurrence": RULES[0], "reminders": REMINDERS[0]})


@pytest.mark.parametrize("zone", ZONES)
def test_listing_filters_at_the_edges_answer(alice, zone):
    tz = {"tz": zone} if zone else {}
    for day in DAYS:
        assert alice.get("/api/tasks", params={"due_on": day, **tz}).status_code == 200
    for moment in MOMENTS:
        for name in ("due_before", "due_after"):
            assert alice.get("/api/tasks", params={name: moment}).status_code == 200
        assert alice.get("/api/reminders", params={"until": moment}).status_code == 200
    assert alice.get("/api/tasks?sort=due_date&order=asc&limit=1").status_code == 200


@pytest.mark.parametrize("zone", [zone for zone in ZONES if zone])
def test_changing_the_zone_moves_all_day_tasks_at_the_edges(new_user, zone):
    user = new_user()
    early = user.create_task(due_date="0001-01-01", reminders=[{"before_minutes": 1440}])
    late = user.create_task(due_date="9999-12-29", reminders=[{"before_minutes": 600}], recurrence={"rrule": "FREQ=DAILY"})
    assert user.patch("/api/settings", json={"time_zone": zone}).status_code == 200
    for task in (early, late):
        moved = user.get(f"/api/tasks/{task['id']}").json()
        assert moved["due_date"] == task["due_date"] and moved["reminders"][0]["before_minutes"] in (600, 1440)
    completed = user.patch(f"/api/tasks/{late['id']}/complete", json={"completed": True}).json()
    last = user.get(f"/api/tasks/{completed['next_occurrence_id']}").json()
    assert last["due_date"] == "9999-12-30"
    completed = user.patch(f"/api/tasks/{last['id']}/complete", json={"completed": True})
    assert completed.status_code == 200 and completed.json()["next_occurrence_id"] is None  # 9999-12-31 cannot end


def test_the_mcp_tool_takes_dates_at_the_edges_or_says_which_field_is_wrong(alice):
    headers = {**alice.auth, "Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": "2025-06-18"}
    for due in MOMENTS + DAYS:
        for extra in ({}, {"recurrence": RULES[0]}, {"reminders": REMINDERS[0]}, {"time_zone": "Pacific/Kiritimati"}):
            arguments = {"title": "edge", "due_date": due, **extra}
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add_task", "arguments": arguments}}
            result = alice.client.post("/mcp", json=body, headers=headers).json()["result"]
            content = result["structuredContent"]
            if result.get("isError"):
                assert content["error_code"] == "VALIDATION_ERROR", content
                assert {error["field"] for error in content["errors"]} <= DATED_FIELDS
            else:
                assert alice.get(f"/api/tasks/{content['task_id']}").json()["due_date"] == content["task"]["due_date"]


# ----------------------------------------------------------------------------- what a user gets


def test_all_day_9999_12_31_is_a_422_saying_it_is_out_of_range_in_every_zone(alice):
    for zone in ZONES:
        response = alice.post("/api/tasks", json={"title": "x", "due_date": "9999-12-31", "time_zone": zone})
        assert response.status_code == 422 and fields_named(response) == {"due_date"}
        assert "out of range" in response.json()["errors"][0]["message"]
    assert alice.create_task(due_date="9999-12-30", time_zone="Etc/GMT+12")["due_date"] == "9999-12-30"
    assert alice.create_task(due_date="9999-12-31T23:59:59Z")["due_date"] == "9999-12-31T23:59:59Z"


def test_a_daily_series_from_the_first_day_of_the_calendar(alice):
    task = alice.create_task(due_date="0001-01-01T09:00:00Z", recurrence={"rrule": "FREQ=DAILY"})
    assert alice.get(f"/api/tasks/{task['id']}/occurrences?count=2").json() == ["0001-01-02T09:00:00Z", "0001-01-03T09:00:00Z"]
    completed = alice.patch(f"/api/tasks/{task['id']}/complete", json={"completed": True}).json()
    assert alice.get(f"/api/tasks/{completed['next_occurrence_id']}").json()["due_date"] > "2000"  # missed ones skipped


def test_a_series_ends_at_the_last_day_of_the_calendar(alice):
    task = alice.create_task(due_date="9999-12-30T09:00:00Z", recurrence={"rrule": "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA,SU"})
    assert alice.get(f"/api/tasks/{task['id']}/occurrences?count=5").json() == ["9999-12-31T09:00:00Z"]
    all_day = alice.create_task(due_date="9999-12-29", recurrence={"rrule": "FREQ=DAILY"})
    assert alice.get(f"/api/tasks/{all_day['id']}/occurrences").json() == ["9999-12-30"]


def test_a_reminder_before_the_first_moment_is_a_422_naming_reminders(alice):
    response = alice.post("/api/tasks", json={"title": "x", "due_date": "0001-01-01T09:00:00Z", "reminders": [{"before_minutes": 600}]})
    assert response.status_code == 422 and fields_named(response) == {"reminders"}
    task = alice.create_task(due_date="0001-01-01T09:00:00Z", reminders=[{"before_minutes": 540}])
    assert task["reminders"][0]["fire_at"] == "0001-01-01T00:00:00Z"


def test_a_recurring_moment_outside_the_calendar_in_its_zone_is_a_422_naming_due_date(alice):
    # 0001-01-01T09:00Z is 0000-12-31T21:00 at UTC-12: its occurrences cannot be computed there.
    body = {"title": "x", "due_date": "0001-01-01T09:00:00Z", "time_zone": "Etc/GMT+12", "recurrence": {"rrule": "FREQ=DAILY"}}
    response = alice.post("/api/tasks", json=body)
    assert response.status_code == 422 and fields_named(response) == {"due_date"}


def test_due_on_the_first_and_last_days_finds_their_tasks(alice):
    first = alice.create_task(due_date="0001-01-01T09:00:00Z")
    last = alice.create_task(due_date="9999-12-31T23:59:59Z")
    last_all_day = alice.create_task(due_date="9999-12-30", time_zone="Pacific/Kiritimati")

    def ids(query: str) -> set[int]:
        response = alice.get(f"/api/tasks?{query}")
        assert response.status_code == 200, response.text
        return {task["id"] for task in response.json()}

    assert ids("due_on=0001-01-01&tz=Asia/Tokyo") == {first["id"]}  # 18:00 in Tokyo
    assert ids("due_on=9999-12-31") == {last["id"]}
    assert ids("due_on=9999-12-30") == {last_all_day["id"]}
    assert ids("due_on=9999-12-31&tz=Pacific/Kiritimati") == set()  # 23:59 UTC is 10000-01-01 there
    assert ids("due_on=9999-12-30&tz=Pacific/Kiritimati") == {last_all_day["id"]}


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_pages_sorted_by_due_date_walk_across_the_edges(new_user, order):
    user = new_user()
    created = [user.create_task(due_date=due)["id"] for due in ("0001-01-01T00:00:00Z", "0001-01-01", "9999-12-30",
                                                                 "9999-12-31T23:59:59.999999Z", "2026-06-01")]
    response, seen = user.get(f"/api/tasks?sort=due_date&order={order}&limit=2"), []
    while True:
        assert response.status_code == 200, response.text
        seen += [task["id"] for task in response.json()]
        if 'rel="next"' not in response.headers.get("Link", ""):
            break
        response = user.get(response.links["next"]["url"])
    assert sorted(seen) == sorted(created) and len(seen) == len(created)


def test_events_and_webhooks_carry_dates_at_the_edges(alice):
    since = alice.get("/api/changes").json()["cursor"]
    task = alice.create_task(due_date="0001-01-01T00:00:00Z", reminders=[{"at": "9999-12-31T23:59:59Z"}])
    changes = alice.get(f"/api/changes?since={since}").json()["changes"]
    change = next(change for change in changes if change["type"] == "task.created" and change["id"] == task["id"])
    assert change["data"]["due_date"] == "0001-01-01T00:00:00Z" == task["due_date"]
    row = {"id": 1, "seq": 1, "type": change["type"], "entity_id": task["id"], "data": change["data"], "actor": alice.user_id,
           "created_at": datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)}
    sent = orjson.loads(to_json(webhooks.cloud_event(row, alice.user_id, "https://tasks.example.com")))
    assert sent["time"] == "9999-12-31T23:59:59Z"
    assert sent["data"]["data"]["reminders"][0]["at"] == "9999-12-31T23:59:59Z"
