"""The database: statements that SQLAlchemy Core builds once and compiles once per dialect, run on
the driver directly over pooled async connections (pools.py), each with a deadline.

Handlers are `async def` and await the driver (psycopg 3 on PostgreSQL, aiosqlite on SQLite): no
thread hop per request, and no SQLAlchemy execution/result layer, which cost more CPU than the
query itself (README.md, "Speed"). Rows come back as plain dicts.
"""
import asyncio
import functools
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

import orjson
import sqlalchemy as sa
from fastapi import Request
from sqlalchemy.dialects.postgresql import psycopg as postgresql_psycopg
from sqlalchemy.dialects.sqlite import pysqlite

from config import Settings
from drivers import DatabaseBusy, DatabaseUnavailable, Driver, PostgresDriver, SchemaMismatch, SqliteDriver, WriteConflict
from pools import PostgresPool, SqlitePool

__all__ = [
    "Connection", "Database", "database_of", "DatabaseBusy", "DatabaseUnavailable", "DuplicateKey", "SchemaMismatch",
    "upgrade_schema", "WriteConflict",
]

log = logging.getLogger("task_api.db")

PROJECT_DIR = Path(__file__).resolve().parent

Row = dict[str, Any]
Params = dict[str, Any]


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
    is_read: bool  # a SELECT: safe to run again on a fresh connection
    # PostgreSQL: the names of $1, $2... in order. The values go as a tuple and the SQL is sent as
    # is (psycopg's raw cursor), so the driver never parses the SQL for placeholders (it cached
    # that only for short statements: the writes with their events paid ~60 us a call).
    positions: tuple[str, ...] | None = None
    prepare: bool = True  # False: planned on every call with its values (statement.execution_options(prepare=False))

    def arguments(self, params: Params | None) -> Params | tuple[Any, ...]:
        arguments = {**self.defaults, **params} if params else dict(self.defaults)
        for name, convert in self.to_driver:
            value = arguments.get(name)
            if value is not None:
                arguments[name] = convert(value)
        if self.positions is not None:
            return tuple([arguments[name] for name in self.positions])
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
        positions = tuple(compiled.positiontup) if compiled.positional else None
        binds = {name: bind for name, bind in compiled.binds.items() if positions or name.isidentifier()}
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
        # A SELECT over data-modifying CTEs (events.with_event) writes: never run it twice.
        writes_in_ctes = any(isinstance(cte.element, sa.sql.dml.UpdateBase) for cte in compiled.ctes or ())
        is_read = bool(getattr(statement, "is_select", False)) and not writes_in_ctes
        prepare = statement.get_execution_options().get("prepare", True)
        return Compiled(compiled.string, defaults, to_driver, columns, from_driver, is_read, positions, prepare)


def _base(type_: sa.types.TypeEngine) -> sa.types.TypeEngine:
    """models.UTCDateTime is a TypeDecorator: it crosses the boundary as the DateTime it wraps."""
    return type_.impl if isinstance(type_, sa.TypeDecorator) else type_


class PostgresDialect(Dialect):
    name = "postgresql"
    sqlalchemy_dialect = postgresql_psycopg.dialect(paramstyle="numeric_dollar")  # run by a raw cursor: Compiled.positions

    def to_driver(self, type_):
        return _dumps_json if isinstance(type_, sa.JSON) else None  # sent as text, cast to JSON in the SQL

    def from_driver(self, type_):
        # Nothing: timestamptz arrives in the session's time zone, set to UTC at connect
        # (drivers.PostgresDriver.configure); JSON is parsed by psycopg.
        return None


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


class Connection:
    """One pooled connection, held inside `async with`. Every method takes a statement built once at import (SQLAlchemy
    Core with bind parameters) and a dict of values; rows come back as dicts.

    Every statement has a deadline (DB_STATEMENT_TIMEOUT_SECONDS): past it the driver cuts the
    statement off (Driver.cut), the request gets 503, and the connection is discarded.

    A statement that finds its connection closed by the server is run once more on a fresh
    connection, outside a transaction only, when that is safe: a read always; a write only when
    the error proves it was not applied (Driver.write_was_not_applied: on PostgreSQL, the server's
    own "terminating connection" message). Any other broken write is a 503, never a silent retry:
    it may have been applied (the client retries with If-Match or Idempotency-Key).
    """

    def __init__(self, database: "Database", writer: str | None = None):
        self.database = database
        self.dialect = database.dialect
        self.writer = writer
        self.raw: Any = None
        self.broken = False
        self._timed_out = False
        self._writer_turn: asyncio.Semaphore | None = None

    async def __aenter__(self) -> "Connection":
        self.pool = self.database.pool
        if self.writer is not None:
            self._writer_turn = await self.pool.writer_turn(self.writer)
        try:
            self.raw = await self.pool.acquire()
        except BaseException:
            self._end_writer_turn()
            raise
        return self

    async def __aexit__(self, *_exc_info: Any) -> None:
        try:
            if self.raw is not None:
                raw, self.raw = self.raw, None
                await self.pool.release(raw, broken=self.broken)
        finally:
            self._end_writer_turn()

    def _end_writer_turn(self) -> None:
        if self._writer_turn is not None:
            turn, self._writer_turn = self._writer_turn, None
            turn.release()

    async def fetch_one(self, statement: sa.Executable, params: Params | None = None) -> Row | None:
        compiled = self.database.compiled(statement)
        values = await self._execute(compiled.sql, compiled.arguments(params), _fetch_one, compiled.is_read, compiled.prepare)
        return compiled.row(values) if values is not None else None

    async def fetch_all(self, statement: sa.Executable, params: Params | None = None) -> list[Row]:
        compiled = self.database.compiled(statement)
        rows = await self._execute(compiled.sql, compiled.arguments(params), _fetch_all, compiled.is_read, compiled.prepare)
        return [compiled.row(values) for values in rows]

    async def fetch_value(self, statement: sa.Executable, params: Params | None = None) -> Any:
        compiled = self.database.compiled(statement)
        values = await self._execute(compiled.sql, compiled.arguments(params), _fetch_one, compiled.is_read, compiled.prepare)
        return values[0] if values is not None else None

    async def execute(self, statement: sa.Executable, params: Params | None = None) -> int:
        """Run a write; the number of rows it touched."""
        compiled = self.database.compiled(statement)
        return await self._execute(compiled.sql, compiled.arguments(params), _row_count, compiled.is_read)

    @asynccontextmanager
    async def atomic(self, stopping_writes: bool = False) -> AsyncIterator[None]:
        """The statements inside commit together: in the transaction this connection is in, else
        in one of their own (BEGIN ... COMMIT; ROLLBACK if the block fails). `stopping_writes`: a
        membership change, which waits for the writes in flight and holds new ones back (access.py)."""
        if not self.database.driver.is_idle(self.raw):
            yield
            return
        driver = self.database.driver
        await self.execute_sql(driver.begin_stopping_writes_sql if stopping_writes else driver.begin_sql)
        try:
            yield
        except BaseException:
            if not self.broken:
                try:
                    await self.execute_sql("ROLLBACK")
                except Exception:  # best effort: a connection left in a transaction is closed, not reused
                    pass
            raise
        await self.execute_sql("COMMIT")

    async def execute_sql(self, sql: str) -> None:
        """Plain SQL without values (BEGIN, COMMIT...). BEGIN and SELECT may be retried; others not."""
        retry_safe = sql.split(None, 1)[0].rstrip(";").upper() in ("BEGIN", "SELECT")
        await self._execute(sql, None, None, retry_safe)

    async def _execute(self, sql: str, arguments: Any, fetch: "Fetch | None", is_read: bool, prepare: bool = True) -> Any:
        driver = self.database.driver
        was_idle = driver.is_idle(self.raw)
        try:
            return await self._run(sql, arguments, fetch, prepare)
        except _ConnectionLost as lost:
            if not (was_idle and (is_read or driver.write_was_not_applied(lost.error))):
                raise DatabaseUnavailable("the database connection broke") from lost.error
            await self._replace_connection()
            try:
                return await self._run(sql, arguments, fetch, prepare)
            except _ConnectionLost as again:
                raise DatabaseUnavailable("the database connection broke twice") from again.error
        except WriteConflict as conflict:
            if not was_idle:  # the transaction's earlier statements were undone too: not ours to redo
                raise
            # A statement on its own was undone whole: running it once more is safe (a second
            # conflict is the client's 503).
            cause = type(conflict.__cause__).__name__
            log.warning("statement undone by the database, running it again", extra={"error_type": cause})
            try:
                return await self._run(sql, arguments, fetch, prepare)
            except _ConnectionLost as lost:
                raise DatabaseUnavailable("the database connection broke") from lost.error

    async def _run(self, sql: str, arguments: Any, fetch: "Fetch | None", prepare: bool = True) -> Any:
        driver = self.database.driver
        raw = self.raw
        deadline = asyncio.get_running_loop().call_later(driver.statement_timeout, self._cut, raw)
        try:
            cursor = await driver.execute(raw, sql, arguments, prepare) if arguments is not None else await self._execute_plain(sql)
            result = await fetch(cursor) if fetch is not None else None
        except asyncio.CancelledError:
            # Cancelled mid-statement (a live stream's client went away): the driver may still run
            # it (aiosqlite's thread does; a late BEGIN would leave the pooled connection inside a
            # transaction, where the next request's writes would never commit). Never reused.
            self.broken = True
            raise
        except Exception as error:
            self._classify(error)
        finally:
            deadline.cancel()
        if self._timed_out:  # answered just as the deadline passed: the connection is cut all the same
            self.broken = True
        return result

    async def _execute_plain(self, sql: str) -> Any:
        if self.database.dialect == "postgresql":
            return await self.raw.execute(sql, prepare=False)  # may hold several statements (BEGIN; SET LOCAL ...)
        return await self.raw.execute(sql)

    def _cut(self, raw: Any) -> None:
        self._timed_out = True
        self.database.driver.cut(raw)

    def _classify(self, error: Exception) -> NoReturn:
        driver = self.database.driver
        if self._timed_out:
            self.broken = True
            raise DatabaseUnavailable(
                f"the database did not answer within {driver.statement_timeout:g} s (DB_STATEMENT_TIMEOUT_SECONDS)"
            ) from error
        if driver.is_broken(self.raw):
            self.broken = True
            raise _ConnectionLost(error)
        if driver.is_write_conflict(error):
            raise WriteConflict("the database undid a write that collided with another") from error
        if driver.is_unavailable(error):
            self.broken = True  # a server-side timeout, a lock wait: this connection is not reused
            if driver.is_busy(error):
                raise DatabaseBusy("the server stopped the statement at its deadline") from error
            raise DatabaseUnavailable("the database did not answer") from error
        if driver.is_duplicate_key(error):
            raise DuplicateKey() from error
        if driver.is_schema_mismatch(error):
            raise SchemaMismatch(str(error).splitlines()[0]) from error  # the missing name, not the SQL
        if (hint := driver.hint_for(error)) is not None:
            log.error(hint, extra={"error_type": type(error).__name__})
        raise error

    async def _replace_connection(self) -> None:
        raw, self.raw = self.raw, None
        await self.pool.release(raw, broken=True)
        self.broken = False
        self.raw = await self.pool.acquire_fresh()


class _ConnectionLost(Exception):
    """The connection broke under a statement (inside Connection only)."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


Fetch = Callable[[Any], Awaitable[Any]]


async def _fetch_one(cursor: Any) -> Any:
    return await cursor.fetchone()


async def _fetch_all(cursor: Any) -> Any:
    return await cursor.fetchall()


async def _row_count(cursor: Any) -> int:
    return cursor.rowcount


DIALECTS: dict[str, Dialect] = {"postgresql": PostgresDialect(), "sqlite": SqliteDialect()}


class Database:
    """How the store talks to the database. Connections are in autocommit mode: a read or a
    single-statement write costs one round trip. `transaction()` is for several statements that
    commit together (BEGIN ... COMMIT; on SQLite BEGIN IMMEDIATE); the deadline applies to each."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.driver: Driver = SqliteDriver(settings) if settings.is_sqlite else PostgresDriver(settings)
        self.dialect = self.driver.name
        # An in-memory SQLite database exists once per connection, so it gets exactly one.
        self.pool_size = 1 if isinstance(self.driver, SqliteDriver) and self.driver.in_memory else settings.db_pool_size
        # A checkout waits at most DB_POOL_TIMEOUT_SECONDS, and never past the statement deadline.
        self.checkout_timeout = min(settings.db_pool_timeout_seconds, settings.db_statement_timeout_seconds)
        # One pool per event loop: its connections and waits belong to the loop (a test may run the
        # app in several loops at once). In the service there is one loop per worker, so one pool.
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SqlitePool | PostgresPool] = (
            weakref.WeakKeyDictionary()
        )
        self._last_pool: tuple[Any, Any] = (None, None)  # (weakref to a loop, its pool): skips the lookup
        # Keyed by the statement object: statements are built once (module constants or lru_cached
        # builders), so each is compiled once. Bounded, so one built per call would only be slow.
        self.compiled: Callable[[sa.Executable], Compiled] = functools.lru_cache(maxsize=4096)(
            DIALECTS[self.dialect].compile
        )

    def _new_pool(self) -> "SqlitePool | PostgresPool":
        if isinstance(self.driver, PostgresDriver):
            return PostgresPool(
                self.driver, self.pool_size, self.checkout_timeout, self.settings.db_pool_max_lifetime_seconds
            )
        return SqlitePool(self.driver, self.pool_size, self.checkout_timeout)

    @property
    def pool(self) -> "SqlitePool | PostgresPool":
        """This event loop's pool (made on first use; `open()` makes it at start)."""
        loop = asyncio.get_running_loop()
        last_loop, pool = self._last_pool
        if last_loop is not None and last_loop() is loop:
            return pool
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = self._new_pool()
        self._last_pool = (weakref.ref(loop), pool)
        return pool

    def connect(self, writer: str | None = None) -> "Connection":
        """`async with db.connect() as connection:` one pooled connection, returned on exit.
        `writer`: the user whose tasks or lists this connection writes (with their events): it
        waits for this process's other writes of that user first (pools.Pool.writer_turn)."""
        return Connection(self, writer)

    @asynccontextmanager
    async def transaction(self, writer: str | None = None, *, stopping_writes: bool = False) -> AsyncIterator[Connection]:
        async with self.connect(writer) as connection, connection.atomic(stopping_writes):
            yield connection

    async def open(self) -> None:
        """This event loop's pool, opened now (the app's lifespan): PostgreSQL starts connecting in
        the background, and the service starts even while the database is down."""
        await self.pool.open()

    async def close(self) -> None:
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        self._last_pool = (None, None)
        if pool is not None:
            await pool.close()


def database_of(request: Request) -> Database:
    """The app's database. Routes take it from their request rather than as a FastAPI dependency:
    solving one more dependency cost a get one 16 us of its 268 (bench/inprocess.py)."""
    return request.app.state.database


def upgrade_schema(database_url: str) -> None:
    """`alembic upgrade head` for the given database, as the canonical start runs it."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(PROJECT_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_DIR / "migrations"))
    config.attributes["database_url"] = database_url
    command.upgrade(config, "head")
