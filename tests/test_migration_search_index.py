"""Migrations 0009 (a list's index and the search's trigram index) and 0016 (the search index keyed by
the list as an array too) up, down and up again, on SQLite and PostgreSQL; and the listing searches
the exact expressions the index holds."""
import pytest
from alembic import command
from sqlalchemy.dialects import postgresql

import listing_sql
import models
import queries
from test_migration_listing_indexes import catalog_names, index_names
from test_migration_lists import alembic_config


def statistics_names(url: str) -> set[str]:
    return catalog_names(url, "SELECT NULL WHERE 0", "SELECT stxname FROM pg_statistic_ext")  # SQLite has none


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_search_index_upgrade_downgrade_upgrade(scratch_database, backend_name):
    url = scratch_database(backend_name)  # at head
    config = alembic_config(url)
    command.downgrade(config, "0010")  # 0011 replaces 0009's list index (tests/test_migration_list_index.py)
    on_postgres = backend_name == "postgres"
    assert ("ix_task_search" in index_names(url, "task")) == on_postgres
    assert "ix_task_user_id_list_id_created_at" in index_names(url, "task")
    if on_postgres:
        assert "st_task_user_key" in statistics_names(url)  # 0013 drops it: the index leads with list_id since
    command.downgrade(config, "0008")
    assert not {"ix_task_search", "ix_task_user_id_list_id_created_at"} & index_names(url, "task")
    if on_postgres:
        assert "st_task_user_key" not in statistics_names(url)
    command.upgrade(config, "head")
    command.upgrade(config, "head")  # twice: harmless
    command.check(config)  # the schema is exactly the models'
    assert ("ix_task_search" in index_names(url, "task")) == on_postgres


def test_search_uses_the_indexed_expression():
    shape = queries.TaskFilter("someone", text="x", many_tasks=True).shape()
    sql = str(listing_sql.count_statement(shape).compile(dialect=postgresql.dialect()))
    assert f"({models.SEARCHED_TEXT_SQL}) LIKE" in sql


@pytest.mark.parametrize("migration_name", ["0009_list_and_search_indexes", "0013_sharing", "0016_search_lists_array"])
def test_index_expression_is_the_models(migration_name):
    migration = __import__("importlib").import_module(f"migrations.versions.{migration_name}")
    separator_spelt = migration.SEARCHED_TEXT.replace("E'\\x1f'", f"'{models.SEARCH_SEPARATOR}'")
    assert separator_spelt == models.SEARCHED_TEXT_SQL


def search_index_definition(url: str) -> str:
    found = catalog_names(url, "SELECT NULL WHERE 0", "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_task_search'")
    return found.pop() if found else ""


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_search_index_gains_the_lists_as_an_array_and_loses_it_on_downgrade(scratch_database, backend_name):
    """0016: the count of a search over several lists names them as one array, which the index holds."""
    url = scratch_database(backend_name)  # at head
    config = alembic_config(url)
    on_postgres = backend_name == "postgres"
    assert ("ARRAY[list_id]" in search_index_definition(url)) == on_postgres
    command.downgrade(config, "0015")
    assert "ARRAY[list_id]" not in search_index_definition(url)
    assert ("(list_id)::bigint" in search_index_definition(url)) == on_postgres  # 0013's index, as it was
    command.upgrade(config, "head")
    command.check(config)
    assert ("ARRAY[list_id]" in search_index_definition(url)) == on_postgres


def test_a_count_over_named_lists_names_them_as_the_index_does():
    shape = queries.TaskFilter("someone", text="x", many_tasks=True).shape()
    sql = str(listing_sql.count_statement(shape, 3).compile(dialect=postgresql.dialect()))
    assert f"{models.SEARCH_LISTS_SQL[1:-1].replace('list_id', 'task.list_id')} && ARRAY[" in sql
    assert "CAST(task.list_id AS BIGINT)" not in sql
