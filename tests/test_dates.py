"""§9 over HTTP, on both databases: settings, all-day dates, time zones, due_on, recurring tasks."""
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from conftest import mint_token
from live_server import run_in_threads

WEEKLY = {"rrule": "FREQ=WEEKLY", "from": "due"}
# Two zones 26 hours apart: one calendar date is over in the first long before it is in the second.
EAST, WEST = "Etc/GMT-14", "Etc/GMT+12"


def today_in(zone_name: str) -> str:
    return datetime.now(ZoneInfo(zone_name)).date().isoformat()


def ids(response) -> list[int]:
    assert response.status_code == 200, response.text
    return [task["id"] for task in response.json()]


def field_names(response) -> set[str]:
    assert response.status_code == 422, response.text
    assert response.json()["error_code"] == "VALIDATION_ERROR"
    return {error["field"].split(".")[0] for error in response.json()["errors"]}


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize("prefix", ["/api", "/api/{user}"])
def test_settings_default_to_utc_and_change_in_both_spellings(alice, prefix):
    url = prefix.format(user=alice.user_id) + "/settings"
    assert alice.get(url).json() == {"time_zone": "UTC"}
    response = alice.patch(url, json={"time_zone": "Europe/Berlin"})
    assert response.status_code == 200, response.text
    assert response.json() == {"time_zone": "Europe/Berlin"}
    assert alice.get(url).json() == {"time_zone": "Europe/Berlin"}


@pytest.mark.parametrize(
    "body",
    [{"time_zone": "Mars/Olympus"}, {"time_zone": "CEST"}, {"time_zone": "../../etc/passwd"}, {"time_zone": ""},
     {"time_zone": None}, {"time_zone": 1}, {"time_zone": "UTC", "theme": "dark"}, {}],
)
def test_settings_refuse_anything_but_an_iana_zone_and_change_nothing(alice, body):
    alice.patch("/api/settings", json={"time_zone": "Asia/Tokyo"})
    response = alice.patch("/api/settings", json=body)
    assert response.status_code == 422
    assert field_names(response) & {"time_zone", "theme", "body"}
    assert alice.get("/api/settings").json() == {"time_zone": "Asia/Tokyo"}


def test_settings_are_per_user_and_the_path_must_name_the_caller(alice, bob):
    alice.patch("/api/settings", json={"time_zone": "Europe/Berlin"})
    assert bob.get("/api/settings").json() == {"time_zone": "UTC"}
    assert bob.get(f"/api/{alice.user_id}/settings").status_code == 403
    assert bob.patch(f"/api/{alice.user_id}/settings", json={"time_zone": "UTC"}).status_code == 403
    assert alice.get("/api/settings").json() == {"time_zone": "Europe/Berlin"}
    assert alice.client.get("/api/settings").status_code == 401


# ----------------------------------------------------------------------------- all-day and time zones


def test_all_day_date_is_returned_as_that_date_and_a_moment_in_utc(alice):
    all_day = alice.create_task(due_date="2026-12-01")
    assert all_day["due_date"] == "2026-12-01"
    assert alice.get(f"/api/tasks/{all_day['id']}").json()["due_date"] == "2026-12-01"
    timed = alice.create_task(due_date="2026-12-01T18:00:00+01:00", time_zone="Europe/Berlin")
    assert timed["due_date"] == "2026-12-01T17:00:00Z"
    assert timed["time_zone"] == "Europe/Berlin"
    listed = {task["id"]: task["due_date"] for task in alice.get("/api/tasks").json()}
    assert listed == {all_day["id"]: "2026-12-01", timed["id"]: "2026-12-01T17:00:00Z"}


@pytest.mark.parametrize("value", ["2026-02-30", "2026-13-01", "2026-1-1", "20261201", "01.12.2026"])
def test_impossible_or_malformed_dates_are_422_and_nothing_changes(alice, value):
    task = alice.create_task(due_date="2026-12-01")
    assert "due_date" in field_names(alice.patch(f"/api/tasks/{task['id']}", json={"due_date": value}))
    assert "due_date" in field_names(alice.post("/api/tasks", json={"title": "x", "due_date": value}))
    assert alice.get(f"/api/tasks/{task['id']}").json()["due_date"] == "2026-12-01"


def test_task_time_zone_must_be_iana(alice):
    task = alice.create_task(due_date="2026-12-01", time_zone="Europe/Berlin")
    assert "time_zone" in field_names(alice.patch(f"/api/tasks/{task['id']}", json={"time_zone": "Berlin"}))
    assert alice.get(f"/api/tasks/{task['id']}").json()["time_zone"] == "Europe/Berlin"


def test_all_day_task_is_overdue_only_when_its_day_is_over_in_its_zone(alice):
    day = today_in(WEST)  # still today out west; long over far east
    over = alice.create_task(title="east", due_date=day, time_zone=EAST)
    running = alice.create_task(title="west", due_date=day, time_zone=WEST)
    assert ids(alice.get("/api/tasks?overdue=true")) == [over["id"]]
    assert alice.get("/api/tasks/stats").json()["overdue"] == 1
    assert ids(alice.get("/api/tasks?sort=due_date")) == [over["id"], running["id"]]


def test_changing_the_setting_moves_all_day_tasks_that_follow_it(alice):
    day = today_in(WEST)
    follows = alice.create_task(title="follows the setting", due_date=day)
    own_zone = alice.create_task(title="own zone", due_date=day, time_zone=WEST)
    timed = alice.create_task(title="timed", due_date=(datetime.now(timezone.utc) - timedelta(hours=1)).isoformat())
    alice.patch("/api/settings", json={"time_zone": EAST})
    assert set(ids(alice.get("/api/tasks?overdue=true"))) == {follows["id"], timed["id"]}
    etag = alice.get(f"/api/tasks/{follows['id']}").headers["ETag"]
    alice.patch("/api/settings", json={"time_zone": WEST})
    assert ids(alice.get("/api/tasks?overdue=true")) == [timed["id"]]
    moved = alice.get(f"/api/tasks/{follows['id']}")
    assert moved.json()["due_date"] == day and moved.headers["ETag"] != etag
    assert alice.get(f"/api/tasks/{own_zone['id']}").json()["due_date"] == day


def test_a_settings_change_never_touches_another_users_tasks(alice, bob):
    day = today_in("UTC")  # bob's zone (the default): his task's day is not over yet, whatever the hour
    bobs = bob.create_task(due_date=day)
    etag = bob.get(f"/api/tasks/{bobs['id']}").headers["ETag"]
    alice.patch("/api/settings", json={"time_zone": EAST})
    assert ids(bob.get("/api/tasks?overdue=true")) == []
    unchanged = bob.get(f"/api/tasks/{bobs['id']}")
    assert unchanged.json()["due_date"] == day and unchanged.headers["ETag"] == etag


def test_due_on_gives_all_day_tasks_of_that_date_and_timed_tasks_of_that_day_in_the_zone(alice):
    all_day = alice.create_task(due_date="2026-12-01", time_zone="Pacific/Kiritimati")
    late_utc = alice.create_task(due_date="2026-12-01T23:30:00Z")
    early = alice.create_task(due_date="2026-12-01T00:10:00Z")
    next_day = alice.create_task(due_date="2026-12-02")
    assert set(ids(alice.get("/api/tasks?due_on=2026-12-01"))) == {all_day["id"], late_utc["id"], early["id"]}
    # 23:30 UTC is already the 2nd in Berlin; 00:10 UTC is still the 1st there.
    assert set(ids(alice.get("/api/tasks?due_on=2026-12-01&tz=Europe/Berlin"))) == {all_day["id"], early["id"]}
    alice.patch("/api/settings", json={"time_zone": "Europe/Berlin"})  # the setting is the default zone
    assert set(ids(alice.get("/api/tasks?due_on=2026-12-02"))) == {late_utc["id"], next_day["id"]}
    assert set(ids(alice.get("/api/tasks?due_on=2026-12-02&tz=UTC"))) == {next_day["id"]}


@pytest.mark.parametrize("query", ["due_on=2026-02-30", "due_on=2026-12-01T00:00:00Z", "due_on=tomorrow", "due_on=2026-12-01&tz=Nowhere"])
def test_due_on_with_a_bad_date_or_zone_is_422(alice, query):
    assert field_names(alice.get(f"/api/tasks?{query}")) & {"due_on", "tz"}


# ----------------------------------------------------------------------------- recurring tasks


def weekly_task(user, **fields):
    return user.create_task(title="water plants", due_date="2026-01-05T09:00:00Z", recurrence=WEEKLY, **fields)


def all_tasks(user) -> list[dict]:
    return user.get("/api/tasks?limit=500&sort=created_at&order=asc").json()


COMPLETING_ROUTES = {
    "patch": lambda user, task_id: user.patch(f"/api/tasks/{task_id}", json={"completed": True}),
    "put": lambda user, task_id: user.put(f"/api/tasks/{task_id}", json={"completed": True}),
    "toggle": lambda user, task_id: user.post(f"/api/tasks/{task_id}/toggle"),
    "complete": lambda user, task_id: user.patch(f"/api/tasks/{task_id}/complete", json={"completed": True}),
    "complete-flip": lambda user, task_id: user.patch(f"/api/tasks/{task_id}/complete"),
    "user-path": lambda user, task_id: user.patch(f"/api/{user.user_id}/tasks/{task_id}", json={"completed": True}),
}


@pytest.mark.parametrize("route", COMPLETING_ROUTES)
def test_completing_a_recurring_task_creates_exactly_one_next_occurrence(alice, route):
    task = weekly_task(alice, description="all of them", priority="high", tags=["home"], time_zone="Europe/Berlin")
    response = COMPLETING_ROUTES[route](alice, task["id"])
    assert response.status_code == 200, response.text
    done = response.json()
    assert done["completed"] is True and done["next_occurrence_id"] is not None
    following = alice.get(f"/api/tasks/{done['next_occurrence_id']}").json()
    # The first Monday 09:00 Berlin after both the previous due date and now.
    expected = datetime(2026, 1, 5, 10, tzinfo=ZoneInfo("Europe/Berlin"))
    while expected.astimezone(timezone.utc) <= datetime.now(timezone.utc):
        expected += timedelta(weeks=1)
    assert following["due_date"] == expected.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert {key: following[key] for key in ("title", "description", "priority", "tags", "time_zone", "recurrence", "completed")} == {
        "title": "water plants", "description": "all of them", "priority": "high", "tags": ["home"],
        "time_zone": "Europe/Berlin", "recurrence": WEEKLY, "completed": False,
    }
    assert following["next_occurrence_id"] is None
    assert len(all_tasks(alice)) == 2


def test_reopening_and_completing_again_creates_no_second_occurrence(alice):
    task = weekly_task(alice)
    first = alice.post(f"/api/tasks/{task['id']}/toggle").json()["next_occurrence_id"]
    assert alice.post(f"/api/tasks/{task['id']}/toggle").json()["completed"] is False
    again = alice.patch(f"/api/tasks/{task['id']}", json={"completed": True}).json()
    assert again["next_occurrence_id"] == first
    assert len(all_tasks(alice)) == 2


def test_concurrent_completions_create_one_occurrence(alice):
    task = weekly_task(alice)
    statuses: list[int] = []
    run_in_threads(6, lambda _: statuses.append(alice.patch(f"/api/tasks/{task['id']}", json={"completed": True}).status_code))
    assert statuses == [200] * 6
    assert len(all_tasks(alice)) == 2


def test_all_day_daily_series_from_completion(alice):
    task = alice.create_task(due_date="2026-01-01", recurrence={"rrule": "FREQ=DAILY;INTERVAL=3", "from": "completion"})
    done = alice.patch(f"/api/tasks/{task['id']}/complete").json()
    following = alice.get(f"/api/tasks/{done['next_occurrence_id']}").json()
    assert following["due_date"] == (datetime.now(timezone.utc).date() + timedelta(days=3)).isoformat()


def test_a_series_that_has_ended_creates_nothing(alice):
    today = datetime.now(timezone.utc).date()
    task = alice.create_task(due_date=(today - timedelta(days=3)).isoformat(), recurrence={"rrule": "FREQ=DAILY;COUNT=2"})
    done = alice.post(f"/api/tasks/{task['id']}/toggle").json()
    assert done["next_occurrence_id"] is None and done["completed"] is True
    assert len(all_tasks(alice)) == 1


def test_recurrence_rule_is_returned_normalised(alice):
    task = alice.create_task(due_date="2026-12-01", recurrence={"rrule": "RRULE:freq=monthly;bymonthday=-1"})
    assert task["recurrence"] == {"rrule": "FREQ=MONTHLY;BYMONTHDAY=-1", "from": "due"}
    assert alice.patch(f"/api/tasks/{task['id']}", json={"recurrence": None}).json()["recurrence"] is None


@pytest.mark.parametrize(
    "fields",
    [
        {"recurrence": {"rrule": "FREQ=WEEKLY"}},  # no due date
        {"due_date": "2026-12-01", "recurrence": {"rrule": "FREQ=HOURLY"}},
        {"due_date": "2026-12-01", "recurrence": {"rrule": "FREQ=DAILY;BYHOUR=9"}},
        {"due_date": "2026-12-01", "recurrence": {"rrule": "FREQ=DAILY;COUNT=1"}},  # nothing after the due date
        {"due_date": "2026-12-01", "recurrence": {"rrule": "FREQ=DAILY;UNTIL=20261130"}},
        {"due_date": "2026-12-01", "recurrence": {"rrule": "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30"}},  # never matches
        {"due_date": "2026-12-01", "recurrence": {"rrule": "FREQ=DAILY", "from": "start"}},
        {"due_date": "2026-12-01", "recurrence": {"rrule": "FREQ=DAILY", "every": 2}},
        {"due_date": "2026-12-01", "recurrence": "FREQ=DAILY"},
    ],
)
def test_bad_recurrence_is_422_naming_recurrence_and_nothing_is_created(alice, fields):
    assert field_names(alice.post("/api/tasks", json={"title": "x", **fields})) == {"recurrence"}
    assert all_tasks(alice) == []


def test_removing_the_due_date_of_a_recurring_task_is_422_and_nothing_changes(alice):
    task = weekly_task(alice)
    assert field_names(alice.patch(f"/api/tasks/{task['id']}", json={"due_date": None})) == {"recurrence"}
    assert alice.get(f"/api/tasks/{task['id']}").json() == task


def test_occurrences_preview(alice):
    task = alice.create_task(due_date="2026-01-31", recurrence={"rrule": "FREQ=MONTHLY;COUNT=4"})
    assert alice.get(f"/api/tasks/{task['id']}/occurrences").json() == ["2026-03-31", "2026-05-31", "2026-07-31"]
    assert alice.get(f"/api/tasks/{task['id']}/occurrences?count=1").json() == ["2026-03-31"]
    timed = weekly_task(alice, time_zone="America/New_York")
    assert alice.get(f"/api/{alice.user_id}/tasks/{timed['id']}/occurrences?count=2").json() == [
        "2026-01-12T09:00:00Z", "2026-01-19T09:00:00Z"
    ]
    assert alice.get(f"/api/tasks/{alice.create_task()['id']}/occurrences").json() == []


@pytest.mark.parametrize("count", ["0", "51", "x"])
def test_occurrences_count_is_1_to_50(alice, count):
    task = weekly_task(alice)
    assert field_names(alice.get(f"/api/tasks/{task['id']}/occurrences?count={count}")) == {"count"}


def test_another_users_recurring_task_is_not_found_and_not_completed(alice, bob):
    task = weekly_task(alice)
    assert bob.get(f"/api/tasks/{task['id']}/occurrences").status_code == 404
    assert bob.post(f"/api/tasks/{task['id']}/toggle").status_code == 404
    assert bob.patch(f"/api/tasks/{task['id']}", json={"due_date": "2026-12-01"}).status_code == 404
    assert len(all_tasks(alice)) == 1 and all_tasks(alice)[0]["completed"] is False


def test_stale_if_match_on_a_recurring_completion_is_412_and_creates_nothing(alice):
    task = weekly_task(alice)
    etag = alice.get(f"/api/tasks/{task['id']}").headers["ETag"]
    alice.patch(f"/api/tasks/{task['id']}", json={"title": "renamed"})
    response = alice.post(f"/api/tasks/{task['id']}/toggle", headers={"If-Match": etag})
    assert response.status_code == 412
    assert len(all_tasks(alice)) == 1


def test_existing_timed_due_dates_are_unchanged_by_the_new_rules(alice):
    task = alice.create_task(due_date="2026-12-01T00:00:00")
    assert task["due_date"] == "2026-12-01T00:00:00Z"
    assert alice.patch(f"/api/tasks/{task['id']}", json={"title": "t"}).json()["due_date"] == "2026-12-01T00:00:00Z"


def test_idempotent_create_replays_an_all_day_task(alice):
    body = {"title": "x", "due_date": "2026-12-01", "recurrence": WEEKLY, "reminders": [{"before_minutes": 30}]}
    first = alice.post("/api/tasks", json=body, headers={"Idempotency-Key": "k-dates"})
    replay = alice.post("/api/tasks", json=body, headers={"Idempotency-Key": "k-dates"})
    assert first.status_code == replay.status_code == 201
    assert first.json() == replay.json()
    assert first.json()["due_date"] == "2026-12-01"
    assert date.fromisoformat(first.json()["due_date"])


def test_openapi_documents_the_date_routes_fields_and_errors(client):
    openapi = client.get("/openapi.json").json()
    for prefix in ("/api", "/api/{user_id}"):
        paths = openapi["paths"]
        assert {"get", "patch"} <= set(paths[f"{prefix}/settings"])
        assert "422" in paths[f"{prefix}/settings"]["patch"]["responses"]
        assert "404" in paths[f"{prefix}/tasks/{{task_id}}/occurrences"]["get"]["responses"]
        assert {p["name"] for p in paths[f"{prefix}/reminders"]["get"]["parameters"]} >= {"until"}
        assert {p["name"] for p in paths[f"{prefix}/tasks"]["get"]["parameters"]} >= {"due_on", "tz"}
    create = openapi["components"]["schemas"]["TaskCreate"]["properties"]
    assert {"due_date", "time_zone", "recurrence", "reminders"} <= set(create)
    assert "YYYY-MM-DD" in create["due_date"]["anyOf"][0]["description"] or "YYYY-MM-DD" in str(create["due_date"])
    assert set(openapi["components"]["schemas"]["ReminderDue"]["properties"]) == {"task_id", "title", "due_date", "fire_at", "reminder"}


def test_migration_keeps_existing_timed_due_dates(backend, scratch_database):
    """An existing database with tasks (at 0002) upgraded to head: due dates stay the moments they were."""
    from alembic import command
    from alembic.config import Config
    from fastapi.testclient import TestClient

    import db
    from conftest import make_settings
    from config import Settings
    from main import create_app

    url = scratch_database(backend, migrate=False)
    normalised = Settings.normalise_database_url(url)
    config = Config(str(db.PROJECT_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(db.PROJECT_DIR / "migrations"))
    config.attributes["database_url"] = normalised
    command.upgrade(config, "0002")
    engine = sa.create_engine(normalised)
    with engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO task (user_id, title, completed, priority, tags, due_date, created_at, updated_at, version) "
            "VALUES ('old_user', 'old', false, 'medium', '[]', '2026-12-01 17:00:00+00:00', "
            "'2026-11-01 10:00:00+00:00', '2026-11-01 10:00:00+00:00', 1)"
        ) if backend == "postgres" else sa.text(
            "INSERT INTO task (user_id, title, completed, priority, tags, due_date, created_at, updated_at, version) "
            "VALUES ('old_user', 'old', 0, 'medium', '[]', '2026-12-01 17:00:00.000000', "
            "'2026-11-01 10:00:00.000000', '2026-11-01 10:00:00.000000', 1)"
        ))
    engine.dispose()
    db.upgrade_schema(normalised)
    with TestClient(create_app(make_settings(url, reminder_poll_seconds=0))) as client:
        headers = {"Authorization": f"Bearer {mint_token('old_user')}"}
        [task] = client.get("/api/tasks", headers=headers).json()
        assert (task["due_date"], task["time_zone"], task["recurrence"], task["reminders"]) == (
            "2026-12-01T17:00:00Z", None, None, []
        )
        assert [t["id"] for t in client.get("/api/tasks?due_on=2026-12-01", headers=headers).json()] == [task["id"]]


@pytest.mark.parametrize("path", ["/api/settings", "/api/reminders", "/api/tasks/1/occurrences"])
def test_date_routes_refuse_expired_and_forged_tokens(client, path):
    import time as clock

    expired = mint_token("someone", exp=int(clock.time()) - 3600)
    forged = mint_token("someone", secret="not-the-secret-" + "x" * 40)
    for token in (expired, forged):
        response = client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401 and response.json()["error_code"] == "UNAUTHORIZED"
    assert client.patch("/api/settings", json={"time_zone": "UTC"}, headers={"Authorization": f"Bearer {forged}"}).status_code == 401


def test_changing_a_tasks_zone_moves_its_all_day_due_moment(alice):
    task = alice.create_task(due_date=today_in(WEST), time_zone=WEST)
    assert ids(alice.get("/api/tasks?overdue=true")) == []
    moved = alice.patch(f"/api/tasks/{task['id']}", json={"time_zone": EAST}).json()
    assert (moved["due_date"], moved["time_zone"]) == (today_in(WEST), EAST)
    assert ids(alice.get("/api/tasks?overdue=true")) == [task["id"]]
    assert alice.patch(f"/api/tasks/{task['id']}", json={"time_zone": None}).json()["time_zone"] is None


def test_setting_the_zone_you_already_have_changes_no_task(alice):
    alice.patch("/api/settings", json={"time_zone": "Europe/Berlin"})
    task = alice.create_task(due_date="2026-12-01")
    etag = alice.get(f"/api/tasks/{task['id']}").headers["ETag"]
    assert alice.patch("/api/settings", json={"time_zone": "Europe/Berlin"}).json() == {"time_zone": "Europe/Berlin"}
    assert alice.get(f"/api/tasks/{task['id']}").headers["ETag"] == etag


def test_completing_a_parent_continues_its_recurring_subtask_right_after_it(alice):
    parent = alice.create_task(title="parent")
    recurring = weekly_task(alice, parent_id=parent["id"])
    sibling = alice.create_task(title="sibling", parent_id=parent["id"])
    done = alice.post(f"/api/tasks/{parent['id']}/toggle")
    assert done.status_code == 200, done.text
    completed = alice.get(f"/api/tasks/{recurring['id']}").json()
    assert completed["completed"] is True and completed["next_occurrence_id"] is not None
    following = alice.get(f"/api/tasks/{completed['next_occurrence_id']}").json()
    assert (following["parent_id"], following["list_id"], following["completed"]) == (parent["id"], recurring["list_id"], False)
    tree = alice.get("/api/tasks", params={"sort": "position", "list_id": parent["list_id"]}).json()
    assert [task["id"] for task in tree] == [parent["id"], recurring["id"], following["id"], sibling["id"]]
    assert len(all_tasks(alice)) == 4
