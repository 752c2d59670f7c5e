"""Migration 0007 (the listing's indexes) up, down and up again, on SQLite and PostgreSQL; and the
priority rank the listing sorts by is spelt exactly as the index on it."""
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.dialects import postgresql, sqlite

import listing_sql
import models
from config import Settings
from test_migration_lists import alembic_config

NEW_INDEXES = {
    "task": {"ix_task_user_id_updated_at", "ix_task_user_id_priority_rank", "ix_task_user_id_completed_due_date"},
    "task_tag": {"ix_task_tag_user_id_tag_key_tag"},
}


def catalog_names(url: str, sqlite_query: str, postgres_query: str) -> set[str]:
    """The first column of a catalog query, the one for the URL's database."""
    engine = sa.create_engine(Settings.normalise_database_url(url))
    with engine.connect() as connection:
        query = sqlite_query if connection.dialect.name == "sqlite" else postgres_query
        names = {row[0] for row in connection.exec_driver_sql(query)}
    engine.dispose()
    return names


def index_names(url: str, table: str) -> set[str]:
    return catalog_names(
        url,
        f"SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = '{table}'",
        f"SELECT indexname FROM pg_indexes WHERE tablename = '{table}'",
    )


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_listing_indexes_upgrade_downgrade_upgrade(scratch_database, backend_name):
    url = scratch_database(backend_name, migrate=False)
    config = alembic_config(url)
    command.upgrade(config, "0011")  # sharing (0013) keys them by list: tests/test_sharing_migration.py
    title_index = {"ix_task_user_id_title"} if backend_name == "postgres" else set()
    for table, names in NEW_INDEXES.items():
        assert names | (title_index if table == "task" else set()) <= index_names(url, table)
    command.downgrade(config, "0006")
    for table, names in NEW_INDEXES.items():
        assert not (names | title_index) & index_names(url, table)
    command.upgrade(config, "0011")
    command.upgrade(config, "0011")  # twice: harmless
    assert "ix_task_user_id_title" in index_names(url, "task") or backend_name == "sqlite"
    command.upgrade(config, "head")
    command.check(config)  # the schema is exactly the models'


@pytest.mark.parametrize("dialect", [postgresql.dialect(), sqlite.dialect()], ids=["postgresql", "sqlite"])
def test_priority_rank_is_spelt_as_its_index(dialect):
    compiled = str(listing_sql.PRIORITY_RANK.compile(dialect=dialect)).replace("task.", "")
    assert f"({compiled})" == models.PRIORITY_RANK_SQL
