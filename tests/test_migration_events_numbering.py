"""Migration 0010 (events numbered after commit) on databases with events, SQLite and PostgreSQL:
numbers already given stay, a downgrade numbers what is still pending the old way, and SQLite's
table rebuild keeps AUTOINCREMENT (event ids are never reused)."""
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from alembic import command

from config import Settings
from test_migration_listing_indexes import index_names
from test_migration_lists import alembic_config

INSERT_EVENT = sa.text(
    "INSERT INTO event (user_id, seq, type, entity_id, data, created_at) VALUES (:user_id, :seq, 'task.deleted', 1, NULL, :at)"
)


def rows(engine: sa.Engine, sql: str) -> list[tuple]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.text(sql))]


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_events_numbering_migration_keeps_numbers_and_downgrades_pending_ones(scratch_database, backend_name):
    url = scratch_database(backend_name, migrate=False)
    config = alembic_config(url)
    command.upgrade(config, "0009")
    engine = sa.create_engine(Settings.normalise_database_url(url))
    at = datetime.now(timezone.utc)
    with engine.begin() as connection:
        for seq in (1, 2):
            connection.execute(INSERT_EVENT, {"user_id": "mig_alice", "seq": seq, "at": at})
        connection.execute(sa.text("INSERT INTO user_event_counter (user_id, seq) VALUES ('mig_alice', 2)"))

    command.upgrade(config, "head")
    command.check(config)  # the schema is exactly the models'
    assert {"ix_event_unsequenced", "ix_event_created_at"} <= index_names(url, "event")
    assert rows(engine, "SELECT seq FROM event ORDER BY id") == [(1,), (2,)]
    with engine.begin() as connection:  # written after the upgrade, not numbered yet
        for user_id in ("mig_alice", "mig_bob"):
            connection.execute(INSERT_EVENT, {"user_id": user_id, "seq": None, "at": at})

    command.downgrade(config, "0009")
    assert rows(engine, "SELECT user_id, seq FROM event ORDER BY id") == [
        ("mig_alice", 1), ("mig_alice", 2), ("mig_alice", 3), ("mig_bob", 1),
    ]
    assert rows(engine, "SELECT user_id, seq FROM user_event_counter ORDER BY user_id") == [("mig_alice", 3), ("mig_bob", 1)]
    assert "ix_event_unsequenced" not in index_names(url, "event") and "ix_event_created_at" in index_names(url, "event")
    command.upgrade(config, "head")
    if backend_name == "sqlite":
        [(table_sql,)] = rows(engine, "SELECT sql FROM sqlite_master WHERE name = 'event'")
        assert "AUTOINCREMENT" in table_sql
    engine.dispose()
