"""The database layer under the routes (db.py): pool limits, transactions that fail or are
cancelled, and values that cross the driver boundary intact. On SQLite and PostgreSQL."""
import asyncio
import logging
import time
from datetime import datetime, timezone

import psycopg
import pytest
import sqlalchemy as sa

import errors
import queries
import store
from conftest import make_settings
from db import Database, DatabaseBusy, DatabaseUnavailable, WriteConflict
from etags import Precondition
from task_sql import task_table


def run_with_database(database_url: str, scenario, **settings) -> object:
    """Run `scenario(database)` on a fresh Database (its own pool) in a fresh event loop."""

    async def main():
        database = Database(make_settings(database_url, **settings))
        await database.open()
        try:
            return await scenario(database)
        finally:
            await database.close()

    return asyncio.run(main())


def test_a_full_pool_answers_unavailable_after_the_timeout_instead_of_hanging(database_url):
    async def scenario(database: Database):
        async with database.connect():
            started = asyncio.get_running_loop().time()
            with pytest.raises(DatabaseBusy):
                async with database.connect():
                    pass
            return asyncio.get_running_loop().time() - started

    waited = run_with_database(database_url, scenario, db_pool_size=1, db_pool_timeout_seconds=0.2)
    assert 0.15 <= waited < 2, waited


async def _tasks(database: Database, user_id: str) -> list[dict]:
    return (await queries.list_tasks(database, queries.TaskFilter(user_id), "created_at", True, 100, 0)).tasks


async def _titles(database: Database, user_id: str) -> list[str]:
    return [task["title"] for task in await _tasks(database, user_id)]


def test_a_failed_transaction_writes_nothing_and_its_connection_serves_the_next_request(database_url):
    async def scenario(database: Database):
        with pytest.raises(RuntimeError):
            async with database.transaction() as connection:
                await store.insert_task(connection, "db_rollback_user", {"title": "never", "tags": ["x"]})
                raise RuntimeError("the handler failed after the insert")
        await store.create_task(database, "db_rollback_user", {"title": "kept", "tags": ["x"]})
        return await _titles(database, "db_rollback_user")

    assert run_with_database(database_url, scenario, db_pool_size=1) == ["kept"]


def test_a_cancelled_transaction_is_rolled_back_and_its_connection_is_not_reused_mid_transaction(database_url):
    async def scenario(database: Database):
        inserted = asyncio.Event()

        async def slow_write():
            async with database.transaction() as connection:
                await store.insert_task(connection, "db_cancel_user", {"title": "cancelled", "tags": ["x"]})
                inserted.set()
                await asyncio.sleep(10)

        writer = asyncio.create_task(slow_write())
        await inserted.wait()
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer
        await store.create_task(database, "db_cancel_user", {"title": "after", "tags": ["y"]})
        return await _titles(database, "db_cancel_user")

    assert run_with_database(database_url, scenario, db_pool_size=1) == ["after"]


def test_a_statement_cancelled_while_it_waits_leaves_no_transaction_for_the_next_request(database_url):
    """A request cancelled mid-statement (a live stream whose tab closed while it numbered events):
    the driver may still run the statement afterwards (aiosqlite's thread does), so its connection
    must not go back to the pool. Once it did, the BEGIN ran later on the pooled connection, and the
    next create on it answered inside that transaction, which was never committed: "after" was lost."""

    async def scenario(database: Database):
        await store.create_task(database, "db_cut_user", {"title": "before"})
        let_go = _block_writes_of(database_url, "db_cut_user")
        writer = asyncio.create_task(store.create_task(database, "db_cut_user", {"title": "cancelled"}))
        await asyncio.sleep(0.3)  # now waiting for the lock, inside the driver
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer
        let_go()
        await asyncio.sleep(0.2)  # whatever the driver still had queued has run
        for title in ("after", "and after"):
            await store.create_task(database, "db_cut_user", {"title": title})
        return await _titles(database, "db_cut_user")

    assert run_with_database(database_url, scenario, db_pool_size=1) == ["before", "after", "and after"]


def test_values_come_back_as_they_went_in(database_url):
    due = datetime(2026, 12, 24, 17, 30, 15, 123456, tzinfo=timezone.utc)

    async def scenario(database: Database):
        created = await store.create_task(
            database, "db_values_user", {"title": "École ☃", "tags": ["Home", "ÜBER"], "due_date": due, "completed": True}
        )
        return await store.get_task(database, "db_values_user", created["id"])

    task = run_with_database(database_url, scenario)
    assert task["title"] == "École ☃"
    assert task["tags"] == ["Home", "ÜBER"]
    assert task["due_date"] == due and task["due_date"].tzinfo == timezone.utc
    assert task["completed"] is True and task["completed_at"].tzinfo == timezone.utc
    assert task["version"] == 1


def test_a_connection_left_inside_a_transaction_is_closed_not_handed_to_the_next_request(database_url):
    async def scenario(database: Database):
        async with database.connect() as connection:
            await connection.execute_sql(database.driver.begin_sql)
            await store.insert_task(connection, "db_abandon_user", {"title": "abandoned"})
            # left without COMMIT or ROLLBACK, as a handler interrupted mid-transaction would
        await store.create_task(database, "db_abandon_user", {"title": "after"})
        return await _titles(database, "db_abandon_user")

    assert run_with_database(database_url, scenario, db_pool_size=1) == ["after"]


def test_prepared_statements_lost_to_a_pooler_are_explained_in_the_log(scratch_database, caplog):
    """What PgBouncer < 1.21 in transaction mode does to a connection's prepared statements,
    done by hand: the request fails, and the log says which setting fixes it."""
    url = scratch_database("postgres")

    async def scenario(database: Database):
        async with database.connect() as connection:
            find = (store.FIND_TASK, {"task_id": 1, "caller": "db_prepared_user"})
            await connection.fetch_one(*find)  # prepared on first use
            connection.raw.pgconn.exec_(b"DEALLOCATE ALL")  # behind psycopg's back, as a pooler would
            with pytest.raises(psycopg.errors.InvalidSqlStatementName):
                await connection.fetch_one(*find)

    with caplog.at_level(logging.ERROR, logger="task_api.db"):
        run_with_database(url, scenario)
    assert any("DB_PREPARED_STATEMENTS=false" in record.getMessage() for record in caplog.records), caplog.text


def _block_writes_of(database_url: str, user_id: str):
    """Another session that makes `user_id`'s creates wait (PostgreSQL: it locks the user's lists,
    which a new task's list reference must read-lock; SQLite: it takes the write lock). Returns a
    function that lets them go."""
    if database_url.startswith("sqlite"):
        import sqlite3

        path = database_url.split("///", 1)[1]
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
    else:
        plain_url = sa.engine.make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        blocker = psycopg.connect(plain_url, autocommit=False)
        blocker.execute("SELECT id FROM list WHERE owner_id = %s FOR UPDATE", (user_id,))

    def release() -> None:
        blocker.rollback()
        blocker.close()

    return release


def test_one_users_queued_writes_leave_the_other_connections_to_other_users(database_url):
    """Six creates of alice wait on a lock held from another session. They queue in
    the process (pools.Pool.writer_turn), so only one holds a connection of the pool of two, and
    bob's read is served meanwhile; then all of alice's writes land, none lost."""

    async def scenario(database: Database):
        await store.create_task(database, "turn_alice", {"title": "first", "tags": []})
        bobs = await store.create_task(database, "turn_bob", {"title": "bob's", "tags": []})
        release = _block_writes_of(database_url, "turn_alice")
        try:
            writes = [asyncio.create_task(store.create_task(database, "turn_alice", {"title": f"queued {n}", "tags": []}))
                      for n in range(6)]
            await asyncio.sleep(0.3)  # every write has started and is waiting
            read = await store.get_task(database, "turn_bob", bobs["id"])
            pending_while_bob_read = sum(not write.done() for write in writes)
        finally:
            release()
        await asyncio.gather(*writes)
        return read["title"], pending_while_bob_read, sorted(await _titles(database, "turn_alice"))

    title, pending, alices = run_with_database(database_url, scenario, db_pool_size=2)
    assert title == "bob's"
    assert pending == 6  # bob was served while all of alice's writes still waited
    assert alices == ["first", *(f"queued {n}" for n in range(6))]


def test_a_write_undone_by_a_deadlock_is_run_again_and_lands(scratch_database, caplog):
    """A cascade completion (§8: one statement that locks the parent, then its subtask) and another
    session that locks the two the other way round wait on each other. PostgreSQL undoes the
    statement that waited first, the completion, after deadlock_timeout (1 s). That statement on its
    own was undone whole, so db.py runs it again: the user gets the completed tasks, not a 503."""
    url = scratch_database("postgres")
    plain_url = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def scenario(database: Database):
        parent = await store.create_task(database, "deadlock_user", {"title": "parent", "tags": []})
        child = await store.create_task(database, "deadlock_user", {"title": "child", "tags": [], "parent_id": parent["id"]})
        other = psycopg.connect(plain_url, autocommit=False)
        other.execute("SELECT id FROM task WHERE id = %s FOR UPDATE", (child["id"],))
        completion = asyncio.create_task(
            store.modify_task(database, "deadlock_user", parent["id"], {"completed": True}, Precondition(None))
        )
        await asyncio.sleep(0.3)  # the completion holds the parent and waits for the subtask

        def close_the_cycle() -> None:
            # Waits for the completion's lock on the parent: it returns once PostgreSQL undid the completion.
            other.execute("SELECT id FROM task WHERE id = %s FOR UPDATE", (parent["id"],))
            time.sleep(0.2)
            other.rollback()
            other.close()

        await asyncio.to_thread(close_the_cycle)
        completed = await completion
        return completed, [(task["title"], task["completed"]) for task in await _tasks(database, "deadlock_user")]

    with caplog.at_level(logging.WARNING, logger="task_api.db"):
        completed, tasks = run_with_database(url, scenario)
    retried = "statement undone by the database, running it again"
    retries = [record for record in caplog.records if record.getMessage() == retried]
    assert [record.error_type for record in retries] == ["DeadlockDetected"]  # the deadlock happened, once
    assert completed["completed"] is True and completed["version"] == 2
    assert sorted(tasks) == [("child", True), ("parent", True)]


def test_a_transaction_undone_by_a_deadlock_changes_nothing_and_answers_503_saying_so(scratch_database):
    """The same cycle inside a transaction of two statements: its first statement was undone too,
    so it is not run again (only the whole transaction could be); the client is told that nothing
    changed and to retry, not that the database is unreachable."""
    url = scratch_database("postgres")
    plain_url = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    rename = sa.update(task_table).where(task_table.c.id == sa.bindparam("task_id")).values(title=sa.bindparam("title"))

    async def scenario(database: Database):
        first = await store.create_task(database, "deadlock_tx_user", {"title": "first", "tags": []})
        second = await store.create_task(database, "deadlock_tx_user", {"title": "second", "tags": []})
        other = psycopg.connect(plain_url, autocommit=False)
        other.execute("SELECT id FROM task WHERE id = %s FOR UPDATE", (second["id"],))

        async def rename_both() -> None:
            async with database.transaction() as connection:
                await connection.execute(rename, {"task_id": first["id"], "title": "renamed"})
                await connection.execute(rename, {"task_id": second["id"], "title": "renamed"})  # waits for `other`

        writing = asyncio.create_task(rename_both())
        await asyncio.sleep(0.3)

        def close_the_cycle() -> None:
            other.execute("SELECT id FROM task WHERE id = %s FOR UPDATE", (first["id"],))
            other.rollback()
            other.close()

        await asyncio.to_thread(close_the_cycle)
        with pytest.raises(WriteConflict) as raised:
            await writing
        return raised.value, await _titles(database, "deadlock_tx_user")

    conflict, titles = run_with_database(url, scenario)
    assert titles == ["first", "second"]  # the first rename was undone with the second
    answer = errors.database_unavailable(conflict)
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert "nothing changed" in answer.detail and "unreachable" not in answer.detail
