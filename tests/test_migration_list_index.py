"""Migration 0011 (one index for a list's tasks instead of two) up, down and up again, on SQLite and
PostgreSQL, with tasks in the table; and the statements that name a list use the one left."""
import pytest
import sqlalchemy as sa
from alembic import command

from config import Settings
from test_migration_listing_indexes import index_names
from test_migration_lists import alembic_config

BEFORE = {"ix_task_user_id_list_id_created_at", "ix_task_list_id_parent_id_position"}
AFTER = "ix_task_list_id_user_id_created_at"


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_list_index_upgrade_downgrade_upgrade(scratch_database, backend_name):
    url = scratch_database(backend_name, migrate=False)
    config = alembic_config(url)
    command.upgrade(config, "0011")  # sharing (0013) keys every index by list: tests/test_sharing_migration.py
    assert AFTER in index_names(url, "task") and not BEFORE & index_names(url, "task")
    command.downgrade(config, "0010")
    assert BEFORE <= index_names(url, "task") and AFTER not in index_names(url, "task")
    command.upgrade(config, "0011")
    command.upgrade(config, "0011")  # twice: harmless
    assert AFTER in index_names(url, "task") and not BEFORE & index_names(url, "task")
    command.upgrade(config, "head")
    command.check(config)  # the schema is exactly the models'





def test_a_lists_tasks_and_the_foreign_key_check_of_a_list_delete_use_the_list_index(scratch_database):
    """On PostgreSQL, with enough tasks that a sequential scan would lose: a list's count (GET
    /api/lists) and the lookup PostgreSQL makes for the foreign key when a list row is deleted."""
    url = scratch_database("postgres")
    engine = sa.create_engine(Settings.normalise_database_url(url))
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO list (id, owner_id, name, is_default, created_at, updated_at, version) "
            "SELECT 900000 + n, 'fk_user_' || n, 'l', false, now(), now(), 1 FROM generate_series(1, 20) AS n"
        )
        connection.exec_driver_sql(
            "INSERT INTO task (user_id, title, completed, priority, tags, reminders, list_id, position, created_at, updated_at, version) "
            "SELECT 'fk_user_' || (mod(n, 20) + 1), 't', false, 'medium', '[]', '[]', 900000 + mod(n, 20) + 1, 'a' || n, now(), now(), 1 "
            "FROM generate_series(1, 20000) AS n"
        )
        connection.exec_driver_sql("ANALYZE task")
        plans = [
            "\n".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN {sql}"))
            for sql in (
                "SELECT count(*) FROM task WHERE list_id = 900001",  # what lists.TASK_COUNT asks per list
                "SELECT 1 FROM ONLY task x WHERE list_id = 900001 FOR KEY SHARE OF x",  # the foreign key check
            )
        ]
    engine.dispose()
    for plan in plans:  # an index that leads with list_id (the planner picks among those)
        assert "Index Cond: (list_id = 900001)" in plan and "Seq Scan" not in plan, plan
