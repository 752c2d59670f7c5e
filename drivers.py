"""Drivers: how each database's connections are opened, checked, cut off when they hang, and how
their errors are told apart (the database is unavailable / the statement was refused / a
duplicate key)."""
import asyncio
import logging
import os
import select
import socket
import sqlite3
from typing import Any

import aiosqlite
import orjson
import psycopg
import psycopg.pq
import psycopg.adapt
import sqlalchemy as sa

from config import Settings

log = logging.getLogger("task_api.db")

# PostgreSQL's own statement_timeout and lock_timeout are this share of DB_STATEMENT_TIMEOUT_SECONDS:
# when the server can answer, it cancels the statement itself a moment before the client gives up,
# so a write cut off by a lock wait is known not to be applied.
SERVER_SIDE_SHARE = 0.9
# SQLite's primary result codes that mean the database cannot be used right now (503), as opposed
# to a statement it refuses (a bug or an input that should have been a 422: 500).
SQLITE_UNAVAILABLE_CODES = {
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_NOMEM,
    sqlite3.SQLITE_INTERRUPT,  # our deadline (Driver.cut)
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_READONLY,
}


class DatabaseUnavailable(Exception):
    """The database cannot be reached or does not answer in time: connecting failed, the connection
    broke, a statement or lock wait passed its deadline, or no pooled connection became free in
    time. The API answers 503 with Retry-After."""

    # What the client is told (errors.database_unavailable): the default says "unreachable".
    public_detail: str | None = None
    log_message = "database unavailable"


class DatabaseBusy(DatabaseUnavailable):
    """The database answers, but not this request within its deadline: no pooled connection became
    free, a lock stayed held (a row another write holds; on SQLite, the one writer's lock), or the
    server cancelled the statement at its own timeout."""

    public_detail = (
        "The database is busy: this request was not served within the deadline (every database session in "
        "use, data locked by another request, or a statement stopped at its timeout). Retry after the number "
        "of seconds in Retry-After."
    )
    log_message = "database busy"


class WriteConflict(DatabaseUnavailable):
    """The database undid a write because it collided with a concurrent one (a deadlock, or a
    serialization failure): nothing of it was applied. Transient, like an outage: 503 with
    Retry-After, but the client is told what happened."""

    public_detail = (
        "This write collided with a concurrent write of the same tasks, and the database undid it: nothing "
        "changed. Retry it."
    )
    log_message = "write undone by the database"


class SchemaMismatch(DatabaseUnavailable):
    """A statement named a table or column the database does not have: its schema is not the one
    this code was written for (a migration has not run, or an older version of the service runs on
    an upgraded database; schema_version.py tells which). 503, not 500: the request is fine, and
    the service works once the schema and the code are in step."""

    public_detail = (
        "The database schema does not match this version of the service. An operator must run `alembic "
        "upgrade head` (GET /health/ready names the revision found and the one expected)."
    )
    log_message = "database schema out of step with the code"


class Driver:
    """Opening, checking, cutting and classifying the errors of one database's connections."""

    name: str
    begin_sql = "BEGIN"
    begin_stopping_writes_sql = "BEGIN"

    def __init__(self, settings: Settings):
        self.statement_timeout = settings.db_statement_timeout_seconds
        self.server_side_ms = max(1, int(settings.db_statement_timeout_seconds * SERVER_SIDE_SHARE * 1000))

    async def connect(self, timeout: float) -> Any:
        raise NotImplementedError

    async def execute(self, raw: Any, sql: str, arguments: Any, prepare: bool = True) -> Any:
        """Run one compiled statement with its values (db.Compiled.arguments); the cursor. `prepare`
        False (PostgreSQL): never prepared, planned for these values (db.Compiled.prepare)."""
        return await raw.execute(sql, arguments)

    def is_idle(self, raw: Any) -> bool:
        """Open and outside a transaction (may go back to the pool, or a statement may be retried)."""
        raise NotImplementedError

    def is_broken(self, raw: Any) -> bool:
        """The connection itself is gone (not just this statement failed)."""
        return False

    def server_closed(self, raw: Any) -> bool:
        """Seen without a round trip: the server hung up on this idle connection."""
        return False

    def cut(self, raw: Any) -> None:
        """Make the statement running on `raw` fail now, without waiting for the server."""
        raise NotImplementedError

    def is_unavailable(self, error: BaseException) -> bool:
        raise NotImplementedError

    def is_busy(self, error: BaseException) -> bool:
        """Of the unavailable: the server gave up on the statement at its own deadline (a lock wait,
        a timeout): it answers, but not in time."""
        return False

    def write_was_not_applied(self, error: BaseException) -> bool:
        """The connection broke in a way that proves the statement running on it was not applied."""
        return False

    def is_write_conflict(self, error: BaseException) -> bool:
        """The database rolled the statement's transaction back over a collision with another one."""
        return False

    def is_duplicate_key(self, error: BaseException) -> bool:
        raise NotImplementedError

    def is_schema_mismatch(self, error: BaseException) -> bool:
        """The statement names a table or column the database lacks."""
        return False

    def hint_for(self, error: BaseException) -> str | None:
        """What an operator should do about this error, when we know."""
        return None

    async def close(self, raw: Any) -> None:
        try:
            await raw.close()
        except Exception:  # closing a dead connection may fail; it is gone either way
            pass


class JsonLoader(psycopg.adapt.Loader):
    """json and jsonb values (text format) parsed by orjson straight from the driver's buffer: one
    C call per value. psycopg's own loader adds a Python call and a copy to bytes for each (every
    task has two, its tags and reminders, three with a recurrence: 1,000 on a 500-task page)."""

    load = staticmethod(orjson.loads)  # type: ignore[assignment]


class PostgresDriver(Driver):
    name = "postgresql"

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.conninfo = sa.engine.make_url(settings.database_url).set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        self.settings = settings
        # The server-side deadline inside a transaction, in BEGIN's own round trip: startup options
        # (below) do not pass through PgBouncer, SET LOCAL does (it ends with the transaction). The
        # lock on `event` orders writes and membership changes (access.py): every write holds ROW
        # EXCLUSIVE, taken before it reads anything, until it commits; a membership change holds SHARE
        # ROW EXCLUSIVE, which waits for those and holds new ones back (and another such change).
        # Neither costs a round trip.
        begin = f"BEGIN; SET LOCAL statement_timeout = {self.server_side_ms}; SET LOCAL lock_timeout = {self.server_side_ms}; "
        self.begin_sql = begin + "LOCK TABLE event IN ROW EXCLUSIVE MODE"
        self.begin_stopping_writes_sql = begin + "LOCK TABLE event IN SHARE ROW EXCLUSIVE MODE"
        # The planner as for a service on SSD storage (Neon's included) with its data in memory:
        # random_page_cost 1.1 (the default 4 is for spinning disks: with it, a page of a 10,000-task
        # list matching a common word read every match and sorted them, where walking the list's
        # index in order stops after 101); no JIT (it compiled any statement it took for costly: 130 ms
        # of compiling for a 100 ms deep page; a request's statements are short).
        self.startup_options: str | None = (
            f"-c statement_timeout={self.server_side_ms} -c lock_timeout={self.server_side_ms}"
            " -c random_page_cost=1.1 -c jit=off"
        )

    def connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "autocommit": True,  # a read or a one-statement write is one round trip; see Database.transaction
            # Prepared statements save the server's planning on every request. PgBouncer before 1.21
            # (transaction pooling) cannot keep them: DB_PREPARED_STATEMENTS=false there.
            "prepare_threshold": 0 if self.settings.db_prepared_statements else None,
            "connect_timeout": self.settings.db_connect_timeout_seconds,
            "application_name": "task-api",
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }
        if self.startup_options:
            kwargs["options"] = self.startup_options
        return kwargs

    def refused_startup_options(self, error: BaseException, kwargs: dict[str, Any]) -> bool:
        """A pooler that refuses the `options` startup parameter: connect without it from now on
        (the client-side deadline still holds; SET LOCAL still bounds transactions)."""
        if "options" in kwargs and "unsupported startup parameter" in str(error):
            log.warning("the server refused startup options; statement_timeout is enforced by the client only")
            self.startup_options = None
            return True
        return False

    @staticmethod
    async def configure(raw: psycopg.AsyncConnection) -> None:
        for json_type in ("json", "jsonb"):
            raw.adapters.register_loader(json_type, JsonLoader)
        # Timestamps come back in UTC, so they need no conversion per value (db.PostgresDialect);
        # PgBouncer keeps a client's TimeZone across the server connections it lends it.
        await raw.execute("SET TIME ZONE 'UTC'")

    async def connect(self, timeout: float) -> psycopg.AsyncConnection:
        kwargs = self.connect_kwargs()
        kwargs["connect_timeout"] = max(1, min(kwargs["connect_timeout"], round(timeout)))
        try:
            raw = await psycopg.AsyncConnection.connect(self.conninfo, **kwargs)
        except psycopg.OperationalError as error:
            if not self.refused_startup_options(error, kwargs):
                raise
            raw = await psycopg.AsyncConnection.connect(self.conninfo, **self.connect_kwargs())
        await self.configure(raw)
        return raw

    async def execute(
        self, raw: psycopg.AsyncConnection, sql: str, arguments: tuple[Any, ...], prepare: bool = True
    ) -> psycopg.AsyncRawCursor:
        """`$1`-style SQL with its values in order (db.Compiled.positions): not parsed by psycopg."""
        return await psycopg.AsyncRawCursor(raw).execute(sql, arguments, prepare=None if prepare else False)

    def is_idle(self, raw: psycopg.AsyncConnection) -> bool:
        return raw.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE and not raw.closed

    def is_broken(self, raw: psycopg.AsyncConnection) -> bool:
        return raw.broken or raw.closed

    def server_closed(self, raw: psycopg.AsyncConnection) -> bool:
        if raw.closed or raw.broken:
            return True
        try:
            readable, _, _ = select.select([raw.pgconn.socket], [], [], 0)
        except (OSError, ValueError, psycopg.OperationalError):
            return True
        return bool(readable)  # an idle connection gets nothing unasked: this is a FATAL and EOF

    def cut(self, raw: psycopg.AsyncConnection) -> None:
        """Shut the socket down under libpq: the read it waits on sees EOF and fails at once. A
        cancel request would wait for a server that may be frozen; closing the descriptor would
        race with the event loop's registration of it. The descriptor itself is closed later."""
        try:
            with socket.socket(fileno=os.dup(raw.pgconn.socket)) as duplicate:
                duplicate.shutdown(socket.SHUT_RDWR)
        except (OSError, psycopg.OperationalError):
            pass

    def is_unavailable(self, error: BaseException) -> bool:
        # Connection failures, server shutdown, statement and lock timeouts: all OperationalError.
        return isinstance(error, (psycopg.OperationalError, OSError))

    def is_busy(self, error: BaseException) -> bool:
        # 55P03 (lock_timeout), 57014 (statement_timeout: the server's, set a moment before ours)
        return isinstance(error, (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled))

    def is_write_conflict(self, error: BaseException) -> bool:
        """SQLSTATE 40P01 (deadlock_detected: two writes waiting on each other's rows, such as a
        cascade completion and a move of the same subtree) and 40001 (serialization_failure). Both
        roll back the whole transaction. Other errors of class 40 are not conflicts (40003:
        statement completion unknown)."""
        return isinstance(error, (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure))

    def write_was_not_applied(self, error: BaseException) -> bool:
        """SQLSTATE 57P01 (admin_shutdown: pg_terminate_backend, a fast shutdown, an idle reaper)
        arrives when the backend acts on SIGTERM. It does so between commands, or by aborting the
        command it runs; never between a commit and its acknowledgement (a commit holds interrupts
        off, and the reply is sent before the backend looks at the signal again). So the statement
        that got it was not applied, and running it again on a fresh connection is safe. A plain
        "connection closed" (a crash, a network cut) proves nothing: that write is not retried."""
        return isinstance(error, psycopg.errors.AdminShutdown)

    def is_duplicate_key(self, error: BaseException) -> bool:
        return isinstance(error, psycopg.errors.UniqueViolation)

    def is_schema_mismatch(self, error: BaseException) -> bool:
        return isinstance(error, (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn))

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
    name = "sqlite"
    # BEGIN IMMEDIATE takes the write lock up front, so two writers queue instead of one failing
    # on a stale snapshot.
    begin_sql = begin_stopping_writes_sql = "BEGIN IMMEDIATE"  # one writer at a time

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.path = sa.engine.make_url(settings.database_url).database or ":memory:"

    @property
    def in_memory(self) -> bool:
        return self.path == ":memory:"

    async def connect(self, timeout: float) -> aiosqlite.Connection:
        raw = await aiosqlite.connect(self.path, isolation_level=None, timeout=self.server_side_ms / 1000)
        try:
            await self._configure(raw)
        except BaseException:
            await raw.close()  # and its thread
            raise
        return raw

    async def _configure(self, raw: aiosqlite.Connection) -> None:
        await raw.execute(f"PRAGMA busy_timeout={self.server_side_ms}")  # first: all below may wait
        # Readers do not wait for the writer. Switching needs the database to itself, so only a new
        # file is switched; a connection opened during a burst of writes just reads the mode.
        async with raw.execute("PRAGMA journal_mode") as cursor:
            if (await cursor.fetchone())[0].lower() != "wal":
                await raw.execute("PRAGMA journal_mode=WAL")
        await raw.execute("PRAGMA synchronous=FULL")  # an acknowledged write survives a crash
        await raw.execute("PRAGMA foreign_keys=ON")
        # SQLite's lower() folds ASCII only; searches must find "École" with "école" as PostgreSQL does.
        await raw.create_function("lower", 1, _unicode_lower, deterministic=True)

    def is_idle(self, raw: aiosqlite.Connection) -> bool:
        return not raw.in_transaction

    def cut(self, raw: aiosqlite.Connection) -> None:
        # sqlite3's interrupt() may be called from any thread; the statement fails with SQLITE_INTERRUPT.
        asyncio.ensure_future(raw.interrupt())

    def is_unavailable(self, error: BaseException) -> bool:
        """Only real unavailability: locked past the busy timeout, cannot open, disk I/O, disk full.
        "too many SQL variables", "string or blob too big" and the like are refusals of a statement."""
        code = getattr(error, "sqlite_errorcode", None)
        return isinstance(error, sqlite3.Error) and code is not None and (code & 0xFF) in SQLITE_UNAVAILABLE_CODES

    def is_busy(self, error: BaseException) -> bool:
        code = getattr(error, "sqlite_errorcode", None)
        busy = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)  # another connection's lock, past the busy timeout
        return isinstance(error, sqlite3.Error) and code is not None and (code & 0xFF) in busy

    def is_duplicate_key(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.IntegrityError) and str(error).startswith("UNIQUE")

    def is_schema_mismatch(self, error: BaseException) -> bool:
        message = str(error)
        return isinstance(error, sqlite3.OperationalError) and (
            message.startswith(("no such table", "no such column")) or " has no column named " in message
        )


def _unicode_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


