"""Ids are never reused across upgrades (issue 23, #11), on SQLite and PostgreSQL.

SQLite: a batch migration rebuilds its table, and the copy's AUTOINCREMENT counter was the highest
surviving id (0003 rebuilt `task`, 0010 `event`): the next create got the id, and the ETag, of a
task deleted before the upgrade. Migration 0012 repairs databases already upgraded that way from
what still remembers the ids handed out (the feed, idempotency keys, references between rows).
PostgreSQL sequences are not touched by ALTER TABLE: the same tests assert it holds there too.
"""
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient

from config import Settings
from conftest import make_settings, mint_token
from main import create_app
from test_migration_lists import alembic_config

INSERT_OLD_TASK = sa.text(
    "INSERT INTO task (user_id, title, completed, priority, tags, created_at, updated_at, version) "
    "VALUES ('ids_user', :title, false, 'medium', '[]', :at, :at, 1) RETURNING id"
)
INSERT_OLD_EVENT = sa.text(
    "INSERT INTO event (user_id, seq, type, entity_id, data, created_at) "
    "VALUES ('ids_user', :seq, 'task.deleted', 1, NULL, :at) RETURNING id"
)
AUTH = {"Authorization": f"Bearer {mint_token('ids_user')}"}


def old_timestamp(engine: sa.Engine) -> datetime:
    at = datetime(2026, 11, 1, tzinfo=timezone.utc)
    return at.replace(tzinfo=None) if engine.dialect.name == "sqlite" else at


def scalar(engine: sa.Engine, sql: str) -> object:
    with engine.connect() as connection:
        return connection.execute(sa.text(sql)).scalar()


def forget_given_ids(engine: sa.Engine) -> None:
    """What the old 0003 and 0010 rebuilds did on SQLite: each AUTOINCREMENT counter down to the
    highest surviving id. PostgreSQL has no such step (its sequences are not reset)."""
    if engine.dialect.name != "sqlite":
        return
    with engine.begin() as connection:
        for table in ("task", "list", "event", "reminder"):
            connection.execute(
                sa.text(f"UPDATE sqlite_sequence SET seq = (SELECT coalesce(max(id), 0) FROM {table}) WHERE name = :name"),
                {"name": table},
            )


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_a_task_deleted_before_the_upgrade_keeps_its_id(scratch_database, backend_name):
    url = scratch_database(backend_name, migrate=False)
    config = alembic_config(url)
    command.upgrade(config, "0002")
    engine = sa.create_engine(Settings.normalise_database_url(url))
    with engine.begin() as connection:  # as the round-1 version wrote and deleted them
        ids = [connection.execute(INSERT_OLD_TASK, {"title": f"t{n}", "at": old_timestamp(engine)}).scalar() for n in range(3)]
        connection.execute(sa.text("DELETE FROM task WHERE id = :id"), {"id": ids[-1]})
    command.upgrade(config, "head")
    with TestClient(create_app(make_settings(url))) as client:
        created = client.post("/api/tasks", json={"title": "after the upgrade"}, headers=AUTH)
    engine.dispose()
    assert created.status_code == 201
    assert created.json()["id"] > ids[-1]
    assert created.headers["ETag"] != f'"{ids[-1]}.1"'  # a stale If-Match of the deleted task matches nothing


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_a_purged_event_keeps_its_id_across_the_event_rebuild(scratch_database, backend_name):
    """Event ids are the webhooks' message ids (`evt_<id>`): a reused one is dropped as a duplicate."""
    url = scratch_database(backend_name, migrate=False)
    config = alembic_config(url)
    command.upgrade(config, "0009")
    engine = sa.create_engine(Settings.normalise_database_url(url))
    with engine.begin() as connection:
        ids = [connection.execute(INSERT_OLD_EVENT, {"seq": seq, "at": old_timestamp(engine)}).scalar() for seq in (1, 2, 3)]
        connection.execute(sa.text("INSERT INTO user_event_counter (user_id, seq) VALUES ('ids_user', 3)"))
        connection.execute(sa.text("DELETE FROM event WHERE id = :id"), {"id": ids[-1]})  # the retention purge
    command.upgrade(config, "head")
    with TestClient(create_app(make_settings(url))) as client:
        assert client.post("/api/tasks", json={"title": "new"}, headers=AUTH).status_code == 201
    first_new_event = scalar(engine, f"SELECT min(id) FROM event WHERE id NOT IN ({ids[0]}, {ids[1]})")
    engine.dispose()
    assert first_new_event > ids[-1]


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_downgrade_and_upgrade_keep_autoincrement_and_counters(scratch_database, backend_name):
    url = scratch_database(backend_name)
    config = alembic_config(url)
    engine = sa.create_engine(Settings.normalise_database_url(url))
    with TestClient(create_app(make_settings(url))) as client:
        ids = [client.post("/api/tasks", json={"title": f"t{n}"}, headers=AUTH).json()["id"] for n in range(3)]
        assert client.delete(f"/api/tasks/{ids[-1]}", headers=AUTH).status_code == 204
    command.downgrade(config, "0002")
    command.upgrade(config, "head")
    if backend_name == "sqlite":
        for table in ("task", "event"):
            assert "AUTOINCREMENT" in scalar(engine, f"SELECT sql FROM sqlite_master WHERE name = '{table}'")
    with TestClient(create_app(make_settings(url))) as client:
        created = client.post("/api/tasks", json={"title": "after"}, headers=AUTH).json()
    engine.dispose()
    assert created["id"] > ids[-1]


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_0012_repairs_counters_from_what_remembers_the_ids(scratch_database, backend_name):
    url = scratch_database(backend_name)
    config = alembic_config(url)
    engine = sa.create_engine(Settings.normalise_database_url(url))
    with TestClient(create_app(make_settings(url))) as client:
        tasks = [client.post("/api/tasks", json={"title": f"t{n}"}, headers=AUTH).json()["id"] for n in range(3)]
        lists = [client.post("/api/lists", json={"name": f"l{n}"}, headers=AUTH).json()["id"] for n in range(2)]
        keyed = client.post("/api/tasks", json={"title": "keyed"}, headers={**AUTH, "Idempotency-Key": "k-ids"}).json()["id"]
        for path in (f"/api/tasks/{tasks[-1]}", f"/api/lists/{lists[-1]}", f"/api/tasks/{keyed}"):
            assert client.delete(path, headers=AUTH).status_code == 204
        assert client.get("/api/changes", headers=AUTH).status_code == 200  # numbers the events, as a purge does
    events_given = scalar(engine, "SELECT max(id) FROM event")
    with engine.begin() as connection:
        # The last event is purged, and the keyed task's events are purged: only its Idempotency-Key row remembers its id.
        connection.execute(sa.text("DELETE FROM event WHERE entity_id = :id AND type LIKE 'task.%'"), {"id": keyed})
        connection.execute(sa.text("DELETE FROM event WHERE id = :id"), {"id": events_given})
    command.downgrade(config, "0011")
    forget_given_ids(engine)
    if backend_name == "sqlite":
        assert scalar(engine, "SELECT seq FROM sqlite_sequence WHERE name = 'task'") < keyed  # the bug, simulated
    command.upgrade(config, "head")
    with TestClient(create_app(make_settings(url))) as client:
        task = client.post("/api/tasks", json={"title": "after"}, headers=AUTH).json()
        new_list = client.post("/api/lists", json={"name": "after"}, headers=AUTH).json()
    first_new_event = scalar(engine, f"SELECT min(id) FROM event WHERE entity_id = {task['id']}")
    engine.dispose()
    assert task["id"] > keyed
    assert new_list["id"] > lists[-1]
    assert first_new_event > events_given


def test_0012_keeps_event_ids_above_every_event_ever_numbered(scratch_database):
    """Every event ever committed has a number in its user's feed: their count bounds the ids given,
    also when retention purged every event before a rebuild (SQLite)."""
    url = scratch_database("sqlite")
    config = alembic_config(url)
    engine = sa.create_engine(Settings.normalise_database_url(url))
    with TestClient(create_app(make_settings(url))) as client:
        for n in range(4):
            assert client.post("/api/tasks", json={"title": f"t{n}"}, headers=AUTH).status_code == 201
        assert client.get("/api/changes", headers=AUTH).status_code == 200  # numbers the events, as a purge does
    events_given = scalar(engine, "SELECT max(id) FROM event")
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM event"))
    command.downgrade(config, "0011")
    forget_given_ids(engine)
    command.upgrade(config, "head")
    with TestClient(create_app(make_settings(url))) as client:
        assert client.post("/api/tasks", json={"title": "after"}, headers=AUTH).status_code == 201
    first_new_event = scalar(engine, "SELECT min(id) FROM event")
    engine.dispose()
    assert first_new_event > events_given
