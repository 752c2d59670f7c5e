"""GET /api/changes (contract §10): every write is an event, read back with a cursor, per user."""
import asyncio
from pathlib import Path
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

import events
import task_sql
from conftest import make_settings
from db import Database
from responses import to_json


def changes(user, since=None, **params):
    query = {"since": since, **params} if since is not None else params
    response = user.get("/api/changes", params=query)
    assert response.status_code == 200, response.text
    return response.json()


def start(user) -> str:
    """A client's start (§10): fetch the lists (the first fetch makes the default list), then the cursor."""
    assert user.get("/api/lists").status_code == 200
    return changes(user)["cursor"]


def test_without_since_there_are_no_changes_only_the_current_cursor(alice):
    first = changes(alice)
    assert first == {"changes": [], "cursor": first["cursor"], "has_more": False}
    alice.create_task(title="one")
    second = changes(alice)
    assert second["changes"] == [] and second["cursor"] != first["cursor"]


def test_every_kind_of_task_write_is_an_event_with_the_task_as_the_api_returns_it(alice):
    cursor = start(alice)
    created = alice.create_task(title="draft", tags=["Home"], due_date="2026-12-01T10:00:00Z")
    # Timestamps with and without a fraction of a second, written as the API writes them.
    patched = alice.patch(f"/api/tasks/{created['id']}", json={"title": "final", "due_date": "2026-12-02T10:00:00.5Z"}).json()
    put = alice.put(f"/api/tasks/{created['id']}", json={"priority": "high", "due_date": "2026-12-03T10:00:00Z"}).json()
    toggled = alice.post(f"/api/tasks/{created['id']}/toggle").json()
    completed = alice.patch(f"/api/tasks/{created['id']}/complete", json={"completed": False}).json()
    keyed = alice.post("/api/tasks", json={"title": "keyed"}, headers={"Idempotency-Key": "k-1"}).json()
    assert alice.post("/api/tasks", json={"title": "keyed"}, headers={"Idempotency-Key": "k-1"}).status_code == 201
    assert alice.delete(f"/api/tasks/{created['id']}").status_code == 204

    page = changes(alice, cursor)
    seen = [(change["type"], change["id"], change["data"]) for change in page["changes"]]
    assert seen == [
        ("task.created", created["id"], created),
        ("task.updated", created["id"], patched),
        ("task.updated", created["id"], put),
        ("task.updated", created["id"], toggled),
        ("task.updated", created["id"], completed),
        ("task.created", keyed["id"], keyed),  # the replay of the same key records nothing
        ("task.deleted", created["id"], None),
    ]
    assert page["cursor"] == page["changes"][-1]["cursor"] and page["has_more"] is False
    for change in page["changes"]:
        assert set(change) == {"cursor", "type", "id", "data", "at", "actor"}
        assert change["actor"] == alice.user_id
        assert change["at"].endswith("Z")
    assert changes(alice, page["cursor"]) == {"changes": [], "cursor": page["cursor"], "has_more": False}


@pytest.mark.parametrize("moment", [
    datetime(2026, 11, 26, 9, 30, tzinfo=timezone.utc),  # a whole second: no fraction at all
    datetime(2026, 11, 26, 9, 30, 0, 1, tzinfo=timezone.utc),
    datetime(2026, 11, 26, 9, 30, 0, 500000, tzinfo=timezone.utc),
    datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5))),  # next year in UTC
])
def test_event_timestamps_built_in_sql_are_written_as_the_api_writes_them(backend, sql_engine, moment):
    """PostgreSQL builds a write's event data in the write's own statement (events.with_event)."""
    if backend != "postgres":
        pytest.skip("SQLite's events are encoded by the service itself")
    with sql_engine.connect() as connection:
        built = connection.execute(sa.select(events.api_timestamp(sa.literal(moment, sa.DateTime(timezone=True))))).scalar_one()
    # The service's own datetimes are in UTC (models.UTCDateTime), and so is what it encodes.
    assert built == to_json(moment.astimezone(timezone.utc)).decode().strip('"')


def test_the_default_list_made_on_first_use_is_a_list_created_event_once(alice):
    cursor = changes(alice)["cursor"]  # before anything: the default list does not exist yet
    first = alice.create_task(title="first")
    alice.create_task(title="second")
    inbox = alice.get("/api/lists").json()[0]
    created_lists = [change for change in changes(alice, cursor)["changes"] if change["type"] == "list.created"]
    assert [(change["id"], change["data"]) for change in created_lists] == [
        (first["list_id"], {**inbox, "task_count": 0, "completed_count": 0})
    ]


def test_dated_tasks_events_carry_the_task_as_the_api_returns_it(alice):
    """All-day dates, zones, recurrence and reminders: through every write path (the one-statement
    ones on PostgreSQL build the data in SQL), the event is the REST representation."""
    cursor = start(alice)
    all_day = alice.create_task(title="all day", due_date="2026-12-01", time_zone="Europe/Berlin")
    renamed = alice.patch(f"/api/tasks/{all_day['id']}", json={"title": "renamed"}).json()
    done = alice.patch(f"/api/tasks/{all_day['id']}", json={"completed": True}).json()
    weekly = {"rrule": "FREQ=WEEKLY", "from": "due"}
    recurring = alice.create_task(
        title="weekly", due_date="2026-12-01T09:00:00Z", recurrence=weekly, reminders=[{"before_minutes": 30}, {"at": "2026-11-30T08:00:00Z"}],
    )
    reprioritised = alice.patch(f"/api/tasks/{recurring['id']}", json={"priority": "high"}).json()
    assert all_day["due_date"] == "2026-12-01" and recurring["reminders"][0]["fire_at"] == "2026-12-01T08:30:00Z"

    page = changes(alice, cursor)
    seen = [(change["type"], change["id"], change["data"]) for change in page["changes"]]
    assert seen == [
        ("task.created", all_day["id"], all_day),
        ("task.updated", all_day["id"], renamed),
        ("task.updated", all_day["id"], done),
        ("task.created", recurring["id"], recurring),
        ("task.updated", recurring["id"], reprioritised),
    ]


@pytest.mark.parametrize("route", ["patch", "toggle", "complete", "cascade"])
def test_completing_a_recurring_task_records_its_update_and_its_next_occurrence(alice, route):
    weekly = {"rrule": "FREQ=WEEKLY", "from": "due"}
    task = alice.create_task(title="weekly", due_date="2026-12-01T09:00:00Z", recurrence=weekly, reminders=[{"before_minutes": 30}])
    parent = alice.create_task(title="parent") if route == "cascade" else None
    if parent:
        assert alice.patch(f"/api/tasks/{task['id']}", json={"parent_id": parent["id"]}).status_code == 200
    cursor = start(alice)
    if route == "patch":
        response = alice.patch(f"/api/tasks/{task['id']}", json={"completed": True})
    elif route == "toggle":
        response = alice.post(f"/api/tasks/{task['id']}/toggle")
    elif route == "complete":
        response = alice.patch(f"/api/tasks/{task['id']}/complete", json={"completed": True})
    else:
        response = alice.patch(f"/api/tasks/{parent['id']}", json={"completed": True})
    assert response.status_code == 200, response.text
    completed = alice.get(f"/api/tasks/{task['id']}").json()
    following_id = completed["next_occurrence_id"]
    assert completed["completed"] is True and following_id is not None
    following = alice.get(f"/api/tasks/{following_id}").json()
    assert following["due_date"] == "2026-12-08T09:00:00Z" and following["reminders"][0]["fire_at"] == "2026-12-08T08:30:00Z"

    seen = [(change["type"], change["id"], change["data"]) for change in changes(alice, cursor)["changes"]]
    expected = [("task.updated", task["id"], completed), ("task.created", following_id, following)]
    if parent:
        expected.insert(0, ("task.updated", parent["id"], response.json()))
    assert seen == expected


def test_a_time_zone_change_records_an_update_for_each_all_day_task_it_moves(alice, bob):
    following = alice.create_task(title="follows the setting", due_date="2026-12-01", reminders=[{"before_minutes": 60}])
    pinned = alice.create_task(title="own zone", due_date="2026-12-01", time_zone="Europe/Berlin")
    timed = alice.create_task(title="a moment", due_date="2026-12-01T10:00:00Z")
    bobs = bob.create_task(title="bob's", due_date="2026-12-01")
    cursor, bob_cursor = start(alice), start(bob)
    assert alice.patch("/api/settings", json={"time_zone": "Asia/Tokyo"}).status_code == 200
    moved = alice.get(f"/api/tasks/{following['id']}").json()
    assert moved["reminders"][0]["fire_at"] == "2026-12-01T14:00:00Z"  # midnight in Tokyo, less an hour
    assert [(c["type"], c["id"], c["data"]) for c in changes(alice, cursor)["changes"]] == [("task.updated", following["id"], moved)]
    assert {pinned["id"], timed["id"]}.isdisjoint(c["id"] for c in changes(alice, cursor)["changes"])
    assert changes(bob, bob_cursor)["changes"] == [] and bobs["due_date"] == "2026-12-01"
    # The same zone again moves nothing and records nothing.
    again = changes(alice, cursor)["cursor"]
    assert alice.patch("/api/settings", json={"time_zone": "Asia/Tokyo"}).status_code == 200
    assert changes(alice, again)["changes"] == []


def test_clearing_completed_tasks_records_one_deletion_per_task(alice):
    done = [alice.create_task(title=f"done {i}", completed=True)["id"] for i in range(3)]
    kept = alice.create_task(title="open")["id"]
    cursor = start(alice)
    assert alice.delete("/api/tasks", params={"completed": "true"}).json() == {"deleted": 3}
    page = changes(alice, cursor)
    assert sorted((c["type"], c["id"], c["data"]) for c in page["changes"]) == [("task.deleted", i, None) for i in done]
    assert kept not in [c["id"] for c in page["changes"]]


def test_a_failed_write_records_nothing(alice, bob):
    task = alice.create_task()
    cursor = start(alice)
    assert alice.patch(f"/api/tasks/{task['id']}", json={"title": "x"}, headers={"If-Match": '"1.99"'}).status_code == 412
    assert bob.patch(f"/api/tasks/{task['id']}", json={"title": "stolen"}).status_code == 404
    assert bob.delete(f"/api/tasks/{task['id']}").status_code == 404
    assert alice.patch(f"/api/tasks/{task['id']}", json={"title": ""}).status_code == 422
    assert changes(alice, cursor)["changes"] == []


def test_limit_pages_through_the_changes_with_has_more(alice):
    cursor = start(alice)
    ids = [alice.create_task(title=f"t{i}")["id"] for i in range(5)]
    first = changes(alice, cursor, limit=2)
    assert [c["id"] for c in first["changes"]] == ids[:2] and first["has_more"] is True
    second = changes(alice, first["cursor"], limit=2)
    third = changes(alice, second["cursor"], limit=2)
    assert [c["id"] for c in second["changes"] + third["changes"]] == ids[2:]
    assert second["has_more"] is True and third["has_more"] is False


def test_users_never_see_each_others_changes(alice, bob):
    alice_cursor, bob_cursor = start(alice), start(bob)
    alice.create_task(title="alice's")
    assert changes(bob, bob_cursor)["changes"] == []
    # Even with alice's cursor, bob reads his own feed.
    assert all(c["data"]["user_id"] == bob.user_id for c in changes(bob, alice_cursor)["changes"] if c["data"])
    assert [c["data"]["title"] for c in changes(alice, alice_cursor)["changes"]] == ["alice's"]


def test_the_user_path_spelling_checks_the_user(alice, bob):
    cursor = start(alice)
    alice.create_task(title="mine")
    response = alice.get(f"/api/{alice.user_id}/changes", params={"since": cursor})
    assert response.status_code == 200 and [c["type"] for c in response.json()["changes"]] == ["task.created"]
    forbidden = bob.get(f"/api/{alice.user_id}/changes", params={"since": cursor})
    assert forbidden.status_code == 403 and forbidden.json()["error_code"] == "FORBIDDEN"


@pytest.mark.parametrize("since", ["", "17", "v1.", "v1.-1", "v1.01", "v2.5", "v1.5x", "v1." + "9" * 19])
def test_a_malformed_cursor_is_a_422_naming_since(alice, since):
    response = alice.get("/api/changes", params={"since": since})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error_code"] == "VALIDATION_ERROR" and [e["field"] for e in body["errors"]] == ["since"]


@pytest.mark.parametrize("limit", [0, 1001, "many"])
def test_limit_out_of_range_is_a_422(alice, limit):
    response = alice.get("/api/changes", params={"since": start(alice), "limit": limit})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "limit"


def test_no_token_is_a_401(client):
    response = client.get("/api/changes")
    assert response.status_code == 401 and response.json()["error_code"] == "UNAUTHORIZED"


def test_a_cursor_ahead_of_the_feed_is_expired(alice):
    alice.create_task()
    response = alice.get("/api/changes", params={"since": "v1.999999"})
    assert response.status_code == 410 and response.json()["error_code"] == "CURSOR_EXPIRED"


def age_events(sql_engine, user_id: str, age: timedelta) -> None:
    with sql_engine.begin() as connection:
        connection.execute(
            sa.update(events.event_table).where(events.event_table.c.user_id == user_id)
            .values(created_at=datetime.now(timezone.utc) - age)
        )


def purge(database_url: str, days: int = 30) -> int:
    async def run() -> int:
        database = Database(make_settings(database_url))
        await database.open()
        try:
            return await events.purge_old_events(database, days)
        finally:
            await database.close()

    return asyncio.run(run())


def test_events_past_the_retention_are_purged_and_their_cursors_expire(alice, bob, sql_engine, database_url):
    old_cursor = start(alice)
    alice.create_task(title="old")
    bob_cursor = start(bob)
    bob.create_task(title="recent")
    age_events(sql_engine, alice.user_id, timedelta(days=31))
    assert purge(database_url) >= 1

    expired = alice.get("/api/changes", params={"since": old_cursor})
    assert expired.status_code == 410 and expired.json()["error_code"] == "CURSOR_EXPIRED"
    assert "start over" in expired.json()["detail"].lower()
    # A fresh start works, and later changes follow from it.
    fresh = start(alice)
    alice.create_task(title="new")
    assert [c["data"]["title"] for c in changes(alice, fresh)["changes"]] == ["new"]
    # Nothing recent went.
    assert [c["data"]["title"] for c in changes(bob, bob_cursor)["changes"]] == ["recent"]


def test_events_inside_the_retention_are_kept(alice, sql_engine, database_url):
    cursor = start(alice)
    alice.create_task(title="29 days old")
    age_events(sql_engine, alice.user_id, timedelta(days=29))
    purge(database_url)
    assert [c["data"]["title"] for c in changes(alice, cursor)["changes"]] == ["29 days old"]


def test_a_cursor_that_was_current_when_its_events_were_purged_still_works(alice, sql_engine, database_url):
    alice.create_task(title="old")
    cursor = start(alice)  # after the old event: nothing of it is missed
    age_events(sql_engine, alice.user_id, timedelta(days=40))
    purge(database_url)
    assert changes(alice, cursor)["changes"] == []
    alice.create_task(title="new")
    assert [c["data"]["title"] for c in changes(alice, cursor)["changes"]] == ["new"]


def test_a_change_purged_before_an_earlier_one_expires_the_cursors_before_it(alice, sql_engine, database_url):
    """`created_at` is when a write's transaction began, `seq` the order of commits: a write that
    began first and committed second has the older event with the later seq. At the cutoff, the
    purge takes it and keeps the earlier seq, so a reader must not step over the gap."""
    cursor = start(alice)
    for title in ("first", "second", "third"):
        alice.create_task(title=title)
    first, second, third = changes(alice, cursor)["changes"]
    with sql_engine.begin() as connection:  # the second began before the cutoff, the first after it
        for change, age in ((first, timedelta(days=29)), (second, timedelta(days=31))):
            connection.execute(
                sa.update(events.event_table)
                .where(events.event_table.c.user_id == alice.user_id, events.event_table.c.seq == events.seq_of(change["cursor"]))
                .values(created_at=datetime.now(timezone.utc) - age)
            )
    assert purge(database_url) == 1

    for before_the_gap in (cursor, first["cursor"]):
        expired = alice.get("/api/changes", params={"since": before_the_gap})
        assert expired.status_code == 410 and expired.json()["error_code"] == "CURSOR_EXPIRED"
    # After the gap, nothing is missing.
    assert [c["data"]["title"] for c in changes(alice, second["cursor"])["changes"]] == ["third"]


def test_the_events_migration_upgrades_a_database_with_tasks_and_downgrades(backend, scratch_database):
    from alembic import command
    from alembic.config import Config
    from fastapi.testclient import TestClient

    from conftest import mint_token
    from config import Settings
    from main import create_app

    url = scratch_database(backend, migrate=False)
    project = Path(__file__).resolve().parent.parent
    config = Config(str(project / "alembic.ini"))
    config.set_main_option("script_location", str(project / "migrations"))
    config.attributes["database_url"] = Settings.normalise_database_url(url)
    command.upgrade(config, "0002")
    engine = sa.create_engine(Settings.normalise_database_url(url))
    now = datetime.now(timezone.utc)
    with engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO task (user_id, title, completed, priority, tags, created_at, updated_at, version) "
            "VALUES ('migrated', 'from before', false, 'low', '[]', :now, :now, 1)"
        ), {"now": now})
    command.upgrade(config, "head")
    with TestClient(create_app(make_settings(url))) as client:
        headers = {"Authorization": f"Bearer {mint_token('migrated')}"}
        cursor = client.get("/api/changes", headers=headers).json()["cursor"]
        [task] = client.get("/api/tasks", headers=headers).json()
        client.patch(f"/api/tasks/{task['id']}", json={"title": "after"}, headers=headers)
        page = client.get("/api/changes", params={"since": cursor}, headers=headers).json()
        assert [(c["type"], c["data"]["title"]) for c in page["changes"]] == [("task.updated", "after")]
    command.downgrade(config, "0002")
    assert "event" not in sa.inspect(engine).get_table_names()
    engine.dispose()



def test_list_writes_are_events_with_the_list_as_the_api_returns_it(alice):
    cursor = start(alice)
    created = alice.post("/api/lists", json={"name": "Groceries"})
    assert created.status_code == 201, created.text
    list_id = created.json()["id"]
    renamed = alice.patch(f"/api/lists/{list_id}", json={"name": "Shopping"}).json()
    moved = alice.post(f"/api/lists/{list_id}/move", json={"to": "top"}).json()
    assert alice.delete(f"/api/lists/{list_id}").status_code == 204
    page = changes(alice, cursor)["changes"]
    list_events = [(c["type"], c["id"], c["data"]) for c in page if c["type"].startswith("list.")]
    assert list_events == [
        ("list.created", list_id, created.json()),
        ("list.updated", list_id, renamed),
        ("list.updated", list_id, moved),
        ("list.deleted", list_id, None),
    ]


def test_cascades_give_every_task_its_own_event(alice):
    list_id = alice.post("/api/lists", json={"name": "Project"}).json()["id"]
    parent = alice.create_task(title="parent", list_id=list_id)
    child = alice.create_task(title="child", parent_id=parent["id"])
    grandchild = alice.create_task(title="grandchild", parent_id=child["id"])
    cursor = start(alice)
    completed = alice.patch(f"/api/tasks/{parent['id']}/complete", json={"completed": True})
    assert completed.status_code == 200, completed.text
    updated = changes(alice, cursor)["changes"]
    assert sorted(c["id"] for c in updated) == sorted([parent["id"], child["id"], grandchild["id"]])
    assert all(c["type"] == "task.updated" and c["data"]["completed"] for c in updated)

    cursor = changes(alice, cursor)["cursor"]
    assert alice.delete(f"/api/lists/{list_id}", params={"cascade": "true"}).status_code == 204
    deleted = changes(alice, cursor)["changes"]
    assert sorted((c["type"], c["id"]) for c in deleted if c["type"] == "task.deleted") == sorted(
        ("task.deleted", task["id"]) for task in (parent, child, grandchild)
    )
    assert deleted[-1]["type"] == "list.deleted" and deleted[-1]["id"] == list_id


def test_a_task_move_is_an_update_and_its_subtasks_that_follow_it_too(alice):
    destination = alice.post("/api/lists", json={"name": "Elsewhere"}).json()["id"]
    parent = alice.create_task(title="parent")
    child = alice.create_task(title="child", parent_id=parent["id"])
    cursor = start(alice)
    moved = alice.post(f"/api/tasks/{parent['id']}/move", json={"list_id": destination})
    assert moved.status_code == 200, moved.text
    page = changes(alice, cursor)["changes"]
    assert [(c["type"], c["id"]) for c in page] == [("task.updated", parent["id"]), ("task.updated", child["id"])]
    assert page[0]["data"] == moved.json() and page[1]["data"]["list_id"] == destination


def test_a_write_with_its_events_in_one_statement_is_never_retried_as_a_read():
    """db.py runs a SELECT again on a fresh connection when one breaks; the one-statement write
    (a SELECT over data-modifying CTEs) must not be: it could then be applied twice."""
    import store
    from db import DIALECTS

    statement = events.with_event(task_sql.update_statement(("title",), None, None), events.TASK_UPDATED, task_sql.task_json)
    assert DIALECTS["postgresql"].compile(statement).is_read is False
    assert DIALECTS["postgresql"].compile(store.FIND_TASK).is_read is True


def test_a_change_that_commits_after_a_later_one_is_neither_waited_for_nor_skipped(alice, backend, database_url):
    """PostgreSQL (SQLite has one writer at a time, so it cannot happen there): a transaction takes
    its event's id first and commits last. A write of the same user meanwhile is not held up by it
    (a per-user lock until COMMIT would make it wait out the 5 s deadline: a 503), a reader sees that
    write's change, and after the first commits, its change follows: none skipped, none twice."""
    if backend != "postgres":
        pytest.skip("SQLite runs one write transaction at a time")
    cursor = start(alice)

    async def scenario():
        database = Database(make_settings(database_url))
        await database.open()
        try:
            async with database.transaction() as slow:
                await events.record(slow, alice.user_id, [events.to_user(alice.user_id, events.TASK_DELETED, 999_001, None)])
                created = await asyncio.to_thread(alice.create_task, title="committed first")
                before = await asyncio.to_thread(changes, alice, cursor)
            return created, before
        finally:
            await database.close()

    created, before = asyncio.run(scenario())
    assert [(c["type"], c["id"]) for c in before["changes"]] == [("task.created", created["id"])]
    after = changes(alice, before["cursor"])
    assert [(c["type"], c["id"]) for c in after["changes"]] == [("task.deleted", 999_001)]
    assert changes(alice, after["cursor"])["changes"] == []


def test_a_backlog_larger_than_one_numbering_batch_is_numbered_whole_and_in_order(alice, database_url, monkeypatch):
    """events.sequence numbers SEQUENCE_BATCH events per statement and goes on while a batch was
    full: every pending event gets its number, in the order recorded, none twice."""
    cursor = start(alice)
    monkeypatch.setattr(events, "SEQUENCE_BATCH", 2)

    async def record_five():
        database = Database(make_settings(database_url))
        await database.open()
        try:
            async with database.transaction() as connection:
                await events.record(connection, alice.user_id, [events.to_user(alice.user_id, events.TASK_DELETED, 990_000 + n, None) for n in range(5)])
            async with database.connect() as connection:
                rows, more = await events.changes_since(connection, alice.user_id, events.seq_of(cursor), 10)
            return [(row["seq"], row["entity_id"]) for row in rows], more
        finally:
            await database.close()

    rows, more = asyncio.run(record_five())
    first = events.seq_of(cursor) + 1
    assert rows == [(first + n, 990_000 + n) for n in range(5)] and more is False
