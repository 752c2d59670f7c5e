"""The database: a small pool of async connections per worker, and statements that SQLAlchemy Core
builds once and compiles once per dialect, run on the driver directly.

Handlers are `async def` and await the driver (psycopg 3 on PostgreSQL, aiosqlite on SQLite): no
thread hop per request, and no SQLAlchemy execution/result layer, which cost more CPU than the
query itself (README.md, "Speed"). Rows come back as plain dicts.
"""
import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import aiosqlite
import orjson
import psycopg
import psycopg.pq
import psycopg.types.json
import sqlalchemy as sa
from fastapi import Depends, Request
from sqlalchemy.dialects.postgresql import psycopg as postgresql_psycopg
from sqlalchemy.dialects.sqlite import pysqlite

from config import Settings

log = logging.getLogger("task_api.db")

PROJECT_DIR = Path(__file__).resolve().parent
# A pooled connection idle for longer is pinged before use: the server (or Neon's idle reaper) may
# have closed it. One used within the last second is known to be alive.
PING_IF_IDLE_SECONDS = 1.0
SQLITE_BUSY_TIMEOUT_SECONDS = 10.0

Row = dict[str, Any]
Params = dict[str, Any]


class DatabaseUnavailable(Exception):
    """The database cannot be reached: connecting failed, the connection broke, or no pooled
    connection became free in time. The API answers 503 with Retry-After."""


class DuplicateKey(Exception):
    """A unique constraint refused the write."""


# ----------------------------------------------------------------------------- compiled statements


@dataclass(frozen=True)
class Compiled:
    """A statement as one driver runs it: its SQL text, the values SQLAlchemy put in it (`x + 1`),
    and how values cross the boundary for the column types that need it."""

    sql: str
    defaults: Params
    to_driver: tuple[tuple[str, Callable[[Any], Any]], ...]
    columns: tuple[str, ...]
    from_driver: tuple[tuple[str, Callable[[Any], Any]], ...]

    def arguments(self, params: Params | None) -> Params:
        arguments = {**self.defaults, **params} if params else dict(self.defaults)
        for name, convert in self.to_driver:
            value = arguments.get(name)
            if value is not None:
                arguments[name] = convert(value)
        return arguments

    def row(self, values: Any) -> Row:
        row = dict(zip(self.columns, values))
        for name, convert in self.from_driver:
            value = row[name]
            if value is not None:
                row[name] = convert(value)
        return row


def _dumps_json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _sqlite_datetime_in(value: datetime) -> str:
    """Naive UTC text, as SQLAlchemy's SQLite dialect writes it (it sorts as time does)."""
    return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_datetime_out(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is timezone.utc else value.astimezone(timezone.utc)


class Dialect:
    """What differs between the two databases, for the statements: SQL spelling and value types."""

    name: str
    sqlalchemy_dialect: sa.Dialect

    def to_driver(self, type_: sa.types.TypeEngine) -> Callable[[Any], Any] | None:
        raise NotImplementedError

    def from_driver(self, type_: sa.types.TypeEngine) -> Callable[[Any], Any] | None:
        raise NotImplementedError

    def compile(self, statement: sa.Executable) -> Compiled:
        compiled = statement.compile(dialect=self.sqlalchemy_dialect)
        binds = {name: bind for name, bind in compiled.binds.items() if name.isidentifier()}
        to_driver = tuple(
            (name, convert) for name, bind in binds.items() if (convert := self.to_driver(_base(bind.type))) is not None
        )
        result_columns = list(getattr(statement, "exported_columns", ()))
        columns = tuple(column.key for column in result_columns)
        from_driver = tuple(
            (column.key, convert)
            for column in result_columns
            if (convert := self.from_driver(_base(column.type))) is not None
        )
        defaults = {name: bind.value for name, bind in binds.items() if not bind.required}
        return Compiled(compiled.string, defaults, to_driver, columns, from_driver)


def _base(type_: sa.types.TypeEngine) -> sa.types.TypeEngine:
    """models.UTCDateTime is a TypeDecorator: it crosses the boundary as the DateTime it wraps."""
    return type_.impl if isinstance(type_, sa.TypeDecorator) else type_


class PostgresDialect(Dialect):
    name = "postgresql"
    sqlalchemy_dialect = postgresql_psycopg.dialect()

    def to_driver(self, type_):
        return _dumps_json if isinstance(type_, sa.JSON) else None  # sent as text, cast to JSON in the SQL

    def from_driver(self, type_):
        # timestamptz arrives in the session's time zone; the API speaks UTC. JSON is parsed by psycopg.
        return _utc if isinstance(type_, sa.DateTime) else None


class SqliteDialect(Dialect):
    name = "sqlite"
    sqlalchemy_dialect = pysqlite.dialect(paramstyle="named")

    def to_driver(self, type_):
        if isinstance(type_, sa.JSON):
            return _dumps_json
        if isinstance(type_, sa.DateTime):
            return _sqlite_datetime_in
        return None

    def from_driver(self, type_):
        if isinstance(type_, sa.JSON):
            return orjson.loads
        if isinstance(type_, sa.DateTime):
            return _sqlite_datetime_out
        if isinstance(type_, sa.Boolean):
            return bool
        return None


# ----------------------------------------------------------------------------- drivers


class Driver:
    """Opening, checking and classifying the errors of one database's connections."""

    dialect: Dialect
    begin_sql = "BEGIN"
    unavailable_errors: tuple[type[BaseException], ...] = ()

    async def connect(self) -> Any:
        raise NotImplementedError

    async def ping(self, raw: Any) -> None:
        """Raise if the connection is dead."""

    def is_reusable(self, raw: Any) -> bool:
        """May go back to the pool: open, and not inside a transaction."""
        raise NotImplementedError

    def is_broken(self, raw: Any) -> bool:
        """The connection itself is gone (not just this statement failed)."""
        return False

    def is_duplicate_key(self, error: BaseException) -> bool:
        raise NotImplementedError

    def hint_for(self, error: BaseException) -> str | None:
        """What an operator should do about this error, when we know."""
        return None

    async def close(self, raw: Any) -> None:
        await raw.close()


class PostgresDriver(Driver):
    dialect = PostgresDialect()
    # Connection failures, server shutdown, statement timeouts: all OperationalError subclasses.
    unavailable_errors = (psycopg.OperationalError, OSError, asyncio.TimeoutError)

    def __init__(self, settings: Settings):
        self.conninfo = sa.engine.make_url(settings.database_url).set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        self.settings = settings

    async def connect(self) -> psycopg.AsyncConnection:
        raw = await psycopg.AsyncConnection.connect(
            self.conninfo,
            autocommit=True,  # a read or a one-statement write is one round trip; see Database.transaction
            # Prepared statements save the server's planning on every request. PgBouncer before 1.21
            # (transaction pooling) cannot keep them: DB_PREPARED_STATEMENTS=false there.
            prepare_threshold=0 if self.settings.db_prepared_statements else None,
            connect_timeout=self.settings.db_connect_timeout_seconds,
            application_name="task-api",
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
        psycopg.types.json.set_json_loads(orjson.loads, raw)
        return raw

    async def ping(self, raw: psycopg.AsyncConnection) -> None:
        await raw.execute("SELECT 1")

    def is_reusable(self, raw: psycopg.AsyncConnection) -> bool:
        return not raw.closed and raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE

    def is_broken(self, raw: psycopg.AsyncConnection) -> bool:
        return raw.broken or raw.closed

    def is_duplicate_key(self, error: BaseException) -> bool:
        return isinstance(error, psycopg.errors.UniqueViolation)

    def hint_for(self, error: BaseException) -> str | None:
        lost_statement = (psycopg.errors.InvalidSqlStatementName, psycopg.errors.DuplicatePreparedStatement)
        if isinstance(error, lost_statement) and self.settings.db_prepared_statements:
            return (
                "A prepared statement was lost between two requests on one connection: a pooler in "
                "transaction mode (PgBouncer before 1.21, or without max_prepared_statements) cannot keep "
                "them. Set DB_PREPARED_STATEMENTS=false, or raise the pooler's max_prepared_statements."
            )
        return None


class SqliteDriver(Driver):
    dialect = SqliteDialect()
    # BEGIN IMMEDIATE takes the write lock up front, so two writers queue instead of one failing
    # on a stale snapshot.
    begin_sql = "BEGIN IMMEDIATE"
    # "database is locked" after the busy timeout, an unreadable file.
    unavailable_errors = (sqlite3.OperationalError,)

    def __init__(self, settings: Settings):
        self.path = sa.engine.make_url(settings.database_url).database or ":memory:"

    @property
    def in_memory(self) -> bool:
        return self.path == ":memory:"

    async def connect(self) -> aiosqlite.Connection:
        raw = await aiosqlite.connect(self.path, isolation_level=None, timeout=SQLITE_BUSY_TIMEOUT_SECONDS)
        try:
            await self._configure(raw)
        except BaseException:
            await raw.close()  # and its thread
            raise
        return raw

    @staticmethod
    async def _configure(raw: aiosqlite.Connection) -> None:
        await raw.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)}")  # first: all below may wait
        # Readers do not wait for the writer. Switching needs the database to itself, so only a new
        # file is switched; a connection opened during a burst of writes just reads the mode.
        async with raw.execute("PRAGMA journal_mode") as cursor:
            if (await cursor.fetchone())[0].lower() != "wal":
                await raw.execute("PRAGMA journal_mode=WAL")
        await raw.execute("PRAGMA synchronous=FULL")  # an acknowledged write survives a crash
        await raw.execute("PRAGMA foreign_keys=ON")
        # SQLite's lower() folds ASCII only; searches must find "École" with "école" as PostgreSQL does.
        await raw.create_function("lower", 1, _unicode_lower, deterministic=True)

    def is_reusable(self, raw: aiosqlite.Connection) -> bool:
        return not raw.in_transaction

    def is_duplicate_key(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.IntegrityError) and str(error).startswith("UNIQUE")


def _unicode_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


# ----------------------------------------------------------------------------- pool and connections


class Pool:
    """At most `size` connections, opened when first needed, reused most-recent-first. Waiting for
    one, or opening one, gives up after the configured timeouts (503, not a hang)."""

    def __init__(self, driver: Driver, size: int, wait_timeout: float):
        self.driver = driver
        self.wait_timeout = wait_timeout
        self._slots = asyncio.Semaphore(size)
        self._idle: list[tuple[Any, float]] = []
        self._closing: set[asyncio.Task] = set()  # referenced until done (the loop keeps only weak ones)

    async def acquire(self) -> Any:
        await self._take_slot()
        try:
            return await self._idle_or_new_connection()
        except BaseException:
            self._slots.release()
            raise

    def release(self, raw: Any, *, broken: bool) -> None:
        if broken or not self.driver.is_reusable(raw):
            self._close_in_background(raw)
        else:
            self._idle.append((raw, time.monotonic()))
        self._slots.release()

    def discard_idle(self) -> None:
        """After a connection broke: the others were probably cut at the same time."""
        stale, self._idle = self._idle, []
        for raw, _ in stale:
            self._close_in_background(raw)

    def _close_in_background(self, raw: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._close_quietly(raw))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        stale, self._idle = self._idle, []
        for raw, _ in stale:
            await self._close_quietly(raw)

    async def _take_slot(self) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # returns at once
            return
        try:
            async with asyncio.timeout(self.wait_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise DatabaseUnavailable("no database connection became free in time") from None

    async def _idle_or_new_connection(self) -> Any:
        while self._idle:
            raw, last_used = self._idle.pop()
            if time.monotonic() - last_used < PING_IF_IDLE_SECONDS:
                return raw
            try:
                await self.driver.ping(raw)
                return raw
            except self.driver.unavailable_errors:
                await self._close_quietly(raw)
        try:
            return await self.driver.connect()
        except self.driver.unavailable_errors as error:
            raise DatabaseUnavailable("could not connect to the database") from error

    async def _close_quietly(self, raw: Any) -> None:
        try:
            await self.driver.close(raw)
        except Exception:  # closing a dead connection may fail; it is gone either way
            pass


class Connection:
    """One pooled connection, held inside `async with`. Every method takes a statement built once at import (SQLAlchemy
    Core with bind parameters) and a dict of values; rows come back as dicts."""

    def __init__(self, database: "Database"):
        self.database = database
        self.dialect = database.dialect
        self.raw: Any = None
        self.broken = False

    async def __aenter__(self) -> "Connection":
        self.raw = await self.database.pool.acquire()
        return self

    async def __aexit__(self, *_exc_info: Any) -> None:
        self.database.pool.release(self.raw, broken=self.broken)

    async def fetch_one(self, statement: sa.Executable, params: Params | None = None) -> Row | None:
        compiled = self.database.compiled(statement)
        cursor = await self._execute(compiled.sql, compiled.arguments(params))
        values = await cursor.fetchone()
        return compiled.row(values) if values is not None else None

    async def fetch_all(self, statement: sa.Executable, params: Params | None = None) -> list[Row]:
        compiled = self.database.compiled(statement)
        cursor = await self._execute(compiled.sql, compiled.arguments(params))
        return [compiled.row(values) for values in await cursor.fetchall()]

    async def fetch_value(self, statement: sa.Executable, params: Params | None = None) -> Any:
        compiled = self.database.compiled(statement)
        cursor = await self._execute(compiled.sql, compiled.arguments(params))
        values = await cursor.fetchone()
        return values[0] if values is not None else None

    async def execute(self, statement: sa.Executable, params: Params | None = None) -> int:
        """Run a write; the number of rows it touched."""
        compiled = self.database.compiled(statement)
        cursor = await self._execute(compiled.sql, compiled.arguments(params))
        return cursor.rowcount

    async def execute_sql(self, sql: str) -> None:
        await self._execute(sql, None)

    async def _execute(self, sql: str, arguments: Params | None) -> Any:
        driver = self.database.driver
        try:
            return await self.raw.execute(sql, arguments)
        except driver.unavailable_errors as error:
            if driver.is_broken(self.raw):
                self.broken = True
                self.database.pool.discard_idle()
            raise DatabaseUnavailable("the database did not answer") from error
        except Exception as error:
            if driver.is_duplicate_key(error):
                raise DuplicateKey() from error
            if (hint := driver.hint_for(error)) is not None:
                log.error(hint, extra={"error_type": type(error).__name__})
            raise


class Database:
    """How the store talks to the database. Connections are in autocommit mode: a read or a
    single-statement write costs one round trip. `transaction()` is for several statements that
    commit together (BEGIN ... COMMIT; on SQLite BEGIN IMMEDIATE)."""

    def __init__(self, settings: Settings):
        self.driver: Driver = SqliteDriver(settings) if settings.is_sqlite else PostgresDriver(settings)
        self.dialect = self.driver.dialect.name
        # An in-memory SQLite database exists once per connection, so it gets exactly one.
        self.pool_size = 1 if isinstance(self.driver, SqliteDriver) and self.driver.in_memory else settings.db_pool_size
        self.pool_timeout = settings.db_pool_timeout_seconds
        self.pool = Pool(self.driver, self.pool_size, self.pool_timeout)
        # Keyed by the statement object: statements are built once (module constants or lru_cached
        # builders), so each is compiled once. Bounded, so one built per call would only be slow.
        self.compiled: Callable[[sa.Executable], Compiled] = functools.lru_cache(maxsize=4096)(
            self.driver.dialect.compile
        )

    def connect(self) -> "Connection":
        """`async with db.connect() as connection:` one pooled connection, returned on exit."""
        return Connection(self)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.connect() as connection:
            await connection.execute_sql(self.driver.begin_sql)
            try:
                yield connection
            except BaseException:
                if not connection.broken:
                    try:
                        await connection.execute_sql("ROLLBACK")
                    except Exception:  # best effort: a connection left in a transaction is closed, not reused
                        pass
                raise
            await connection.execute_sql("COMMIT")

    async def is_reachable(self) -> bool:
        try:
            async with self.connect() as connection:
                await connection.execute_sql("SELECT 1")
            return True
        except DatabaseUnavailable:
            return False

    async def open(self) -> None:
        """A fresh pool for this event loop (the app's lifespan; a test may start the app twice)."""
        self.pool = Pool(self.driver, self.pool_size, self.pool_timeout)

    async def close(self) -> None:
        await self.pool.close()


async def get_database(request: Request) -> Database:
    return request.app.state.database


DatabaseDep = Annotated[Database, Depends(get_database)]


def upgrade_schema(database_url: str) -> None:
    """`alembic upgrade head` for the given database, as the canonical start runs it."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(PROJECT_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_DIR / "migrations"))
    config.attributes["database_url"] = database_url
    command.upgrade(config, "head")
