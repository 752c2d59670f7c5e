"""The PostgreSQL half of the suite, once more through PgBouncer in transaction mode: what Neon's
pooled (`-pooler`) endpoint is. Consecutive transactions of one client connection may run on
different server connections there, so anything session-scoped (session advisory locks, SET,
prepared statements, temporary tables) breaks; this run would show it.

The test starts its own PgBouncer (tests/pgbouncer.py) in front of the PostgreSQL the suite uses,
then runs `pytest -k postgres` in a subprocess with TEST_DATABASE_URL pointing at PgBouncer:
scratch databases are created through it, migrated through it, and every PostgreSQL test, the
live-server ones included, talks through it. Needs `pgbouncer` (apt-get install -y pgbouncer):
skipped without it, failed under CI.
"""
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import unavailable
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from config import Settings
from pgbouncer import PgBouncer, pgbouncer_binary

PROJECT = Path(__file__).resolve().parent.parent
INNER_RUN = "TASK_API_PGBOUNCER_INNER_RUN"
MIGRATION_LOCK_KEY = 72_707_369  # migrations/env.py
# Files left out of the inner run: this one (no recursion) and those whose PostgreSQL use is
# incidental and whose cost is not (a clean venv for the image check).
NOT_THROUGH_PGBOUNCER = ["tests/test_pgbouncer.py", "tests/test_container.py"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(os.environ.get(INNER_RUN)), reason="already running through PgBouncer"),
]


@pytest.fixture(scope="module")
def bouncer(postgres_server_url: str):
    if pgbouncer_binary() is None:
        message = "pgbouncer is not installed (apt-get install -y pgbouncer): the PgBouncer run cannot happen"
        unavailable(message)
    server = make_url(postgres_server_url)
    with PgBouncer(server_host=server.host or "127.0.0.1", server_port=server.port or 5432) as running:
        running.admin_database = server.database or "postgres"
        yield running


def _held_migration_locks(admin_url: str, database: str) -> list:
    engine = sa.create_engine(Settings.normalise_database_url(admin_url))
    try:
        with engine.connect() as connection:
            return connection.execute(
                sa.text(
                    "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                    "WHERE l.locktype = 'advisory' AND l.objid = :key AND l.granted AND d.datname = :db"
                ),
                {"key": MIGRATION_LOCK_KEY, "db": database},
            ).all()
    finally:
        engine.dispose()


def test_migrations_through_pgbouncer_leave_no_lock_behind(bouncer: PgBouncer, postgres_server_url: str) -> None:
    """`alembic upgrade head` from several processes at once, through PgBouncer: all succeed, and no
    migration lock stays held on a pooled server connection (a session-level pg_advisory_lock
    would: its unlock can run on another server connection), so a later upgrade does not hang."""
    name = f"taskapi_test_pgb_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(Settings.normalise_database_url(bouncer.url(bouncer.admin_database)), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')  # through PgBouncer: no transaction block
    admin.dispose()
    env = {**os.environ, "DATABASE_URL": bouncer.url(name)}
    env.pop("NEON_DB_URL", None)
    alembic = [str(Path(sys.executable).with_name("alembic")), "upgrade", "head"]
    try:
        for round_ in range(2):  # the first creates the schema, the second finds it at head
            processes = [
                subprocess.Popen(alembic, cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for _ in range(3)
            ]
            try:
                for process in processes:
                    output, _ = process.communicate(timeout=60)
                    assert process.returncode == 0, f"round {round_}:\n{output}"
            finally:
                for process in processes:
                    if process.poll() is None:
                        process.kill()
                        process.wait()
            assert _held_migration_locks(postgres_server_url, name) == [], "a migration lock is still held"
        engine = sa.create_engine(Settings.normalise_database_url(bouncer.url(name)))
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        engine.dispose()
    finally:
        drop = sa.create_engine(Settings.normalise_database_url(postgres_server_url), isolation_level="AUTOCOMMIT")
        with drop.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        drop.dispose()


# The PostgreSQL half of the suite, every statement unprepared: 13.5-14.5 min on a slow 2-core machine
# (session 14), where 15 was the limit. CI's own limit is 90 min for everything.
INNER_SUITE_SECONDS = 1800


def test_the_postgresql_suite_passes_through_pgbouncer_in_transaction_mode(bouncer: PgBouncer) -> None:
    env = {
        **os.environ,
        "TEST_DATABASE_URL": bouncer.url(bouncer.admin_database),
        INNER_RUN: "1",
        # Debian's PgBouncer (1.18) cannot keep prepared statements in transaction mode; 1.21+ and
        # Neon's pooler can. This is the setting the README gives for the older ones.
        "DB_PREPARED_STATEMENTS": "false",
        "CI": os.environ.get("CI") or "1",  # PostgreSQL unreachable through PgBouncer must fail, not skip
    }
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "postgres", "--maxfail=5"]
    command += [f"--ignore={path}" for path in NOT_THROUGH_PGBOUNCER]
    started = time.monotonic()
    try:
        result = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=INNER_SUITE_SECONDS)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the suite through PgBouncer did not finish in {INNER_SUITE_SECONDS} s:\n{(exc.stdout or '')[-5000:]}")
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    print(f"through PgBouncer ({time.monotonic() - started:.0f} s): {summary}")
    assert result.returncode == 0, (
        f"pytest through PgBouncer failed ({summary}):\n{result.stdout[-8000:]}\n{result.stderr[-2000:]}"
        f"\n--- pgbouncer log ---\n{bouncer.log()[-3000:]}"
    )
    assert " passed" in summary, summary
