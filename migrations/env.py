"""Runs migrations under a lock, so that two processes starting at once take turns: the second
finds the schema at head and does nothing."""
import fcntl
import logging.config
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import make_url

import models  # noqa: F401  (registers the tables on the metadata)
from config import DatabaseSettings
from sqlmodel import SQLModel

config = context.config
if config.config_file_name and not config.attributes.get("database_url"):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

# Any fixed number: the key of the PostgreSQL advisory lock that serialises migrations.
MIGRATION_LOCK_KEY = 72_707_369


def database_url() -> str:
    return config.attributes.get("database_url") or DatabaseSettings().database_url


@contextmanager
def migration_lock(connection: sa.Connection):
    if connection.dialect.name == "postgresql":
        # Transaction-scoped: taken in the transaction the migrations then run in (PostgreSQL has
        # transactional DDL; alembic joins this transaction), released by its commit or rollback.
        # A session lock (pg_advisory_lock) would break behind PgBouncer in transaction mode, as
        # Neon's pooled endpoint is: lock and unlock could land on different server connections,
        # leaving the lock held on a pooled connection and the next migration waiting forever.
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        yield
    elif connection.dialect.name == "sqlite" and make_url(connection.engine.url).database not in (None, "", ":memory:"):
        lock_path = Path(make_url(connection.engine.url).database).with_suffix(".migrate-lock")
        with open(lock_path, "w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            yield
    else:
        yield


def exists_on(dialect_name: str):
    """Autogenerate (and `alembic check`) compares an object only on the databases it exists on."""

    def include_object(obj, name, type_, reflected, compare_to) -> bool:
        info = getattr(obj, "info", {})
        return info.get("compared", True) and dialect_name in info.get("dialects", (dialect_name,))

    return include_object


def run_migrations() -> None:
    engine = sa.create_engine(database_url(), poolclass=sa.pool.NullPool)
    with engine.connect() as connection, migration_lock(connection):
        context.configure(
            connection=connection,
            target_metadata=SQLModel.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            include_object=exists_on(connection.dialect.name),
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    engine.dispose()


run_migrations()
