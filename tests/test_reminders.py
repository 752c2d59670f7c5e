"""Reminders (§9) on both databases: fire_at, GET /api/reminders, and firing exactly once."""
import asyncio
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

import events
import reminders
from conftest import TEST_SECRET, make_settings, mint_token
from db import Database
from live_server import LiveServer


def z(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def soon(**delta) -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(**delta)


def errors_of(response) -> set[str]:
    assert response.status_code == 422, response.text
    return {error["field"].split(".")[0] for error in response.json()["errors"]}


# ----------------------------------------------------------------------------- on the task


def test_reminders_are_returned_with_fire_at_and_duplicates_collapse(alice):
    task = alice.create_task(
        due_date="2026-12-01T17:00:00Z",
        reminders=[{"before_minutes": 15}, {"at": "2026-12-01T09:00:00+01:00"}, {"before_minutes": 15}, {"at": "2026-12-01T08:00:00Z"}],
    )
    assert task["reminders"] == [
        {"before_minutes": 15, "fire_at": "2026-12-01T16:45:00Z"},
        {"at": "2026-12-01T08:00:00Z", "fire_at": "2026-12-01T08:00:00Z"},
    ]


def test_all_day_reminder_fires_before_the_end_of_the_day_in_its_zone(alice):
    task = alice.create_task(due_date="2026-12-01", time_zone="Europe/Berlin", reminders=[{"before_minutes": 60}])
    assert task["reminders"] == [{"before_minutes": 60, "fire_at": "2026-12-01T22:00:00Z"}]


def test_relative_reminders_follow_the_due_date_absolute_ones_stay(alice):
    task = alice.create_task(due_date="2026-12-01T17:00:00Z", reminders=[{"before_minutes": 30}, {"at": "2026-11-30T12:00:00Z"}])
    moved = alice.patch(f"/api/tasks/{task['id']}", json={"due_date": "2026-12-03T10:00:00Z"}).json()
    assert moved["reminders"] == [
        {"before_minutes": 30, "fire_at": "2026-12-03T09:30:00Z"},
        {"at": "2026-11-30T12:00:00Z", "fire_at": "2026-11-30T12:00:00Z"},
    ]


def test_next_occurrence_keeps_relative_reminders_and_shifts_absolute_ones(alice):
    due = soon(days=1)
    task = alice.create_task(
        due_date=z(due), recurrence={"rrule": "FREQ=DAILY"},
        reminders=[{"before_minutes": 10}, {"at": z(due - timedelta(hours=2))}],
    )
    done = alice.post(f"/api/tasks/{task['id']}/toggle").json()
    following = alice.get(f"/api/tasks/{done['next_occurrence_id']}").json()
    next_due = due + timedelta(days=1)
    assert following["due_date"] == z(next_due)
    assert following["reminders"] == [
        {"before_minutes": 10, "fire_at": z(next_due - timedelta(minutes=10))},
        {"at": z(next_due - timedelta(hours=2)), "fire_at": z(next_due - timedelta(hours=2))},
    ]


@pytest.mark.parametrize(
    "fields",
    [
        {"reminders": [{"before_minutes": 15}]},  # no due date
        {"due_date": "2026-12-01", "reminders": [{"before_minutes": n} for n in range(6)]},
        {"due_date": "2026-12-01", "reminders": [{"before_minutes": 40_321}]},
        {"due_date": "2026-12-01", "reminders": [{"before_minutes": -1}]},
        {"due_date": "2026-12-01", "reminders": [{"before_minutes": "15"}]},
        {"due_date": "2026-12-01", "reminders": [{"before_minutes": 15, "at": "2026-12-01T10:00:00Z"}]},
        {"due_date": "2026-12-01", "reminders": [{}]},
        {"due_date": "2026-12-01", "reminders": [{"minutes": 15}]},
        {"due_date": "2026-12-01", "reminders": [{"at": "soon"}]},
        {"due_date": "2026-12-01", "reminders": None},
    ],
)
def test_bad_reminders_are_422_naming_reminders_and_nothing_changes(alice, fields):
    task = alice.create_task(due_date="2026-12-01", reminders=[{"before_minutes": 5}])
    assert errors_of(alice.post("/api/tasks", json={"title": "x", **fields})) == {"reminders"}
    assert errors_of(alice.patch(f"/api/tasks/{task['id']}", json={**fields, "due_date": fields.get("due_date")})) == {"reminders"}
    assert alice.get(f"/api/tasks/{task['id']}").json() == task
    assert len(alice.get("/api/tasks").json()) == 1


def test_clearing_the_due_date_of_a_task_with_relative_reminders_is_422(alice):
    task = alice.create_task(due_date="2026-12-01", reminders=[{"before_minutes": 5}])
    assert errors_of(alice.patch(f"/api/tasks/{task['id']}", json={"due_date": None})) == {"reminders"}
    cleared = alice.patch(f"/api/tasks/{task['id']}", json={"due_date": None, "reminders": []}).json()
    assert cleared["due_date"] is None and cleared["reminders"] == []


# ----------------------------------------------------------------------------- GET /api/reminders


@pytest.mark.parametrize("prefix", ["/api", "/api/{user}"])
def test_reminders_list_soonest_first_within_the_window(alice, bob, prefix):
    url = prefix.format(user=alice.user_id) + "/reminders"
    later = alice.create_task(title="later", due_date=z(soon(hours=5)), reminders=[{"before_minutes": 60}])
    in_an_hour = z(soon(hours=1))
    sooner = alice.create_task(title="sooner", due_date="2999-01-01", reminders=[{"at": in_an_hour}])
    recent = alice.create_task(title="recent", reminders=[{"at": z(soon(hours=-23))}])
    alice.create_task(title="too old", reminders=[{"at": z(soon(hours=-25))}])
    alice.create_task(title="beyond", reminders=[{"at": z(soon(hours=30))}])
    done = alice.create_task(title="done", reminders=[{"at": z(soon(hours=2))}])
    alice.post(f"/api/tasks/{done['id']}/toggle")
    bob.create_task(title="bob's", reminders=[{"at": z(soon(hours=1))}])
    listed = alice.get(url).json()
    assert [item["title"] for item in listed] == ["recent", "sooner", "later"]
    assert listed[1] == {
        "task_id": sooner["id"], "title": "sooner", "due_date": "2999-01-01",
        "fire_at": in_an_hour, "reminder": {"at": in_an_hour, "fire_at": in_an_hour},
    }
    assert listed[2]["reminder"] == {"before_minutes": 60, "fire_at": later["reminders"][0]["fire_at"]}
    assert [item["title"] for item in alice.get(url, params={"until": z(soon(hours=31))}).json()][-1] == "beyond"
    assert [item["title"] for item in alice.get(url, params={"until": z(soon(hours=-1))}).json()] == ["recent"]
    assert recent["id"] in [item["task_id"] for item in listed]


def test_reminders_list_needs_a_token_the_callers_path_and_a_real_until(alice, bob):
    assert alice.client.get("/api/reminders").status_code == 401
    assert bob.get(f"/api/{alice.user_id}/reminders").status_code == 403
    assert errors_of(alice.get("/api/reminders?until=tomorrow")) == {"until"}


# ----------------------------------------------------------------------------- firing


def reminder_rows(sql_engine, task_ids: list[int]) -> list[dict]:
    with sql_engine.connect() as connection:
        rows = connection.execute(
            sa.select(reminders.reminder_table).where(reminders.reminder_table.c.task_id.in_(task_ids))
        ).mappings()
        return [dict(row) for row in rows]


def fire(database_url: str, sql_engine, now: datetime, databases: int = 1) -> list[dict]:
    """`databases` processes' worth of pools, each firing at once, twice (the second round finds
    nothing left); every `reminder.due` event row they recorded, with its data."""
    event = events.event_table
    with sql_engine.connect() as connection:
        before = connection.execute(sa.select(sa.func.coalesce(sa.func.max(event.c.id), 0))).scalar_one()

    async def run():
        pools = [Database(make_settings(database_url)) for _ in range(databases)]
        try:
            for _ in range(2):
                await asyncio.gather(*(reminders.fire_due(pool, now) for pool in pools))
        finally:
            for pool in pools:
                await pool.close()

    asyncio.run(run())
    with sql_engine.connect() as connection:
        rows = connection.execute(
            sa.select(event.c.user_id, event.c.seq, event.c.entity_id, event.c.data)
            .where(event.c.id > before, event.c.type == events.REMINDER_DUE)
            .order_by(event.c.id)
        ).mappings()
        return [{"user_id": row["user_id"], "seq": row["seq"], "task_id": row["entity_id"], **row["data"]} for row in rows]


def test_each_due_reminder_of_an_open_task_fires_exactly_once_across_pools(alice, database_url, sql_engine):
    # Due in two hours: the app's own loop (real clock) leaves them alone; we fire "two hours later".
    at = soon(hours=2)
    tasks = [alice.create_task(title=f"t{index}", reminders=[{"at": z(at - timedelta(seconds=index))}]) for index in range(12)]
    closed = alice.create_task(title="closed", reminders=[{"at": z(at)}])
    alice.post(f"/api/tasks/{closed['id']}/toggle")
    gone = alice.create_task(title="gone", reminders=[{"at": z(at)}])
    alice.delete(f"/api/tasks/{gone['id']}")
    future = alice.create_task(title="future", reminders=[{"at": z(at + timedelta(minutes=5))}])
    mine = {task["id"] for task in tasks}
    announced = [row for row in fire(database_url, sql_engine, at + timedelta(seconds=1), databases=4) if row["task_id"] in mine | {closed["id"], future["id"]}]
    assert sorted(row["task_id"] for row in announced) == sorted(mine)
    assert announced[0]["title"].startswith("t") and announced[0]["user_id"] == alice.user_id
    first = next(row for row in announced if row["task_id"] == tasks[0]["id"])
    # The reminder as /api/reminders lists it.
    assert {key: first[key] for key in ("title", "due_date", "fire_at", "reminder")} == {
        "title": "t0", "due_date": None, "fire_at": z(at), "reminder": {"at": z(at), "fire_at": z(at)},
    }
    states = {row["task_id"]: row["state"] for row in reminder_rows(sql_engine, [*mine, closed["id"], future["id"]])}
    assert states == {**{task_id: "fired" for task_id in mine}, closed["id"]: None, future["id"]: None}


def test_a_reminder_late_by_less_than_24_hours_fires_an_older_one_is_skipped(alice, database_url, sql_engine):
    at = soon(hours=3)
    late = alice.create_task(title="late", reminders=[{"at": z(at)}])
    too_late = alice.create_task(title="too late", reminders=[{"at": z(at - timedelta(hours=25))}])
    announced = fire(database_url, sql_engine, at + timedelta(hours=23))
    assert late["id"] in [row["task_id"] for row in announced]
    assert too_late["id"] not in [row["task_id"] for row in announced]
    states = {row["task_id"]: row["state"] for row in reminder_rows(sql_engine, [late["id"], too_late["id"]])}
    assert states == {late["id"]: "fired", too_late["id"]: "skipped"}


def test_editing_a_task_does_not_fire_its_fired_reminder_again(alice, database_url, sql_engine):
    at = soon(hours=4)
    task = alice.create_task(due_date=z(at + timedelta(minutes=30)), reminders=[{"at": z(at)}, {"before_minutes": 30}])
    assert len([row for row in fire(database_url, sql_engine, at + timedelta(seconds=1)) if row["task_id"] == task["id"]]) == 2
    alice.patch(f"/api/tasks/{task['id']}", json={"due_date": z(at + timedelta(minutes=40)), "title": "moved"})
    refired = [row for row in fire(database_url, sql_engine, at + timedelta(minutes=11)) if row["task_id"] == task["id"]]
    assert [row["reminder"].get("before_minutes") for row in refired] == [30]  # the moved relative one; the absolute one stays fired


def test_saving_a_task_while_its_reminder_is_being_claimed_does_not_fire_it_again(alice, database_url, sql_engine):
    """A form that saves every field PATCHes the same reminders back while a firing round has marked
    the reminder fired but not committed yet: the save waits for that round and keeps it fired."""
    at = soon(hours=5)
    task = alice.create_task(reminders=[{"at": z(at)}])
    saved: list = []
    with sql_engine.connect() as claim:  # a firing round, held open between its UPDATE and its COMMIT
        claim.execute(
            sa.update(reminders.reminder_table)
            .where(reminders.reminder_table.c.task_id == task["id"])
            .values(state="fired", fired_at=at)
        )
        save = threading.Thread(
            target=lambda: saved.append(alice.patch(f"/api/tasks/{task['id']}", json={"title": "saved", "reminders": [{"at": z(at)}]}))
        )
        save.start()
        time.sleep(0.5)  # the save reaches the reminder rows and waits for the round
        claim.commit()
    save.join(timeout=30)
    assert saved and saved[0].status_code == 200, saved and saved[0].text
    assert [row["state"] for row in reminder_rows(sql_engine, [task["id"]])] == ["fired"]
    assert not [row for row in fire(database_url, sql_engine, at + timedelta(seconds=1)) if row["task_id"] == task["id"]]


@pytest.mark.slow
def test_two_instances_with_two_workers_fire_each_reminder_once_within_a_minute(backend, scratch_database):
    database_url = scratch_database(backend)
    env = {"REMINDER_POLL_SECONDS": "1"}
    servers = [LiveServer(database_url, secret=TEST_SECRET, workers=2, env=env) for _ in range(2)]
    try:
        for server in servers:
            server.start()
        import httpx

        token = mint_token("firing_user")
        at = soon(seconds=3)
        ids = []
        for index in range(6):
            response = httpx.post(
                servers[index % 2].url + "/api/tasks",
                json={"title": f"r{index}", "reminders": [{"at": z(at)}]},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        engine = sa.create_engine(make_settings(database_url).database_url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                states = connection.execute(sa.select(reminders.reminder_table.c.state)).scalars().all()
            if states and all(state == "fired" for state in states):
                break
            time.sleep(0.5)
        assert states == ["fired"] * 6
        time.sleep(1)  # a second firing, if there were one, would have been recorded by now
        with engine.connect() as connection:
            fired = connection.execute(
                sa.select(events.event_table.c.entity_id).where(events.event_table.c.type == events.REMINDER_DUE)
            ).scalars().all()
        engine.dispose()
        assert sorted(fired) == sorted(ids)  # exactly one reminder.due per reminder
        page = httpx.get(servers[0].url + "/api/changes", params={"since": "v1.0"}, headers={"Authorization": f"Bearer {token}"}).json()
        due = [change for change in page["changes"] if change["type"] == "reminder.due"]
        assert sorted(change["id"] for change in due) == sorted(ids)
        assert due[0]["data"]["reminder"] == {"at": z(at), "fire_at": z(at)}
    finally:
        for server in servers:
            server.stop()


@pytest.mark.slow
def test_reminders_saved_again_and_again_while_they_fire_still_fire_once(backend, scratch_database):
    """Two instances of two workers firing every second, and clients saving the tasks' reminders back
    (as a form that saves every field does) from before the reminders are due until after."""
    database_url = scratch_database(backend)
    servers = [LiveServer(database_url, secret=TEST_SECRET, workers=2, env={"REMINDER_POLL_SECONDS": "1"}) for _ in range(2)]
    try:
        for server in servers:
            server.start()
        import httpx

        headers = {"Authorization": f"Bearer {mint_token('saving_user')}"}
        clients = [httpx.Client(base_url=server.url, headers=headers, timeout=30) for server in servers]
        at = soon(seconds=4)
        ids = [clients[0].post("/api/tasks", json={"title": f"r{index}", "reminders": [{"at": z(at)}]}).json()["id"] for index in range(160)]
        stop_saving = at + timedelta(seconds=2.5)

        def save(worker: int) -> None:
            client = clients[worker % 2]
            while datetime.now(timezone.utc) < stop_saving:
                for task_id in ids[worker::4]:
                    response = client.patch(f"/api/tasks/{task_id}", json={"reminders": [{"at": z(at)}]})
                    assert response.status_code == 200, response.text

        savers = [threading.Thread(target=save, args=(worker,)) for worker in range(4)]
        for saver in savers:
            saver.start()
        for saver in savers:
            saver.join(timeout=60)
        engine = sa.create_engine(make_settings(database_url).database_url)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                states = connection.execute(sa.select(reminders.reminder_table.c.state)).scalars().all()
            if all(state == "fired" for state in states):
                break
            time.sleep(0.5)
        time.sleep(2)  # a second firing, if there were one, would be recorded by now
        with engine.connect() as connection:
            fired = connection.execute(
                sa.select(events.event_table.c.entity_id).where(events.event_table.c.type == events.REMINDER_DUE)
            ).scalars().all()
        engine.dispose()
        twice = [task_id for task_id in set(fired) if fired.count(task_id) > 1]
        assert not twice, f"{len(twice)} of {len(ids)} reminders fired more than once"
        assert sorted(fired) == sorted(ids)
    finally:
        for server in servers:
            server.stop()


def test_a_settings_change_moves_the_reminders_of_all_day_tasks_that_follow_it(alice):
    day = (datetime.now(timezone.utc) + timedelta(days=5)).date()
    midnight_after = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1)
    absolute = z(midnight_after - timedelta(days=2))
    task = alice.create_task(due_date=day.isoformat(), reminders=[{"before_minutes": 60}, {"at": absolute}])
    assert task["reminders"][0]["fire_at"] == z(midnight_after - timedelta(hours=1))
    alice.patch("/api/settings", json={"time_zone": "Asia/Tokyo"})  # UTC+9, no daylight saving
    moved = z(midnight_after - timedelta(hours=10))
    assert alice.get(f"/api/tasks/{task['id']}").json()["reminders"] == [
        {"before_minutes": 60, "fire_at": moved},
        {"at": absolute, "fire_at": absolute},
    ]
    listed = alice.get("/api/reminders", params={"until": z(midnight_after)}).json()
    assert [item["fire_at"] for item in listed if item["task_id"] == task["id"]] == [absolute, moved]
