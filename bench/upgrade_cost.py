"""What `alembic upgrade head` costs a deployment of an older version with data, and what an old
instance's reads wait meanwhile (issue 23, #13).

Usage (from the repository root):

    .venv/bin/python bench/upgrade_cost.py [--database-url postgresql://postgres@127.0.0.1:5432/test]
                                           [--tasks 50000] [--users 50] [--from-revision 0002]

What it does:

1. Creates a scratch database beside the one in --database-url (PostgreSQL: `CREATE DATABASE`
   through it; SQLite: a file in a temporary directory) and migrates it to --from-revision with the
   service's own migrations (0002: the schema of the round-1 version, before lists).
2. Seeds --tasks tasks over --users users in one INSERT ... SELECT, as the old version wrote them
   (tags in `task.tags` and in `task_tag`), then ANALYZE.
3. Runs `alembic upgrade head` (one transaction, as the canonical start runs it) while a reader on
   its own connection sends an old version's listing (`SELECT ... FROM task WHERE user_id = ...
   ORDER BY created_at DESC LIMIT 20`) every 20 ms, without a statement timeout.
4. Prints the upgrade's wall time, each migration's share (from alembic's "Running upgrade" log
   lines), and the reader's longest wait. Drops the scratch database.
"""
import argparse
import logging
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from config import Settings  # noqa: E402
from db import PROJECT_DIR  # noqa: E402

OLD_LISTING = sa.text(
    "SELECT id, title, completed, tags, created_at FROM task WHERE user_id = :user ORDER BY created_at DESC, id DESC LIMIT 20"
)
READ_EVERY_SECONDS = 0.02

# Rows as the round-1 version wrote them: a created_at a minute apart, a third with a description,
# a quarter completed, half with two tags (JSON in task.tags, one task_tag row each), a due date on some.
SEED_TASKS = {
    "postgresql": """
        INSERT INTO task (user_id, title, description, completed, priority, tags, due_date, completed_at,
                          created_at, updated_at, version)
        SELECT 'user_' || lpad((i % :users)::text, 4, '0'), 'task ' || i,
               CASE WHEN i % 3 = 0 THEN 'notes about task ' || i END,
               i % 4 = 0, (ARRAY['low', 'medium', 'high'])[1 + i % 3],
               CASE WHEN i % 2 = 0 THEN '["home", "Work"]' ELSE '[]' END::json,
               CASE WHEN i % 5 = 0 THEN timestamptz '2026-12-01 00:00:00+00' + i * interval '1 hour' END,
               CASE WHEN i % 4 = 0 THEN timestamptz '2026-11-01 00:00:00+00' + i * interval '1 minute' END,
               timestamptz '2026-10-01 00:00:00+00' + i * interval '1 minute',
               timestamptz '2026-10-01 00:00:00+00' + i * interval '1 minute', 1 + i % 3
        FROM generate_series(1, :tasks) AS i
    """,
    "sqlite": """
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :tasks)
        INSERT INTO task (user_id, title, description, completed, priority, tags, due_date, completed_at,
                          created_at, updated_at, version)
        SELECT 'user_' || substr('000' || (i % :users), -4), 'task ' || i,
               CASE WHEN i % 3 = 0 THEN 'notes about task ' || i END,
               i % 4 = 0, CASE i % 3 WHEN 0 THEN 'low' WHEN 1 THEN 'medium' ELSE 'high' END,
               CASE WHEN i % 2 = 0 THEN '["home", "Work"]' ELSE '[]' END,
               CASE WHEN i % 5 = 0 THEN strftime('%Y-%m-%d %H:%M:%f000', '2026-12-01', '+' || i || ' hours') END,
               CASE WHEN i % 4 = 0 THEN strftime('%Y-%m-%d %H:%M:%f000', '2026-11-01', '+' || i || ' minutes') END,
               strftime('%Y-%m-%d %H:%M:%f000', '2026-10-01', '+' || i || ' minutes'),
               strftime('%Y-%m-%d %H:%M:%f000', '2026-10-01', '+' || i || ' minutes'), 1 + i % 3
        FROM n
    """,
}
SEED_TAGS = [
    "INSERT INTO task_tag (task_id, tag_key, user_id, tag) SELECT id, 'home', user_id, 'home' FROM task WHERE id % 2 = 0",
    "INSERT INTO task_tag (task_id, tag_key, user_id, tag) SELECT id, 'work', user_id, 'Work' FROM task WHERE id % 2 = 0",
]


def alembic_config(url: str) -> Config:
    config = Config(str(PROJECT_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_DIR / "migrations"))
    config.attributes["database_url"] = url
    return config


class MigrationClock(logging.Handler):
    """The moment each migration starts, from alembic's own log line."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.starts: list[tuple[str, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Running upgrade"):
            self.starts.append((message.split(",")[0].removeprefix("Running upgrade "), time.perf_counter()))


class OldReader(threading.Thread):
    """An old instance's listing, over and over, on its own connection: the longest wait."""

    def __init__(self, url: str, user: str):
        super().__init__(daemon=True)
        self.engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        self.user, self.longest, self.reads, self.errors = user, 0.0, 0, 0
        self.stopping = threading.Event()

    def run(self) -> None:
        with self.engine.connect() as connection:
            while not self.stopping.is_set():
                started = time.perf_counter()
                try:
                    connection.execute(OLD_LISTING, {"user": self.user}).all()
                except sa.exc.DBAPIError:
                    self.errors += 1
                    connection.rollback()
                self.longest = max(self.longest, time.perf_counter() - started)
                self.reads += 1
                time.sleep(READ_EVERY_SECONDS)
        self.engine.dispose()


def scratch_database(admin_url: str) -> tuple[str, Callable[[], None]]:
    url = make_url(Settings.normalise_database_url(admin_url))
    if url.get_backend_name() == "sqlite":
        directory = tempfile.TemporaryDirectory()
        return f"sqlite:///{directory.name}/upgrade_cost.db", directory.cleanup
    name = f"upgrade_cost_{secrets.token_hex(4)}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    return url.set(database=name).render_as_string(hide_password=False), drop


def seed(url: str, tasks: int, users: int) -> float:
    engine = sa.create_engine(url)
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(sa.text(SEED_TASKS[engine.dialect.name]), {"tasks": tasks, "users": users})
        for statement in SEED_TAGS:
            connection.execute(sa.text(statement))
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    engine.dispose()
    return time.perf_counter() - started


def measure(url: str, from_revision: str, tasks: int, users: int) -> None:
    config = alembic_config(url)
    command.upgrade(config, from_revision)
    print(f"seeded {tasks:,} tasks over {users} users at {from_revision} in {seed(url, tasks, users):.1f} s")
    clock = MigrationClock()
    migration_log = logging.getLogger("alembic.runtime.migration")
    migration_log.setLevel(logging.INFO)
    migration_log.addHandler(clock)
    reader = OldReader(url, "user_0001")
    reader.start()
    time.sleep(0.5)
    started = time.perf_counter()
    command.upgrade(config, "head")
    finished = time.perf_counter()
    time.sleep(0.5)
    reader.stopping.set()
    reader.join()
    migration_log.removeHandler(clock)
    print(f"alembic upgrade {from_revision} -> head: {finished - started:.2f} s")
    ends = [moment for _, moment in clock.starts[1:]] + [finished]
    for (step, start), end in zip(clock.starts, ends):
        print(f"  {step:<14} {end - start:6.2f} s")
    print(f"old instance's listing: longest wait {reader.longest:.2f} s over {reader.reads} reads ({reader.errors} errors)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--from-revision", default="0002")
    args = parser.parse_args()
    url, drop = scratch_database(args.database_url)
    try:
        measure(url, args.from_revision, args.tasks, args.users)
    finally:
        drop()


if __name__ == "__main__":
    main()
