"""Migration 0014 (conversations and their messages) up, down and up again, on SQLite and
PostgreSQL: the schema is exactly the models' (`alembic check`), and deleting a conversation
deletes its messages."""
import pytest
import sqlalchemy as sa
from alembic import command

from config import Settings
from test_migration_lists import alembic_config

CHAT_TABLES = {"conversation", "chat_message"}


def table_names(url: str) -> set[str]:
    engine = sa.create_engine(Settings.normalise_database_url(url))
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_chat_tables_upgrade_downgrade_upgrade(scratch_database, backend_name):
    url = scratch_database(backend_name)  # at head
    config = alembic_config(url)
    assert CHAT_TABLES <= table_names(url)
    command.downgrade(config, "0014-1")
    assert not CHAT_TABLES & table_names(url)
    command.upgrade(config, "head")
    command.upgrade(config, "head")  # twice: harmless
    command.check(config)
    engine = sa.create_engine(Settings.normalise_database_url(url))
    with engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        conversation_id = connection.execute(sa.text(
            "INSERT INTO conversation (user_id, thread_id, title, created_at, updated_at) "
            "VALUES ('u', 'thr_1', 't', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) RETURNING id"
        )).scalar()
        connection.execute(sa.text(
            "INSERT INTO chat_message (conversation_id, role, content, tool_calls, item_id, created_at) "
            "VALUES (:c, 'user', 'hi', '[]', 'msg_1', CURRENT_TIMESTAMP)"
        ), {"c": conversation_id})
        with pytest.raises(sa.exc.IntegrityError):  # only the two roles
            with connection.begin_nested():
                connection.execute(sa.text(
                    "INSERT INTO chat_message (conversation_id, role, content, tool_calls, item_id, created_at) "
                    "VALUES (:c, 'system', 'x', '[]', 'msg_2', CURRENT_TIMESTAMP)"
                ), {"c": conversation_id})
        connection.execute(sa.text("DELETE FROM conversation WHERE id = :c"), {"c": conversation_id})
        assert connection.execute(sa.text("SELECT count(*) FROM chat_message")).scalar() == 0
    engine.dispose()
