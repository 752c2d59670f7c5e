"""Migrations 0015 (the counts the writes keep) and 0017 (with the changes) on SQLite and PostgreSQL: upgrading a database that
already has tasks counts them; down removes the tables and their triggers (writes still work), and up
again puts both back; the schema is exactly the models' (`alembic check`)."""
import pytest
import sqlalchemy as sa
from alembic import command

from config import Settings
from test_kept_counts import assert_counts_exact
from test_migration_chat import table_names
from test_migration_lists import alembic_config

COUNT_TABLES = {"list_task_count", "list_tag_count"}
NOW = "2026-12-01 10:00:00"


def add_task(connection: sa.Connection, list_id: int, title: str, priority: str, completed: bool, tags: list[str]) -> int:
    task_id = connection.execute(sa.text(
        "INSERT INTO task (user_id, title, completed, priority, tags, created_at, updated_at, version, list_id, position,"
        " reminders) VALUES ('u', :title, :completed, :priority, '[]', :now, :now, 1, :list_id, 'a0', '[]') RETURNING id"
    ), {"title": title, "completed": completed, "priority": priority, "now": NOW, "list_id": list_id}).scalar()
    for tag in tags:
        connection.execute(sa.text("INSERT INTO task_tag (task_id, tag_key, tag, list_id) VALUES (:t, :key, :tag, :l)"),
                           {"t": task_id, "key": tag.lower(), "tag": tag, "l": list_id})
    return task_id


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_counts_upgrade_downgrade_upgrade(scratch_database, backend_name):
    url = scratch_database(backend_name)  # at head
    config = alembic_config(url)
    command.downgrade(config, "0014")
    assert not COUNT_TABLES & table_names(url)
    engine = sa.create_engine(Settings.normalise_database_url(url))
    with engine.begin() as connection:
        lists = [connection.execute(sa.text(
            "INSERT INTO list (owner_id, name, is_default, created_at, updated_at, version)"
            " VALUES ('u', :name, false, :now, :now, 1) RETURNING id"
        ), {"name": name, "now": NOW}).scalar() for name in ("One", "Two")]
        add_task(connection, lists[0], "a", "high", False, ["Home", "x"])
        add_task(connection, lists[0], "b", "high", True, ["home"])
        add_task(connection, lists[1], "c", "low", False, ["x"])

    command.upgrade(config, "head")  # counts what is there
    assert_counts_exact(engine)
    with engine.connect() as connection:
        kept = connection.execute(sa.text("SELECT sum(open_high), sum(done_high) FROM list_task_count WHERE list_id = :l"), {"l": lists[0]}).one()
    assert tuple(kept) == (1, 1)

    command.downgrade(config, "0014")
    assert not COUNT_TABLES & table_names(url)
    with engine.begin() as connection:  # no trigger is left behind to write to a table that is gone
        add_task(connection, lists[1], "d", "medium", True, ["y"])
        connection.execute(sa.text("UPDATE task SET completed = NOT completed"))
    command.upgrade(config, "head")
    command.check(config)
    with engine.begin() as connection:  # and the triggers are back
        add_task(connection, lists[1], "e", "low", False, ["x", "Y"])
        connection.execute(sa.text("UPDATE task SET priority = 'low', list_id = :l WHERE title = 'a'"), {"l": lists[1]})
        connection.execute(sa.text("UPDATE task_tag SET list_id = :l WHERE task_id = (SELECT id FROM task WHERE title = 'a')"),
                           {"l": lists[1]})
        connection.execute(sa.text("DELETE FROM task WHERE title = 'b'"))
    assert_counts_exact(engine)
    engine.dispose()


def list_task_count_columns(engine: sa.Engine) -> set[str]:
    return {column["name"] for column in sa.inspect(engine).get_columns("list_task_count")}


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_list_changes_down_and_up_keep_the_counts_exact(scratch_database, backend_name):
    """Migration 0017 (`changes`, added by the same triggers): down to 0016 the column goes and the
    triggers count as 0015's did; up again, the changes are added once more; the counts stay exact."""
    url = scratch_database(backend_name)
    config = alembic_config(url)
    engine = sa.create_engine(Settings.normalise_database_url(url))
    with engine.begin() as connection:
        list_id = connection.execute(sa.text(
            "INSERT INTO list (owner_id, name, is_default, created_at, updated_at, version)"
            " VALUES ('u', 'One', false, :now, :now, 1) RETURNING id"
        ), {"now": NOW}).scalar()

    def write(title: str) -> None:
        with engine.begin() as connection:
            task_id = add_task(connection, list_id, title, "high", False, ["x"])
            connection.execute(sa.text("UPDATE task SET completed = true, title = 'renamed' WHERE id = :id"), {"id": task_id})
            add_task(connection, list_id, "gone", "low", False, [])
            connection.execute(sa.text("DELETE FROM task WHERE title = 'gone'"))

    command.downgrade(config, "0016")
    assert "changes" not in list_task_count_columns(engine)
    write("a")
    assert_counts_exact(engine)
    command.upgrade(config, "head")
    command.check(config)
    with engine.connect() as connection:
        assert connection.execute(sa.text(CHANGES_OF), {"l": list_id}).scalar() == 0  # the rows there start at 0
    write("b")
    assert_counts_exact(engine)
    with engine.connect() as connection:  # the insert, the update, the other insert and its deletion
        assert connection.execute(sa.text(CHANGES_OF), {"l": list_id}).scalar() == 4
    engine.dispose()


CHANGES_OF = "SELECT sum(changes) FROM list_task_count WHERE list_id = :l"
