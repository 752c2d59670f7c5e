"""Pools of connections, one kind per database, behind one interface: `open()`, `acquire()`,
`release(raw, broken=...)`, `close()`, and counts for metrics (in use, waiting, open, discarded).

PostgreSQL connections live in psycopg_pool's AsyncConnectionPool (max lifetime, idle shrink,
reconnection with backoff, statistics). Around it: a check at checkout that costs no round trip
(a connection the server closed is readable: it sent a FATAL and hung up), and a fast answer while
the database is down (the pool's own reconnection waits with backoff; a request should not).
SQLite connections live in a small pool of our own.
"""
import asyncio
import sqlite3
import time
import weakref
from typing import Any

import aiosqlite
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from drivers import DatabaseBusy, DatabaseUnavailable, PostgresDriver, SqliteDriver

# How long psycopg_pool keeps retrying (with backoff) to replace a connection before it gives up and
# waits for demand; short, so that after an outage no replacement sleeps long in its backoff.
RECONNECT_TIMEOUT_SECONDS = 5.0
# An idle connection above the pool's minimum is closed after this long (then one more each period).
MAX_IDLE_SECONDS = 300.0
MIN_POOL_SIZE = 1


class Pool:
    """What both pools share: at most `size` connections checked out at once (the slots; a request
    waits at most `checkout_timeout` for one), and what metrics show: connections handed out,
    requests waiting for one, open ones."""

    checkout_timeout: float
    in_use: int = 0
    waiting: int = 0
    # Given back broken (cut mid-statement, timed out, left inside a transaction) and closed instead
    # of reused, since the pool opened.
    discarded: int = 0

    def __init__(self, size: int, checkout_timeout: float):
        self.checkout_timeout = checkout_timeout
        self._slots = asyncio.Semaphore(size)
        self._writers: weakref.WeakValueDictionary[str, asyncio.Semaphore] = weakref.WeakValueDictionary()
        self._writes_per_user = max(1, size // 2)

    async def writer_turn(self, user_id: str) -> asyncio.Semaphore:
        """A turn to write for `user_id` in this process (the acquired semaphore; release it after
        the write): at most half the pool's connections write for one user at once. A burst of one
        user's writes (a script, a bulk import) often waits on the same rows (one task, one list)
        and would hold every connection meanwhile: queueing the rest here, before they take a
        connection, keeps it from starving other users."""
        turn = self._writers.get(user_id)
        if turn is None:
            turn = self._writers[user_id] = asyncio.Semaphore(self._writes_per_user)
        await self._wait_for(turn)
        return turn

    async def _take_slot(self) -> None:
        await self._wait_for(self._slots)

    async def _wait_for(self, primitive: asyncio.Semaphore | asyncio.Lock) -> None:
        if not primitive.locked():
            await primitive.acquire()  # returns at once
            return
        self.waiting += 1
        try:
            async with asyncio.timeout(self.checkout_timeout):
                await primitive.acquire()
        except TimeoutError:
            raise DatabaseBusy("no database connection became free in time") from None
        finally:
            self.waiting -= 1

    def open_connections(self) -> int:
        raise NotImplementedError

    @property
    def max_size(self) -> int:
        raise NotImplementedError


class SqlitePool(Pool):
    """At most `size` connections, opened when first needed, reused most-recent-first."""

    def __init__(self, driver: SqliteDriver, size: int, checkout_timeout: float):
        super().__init__(size, checkout_timeout)
        self.driver = driver
        self.size = size
        self._idle: list[aiosqlite.Connection] = []
        self._closing: set[asyncio.Task] = set()  # referenced until done (the loop keeps only weak ones)

    @property
    def max_size(self) -> int:
        return self.size

    def open_connections(self) -> int:
        return len(self._idle) + self.in_use

    async def open(self) -> None:
        pass

    async def acquire(self) -> aiosqlite.Connection:
        await self._take_slot()
        try:
            raw = self._idle.pop() if self._idle else await self._connect()
        except BaseException:
            self._slots.release()
            raise
        self.in_use += 1
        return raw

    async def acquire_fresh(self) -> aiosqlite.Connection:
        return await self.acquire()  # a SQLite connection is never cut by a server

    async def _connect(self) -> aiosqlite.Connection:
        try:
            return await self.driver.connect(self.checkout_timeout)
        except sqlite3.Error as error:
            if self.driver.is_busy(error):  # its setup waits on another connection's lock
                raise DatabaseBusy("the database stayed locked while opening a connection") from error
            raise DatabaseUnavailable("could not open the database") from error

    async def release(self, raw: aiosqlite.Connection, *, broken: bool) -> None:
        self.in_use -= 1
        if broken or not self.driver.is_idle(raw):
            self.discarded += 1
            self._close_in_background(raw)
        else:
            self._idle.append(raw)
        self._slots.release()

    def _close_in_background(self, raw: aiosqlite.Connection) -> None:
        task = asyncio.get_running_loop().create_task(self.driver.close(raw))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        stale, self._idle = self._idle, []
        for raw in stale:
            await self.driver.close(raw)


class PostgresPool(Pool):
    """psycopg_pool's pool, plus two things it leaves to the caller:

    - At checkout, a connection the server closed (a restart, pg_terminate_backend, Neon's idle
      reaper) is seen by polling its socket, without a round trip, and replaced; however recently
      it was used. (A connection cut between this check and its statement is retried by
      db.Connection.)
    - While the pool's own connection attempts fail, a request that finds no idle connection
      connects by itself instead of queueing behind the pool's backoff: refused at once while the
      database is down (a fast 503), served as soon as it is back.

    Requests queue for one of `size` slots (a semaphore) before they ask psycopg_pool: once the pool
    has grown to `size`, a request holding a slot always finds a connection ready, and never takes
    psycopg_pool's waiting path (a waiter object, a condition and a task per wait: ~60 us of CPU per
    request when 32 requests share 10 connections, in `make bench`).
    """

    def __init__(self, driver: PostgresDriver, size: int, checkout_timeout: float, max_lifetime: float):
        super().__init__(size, checkout_timeout)  # the slots count pooled and direct connections
        self.driver = driver
        self._connects_failing = asyncio.Event()
        self._direct: set[psycopg.AsyncConnection] = set()
        self._background: set[asyncio.Task] = set()
        self._checking = False
        self._opened = False
        self.pool: AsyncConnectionPool = AsyncConnectionPool(
            driver.conninfo,
            connection_class=self._tracking_connection_class(),
            kwargs=driver.connect_kwargs,
            configure=driver.configure,
            min_size=min(MIN_POOL_SIZE, size),
            max_size=size,
            open=False,
            name="task-api",
            timeout=checkout_timeout,
            max_lifetime=max_lifetime,
            max_idle=MAX_IDLE_SECONDS,
            reconnect_timeout=RECONNECT_TIMEOUT_SECONDS,
        )

    @property
    def max_size(self) -> int:
        return self.pool.max_size

    def open_connections(self) -> int:
        return self.pool.get_stats()["pool_size"] + len(self._direct)

    def _tracking_connection_class(self) -> type[psycopg.AsyncConnection]:
        """The pool's connections, with each attempt's outcome noted (the pool reports neither)."""
        failing, driver = self._connects_failing, self.driver

        class PooledConnection(psycopg.AsyncConnection):
            @classmethod
            async def connect(cls, conninfo: str = "", **kwargs: Any) -> "PooledConnection":
                try:
                    try:
                        raw = await super().connect(conninfo, **kwargs)
                    except psycopg.OperationalError as error:
                        if not driver.refused_startup_options(error, kwargs):
                            raise
                        kwargs.pop("options")
                        raw = await super().connect(conninfo, **kwargs)
                except BaseException:
                    failing.set()
                    raise
                failing.clear()
                return raw

        return PooledConnection

    async def open(self) -> None:
        if not self._opened:
            self._opened = True
            await self.pool.open(wait=False)  # the service starts while the database is down

    async def close(self) -> None:
        await self.pool.close(timeout=1.0)

    async def acquire(self) -> psycopg.AsyncConnection:
        if not self._opened:
            await self.open()
        deadline = time.monotonic() + self.checkout_timeout
        await self._take_slot()
        try:
            raw = await self._checkout(deadline)
        except BaseException:
            self._slots.release()
            raise
        self.in_use += 1
        return raw

    async def _checkout(self, deadline: float) -> psycopg.AsyncConnection:
        """A pooled connection the server has not closed, or a direct one while connects fail."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DatabaseBusy("no database connection became free in time")
            if self.pool.get_stats()["pool_available"]:
                raw = await self._getconn(remaining)  # at once
            elif self._connects_failing.is_set():
                return await self._connect_directly(remaining)
            else:
                raw = await self._wait_for_pooled(remaining)
                if raw is None:  # the pool's attempts started failing while we waited
                    continue
            if self.driver.server_closed(raw):
                await self._discard(raw)
                continue
            return raw

    async def acquire_fresh(self) -> psycopg.AsyncConnection:
        """A newly opened connection, for the retry after a cut: the idle ones were likely cut at the
        same moment, and their goodbye may not have arrived yet. (The pool then checks its idle ones.)"""
        await self._take_slot()
        try:
            raw = await self._connect_directly(self.checkout_timeout)
        except BaseException:
            self._slots.release()
            raise
        self.in_use += 1
        return raw

    async def release(self, raw: psycopg.AsyncConnection, *, broken: bool) -> None:
        self.in_use -= 1
        try:
            if raw in self._direct:
                self._direct.discard(raw)
                await self.driver.close(raw)
            elif broken or not self.driver.is_idle(raw):
                self.discarded += 1
                await self._discard(raw)  # never rolled back by the pool: that would wait on the server
            else:
                await self.pool.putconn(raw)
        finally:
            self._slots.release()

    async def _discard(self, raw: psycopg.AsyncConnection) -> None:
        """Close it (no round trip: a hanging server is not waited for); the pool opens a replacement."""
        await self.driver.close(raw)
        try:
            await self.pool.putconn(raw)
        except (PoolClosed, ValueError):
            pass

    async def _getconn(self, timeout: float) -> psycopg.AsyncConnection:
        try:
            return await self.pool.getconn(timeout)
        except PoolTimeout as error:
            raise DatabaseBusy("no database connection became free in time") from error
        except PoolClosed as error:  # the service is stopping
            raise DatabaseUnavailable("the connection pool is closed") from error

    async def _wait_for_pooled(self, timeout: float) -> psycopg.AsyncConnection | None:
        """The pool's next free connection; or None as soon as the pool fails to open one (the
        database is likely down: the caller then tries directly instead of sitting out the timeout)."""
        self.waiting += 1
        getting = asyncio.ensure_future(self._getconn(timeout))
        failing = asyncio.ensure_future(self._connects_failing.wait())
        try:
            await asyncio.wait((getting, failing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.waiting -= 1
            failing.cancel()
            if not getting.done():
                getting.cancel()
                getting.add_done_callback(self._return_if_served)
        if not getting.done() or getting.cancelled():
            return None
        return getting.result()

    def _return_if_served(self, getting: asyncio.Future) -> None:
        """A connection handed over just as we stopped waiting for it goes back to the pool."""
        if not getting.cancelled() and getting.exception() is None:
            self._in_background(self.pool.putconn(getting.result()))

    async def _connect_directly(self, timeout: float) -> psycopg.AsyncConnection:
        """A connection of our own, outside the pool (the caller holds a slot)."""
        try:
            async with asyncio.timeout(max(timeout, 0.05)):
                raw = await self.driver.connect(timeout)
        except (psycopg.OperationalError, OSError, TimeoutError) as error:
            raise DatabaseUnavailable("could not connect to the database") from error
        self._direct.add(raw)
        if not self._checking:  # drop idle connections that are dead, grow now rather than after a backoff
            self._checking = True
            self._in_background(self._check_pool())
        return raw

    async def _check_pool(self) -> None:
        try:
            await self.pool.check()
        finally:
            self._checking = False

    def _in_background(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
