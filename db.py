"""The pooled engine, the database dependency, and schema upgrades."""
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import orjson
import sqlalchemy as sa
from fastapi import Depends, Request

from config import Settings

PROJECT_DIR = Path(__file__).resolve().parent
PING_IF_IDLE_SECONDS = 1.0


def make_engine(settings: Settings) -> sa.Engine:
    json_options = {"json_serializer": lambda value: orjson.dumps(value).decode(), "json_deserializer": orjson.loads}
    if settings.is_sqlite:
        return _make_sqlite_engine(settings.database_url, settings.db_pool_size, json_options)
    engine = sa.create_engine(
        settings.database_url,
        isolation_level="AUTOCOMMIT",  # see Database
        pool_recycle=settings.db_pool_recycle_seconds,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        # Fail fast while the database is down: a short pool wait and connect timeout, not 30 s.
        pool_timeout=settings.db_pool_timeout_seconds,
        # SQL parameters are task contents: keep them out of exception messages, hence out of the logs.
        hide_parameters=True,
        connect_args={
            "connect_timeout": settings.db_connect_timeout_seconds,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "application_name": "task-api",
        },
        **json_options,
    )
    _ping_connections_that_sat_idle(engine)
    return engine


def _ping_connections_that_sat_idle(engine: sa.Engine) -> None:
    """Check a pooled connection before use if it sat idle: one the server (or Neon's idle reaper)
    closed is replaced, not handed out. `pool_pre_ping` would ping on every checkout, a round trip
    per request; a connection used within the last second is known to be alive. After a database
    restart the first failed statement invalidates the whole pool, so no stale connection stays."""

    @sa.event.listens_for(engine, "checkin")
    def _remember_last_use(_dbapi_connection, record) -> None:
        record.info["last_used"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection, record, _proxy) -> None:
        if time.monotonic() - record.info.get("last_used", 0.0) < PING_IF_IDLE_SECONDS:
            return
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception as exc:  # the pool retries with a fresh connection
            raise sa.exc.DisconnectionError() from exc


def _make_sqlite_engine(url: str, pool_size: int, json_options: dict) -> sa.Engine:
    in_memory = sa.engine.make_url(url).database in (None, "", ":memory:")
    # Handlers run in a threadpool: connections are shared across threads, one at a time.
    # An in-memory database exists once per connection, so it gets exactly one.
    pool_options = {"poolclass": sa.pool.StaticPool} if in_memory else {"pool_size": pool_size, "max_overflow": 4}
    engine = sa.create_engine(
        url,
        isolation_level="AUTOCOMMIT",  # see Database
        connect_args={"check_same_thread": False, "timeout": 10},
        hide_parameters=True,  # as above: no task contents in exception messages
        **pool_options,
        **json_options,
    )

    @sa.event.listens_for(engine, "connect")
    def _configure_sqlite(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=10000")  # first: every statement below may have to wait
        # Readers do not wait for the writer. Switching needs the database to itself, so only a new
        # file is switched; a connection opened during a burst of writes just reads the mode.
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # an acknowledged write survives a crash
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
        # SQLite's lower() folds ASCII only; searches must find "École" with "école" as PostgreSQL does.
        dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)

    return engine


def _unicode_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


class Database:
    """How the store talks to the database. Every pooled connection is in autocommit mode from the
    moment it connects: a read or a single-statement write costs one round trip (no BEGIN, no
    ROLLBACK on return, no isolation switch). `transaction()` is for several statements that
    commit together; on SQLite it takes the write lock up front (BEGIN IMMEDIATE), so two
    writers queue instead of failing on a stale snapshot."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.dialect = engine.dialect.name
        self._begin = "BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN"

    def connect(self) -> sa.Connection:
        return self.engine.connect()

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as connection:
            connection.exec_driver_sql(self._begin)
            try:
                yield connection
            except BaseException:
                connection.exec_driver_sql("ROLLBACK")
                raise
            connection.exec_driver_sql("COMMIT")


async def get_database(request: Request) -> Database:
    return request.app.state.database


DatabaseDep = Annotated[Database, Depends(get_database)]


def database_is_reachable(engine: sa.Engine) -> bool:
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        return True
    except sa.exc.SQLAlchemyError:
        return False


def upgrade_schema(database_url: str) -> None:
    """`alembic upgrade head` for the given database, as the canonical start runs it."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(PROJECT_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_DIR / "migrations"))
    config.attributes["database_url"] = database_url
    command.upgrade(config, "head")
