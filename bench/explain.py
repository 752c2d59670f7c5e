"""Show that the listing, stats and tags queries read each of the caller's lists through an index
whose first column is list_id, at scale, on PostgreSQL.

Usage (from the repository root):

    .venv/bin/python bench/explain.py [--database-url postgresql://postgres@127.0.0.1:5432/taskapi_explain]
                                      [--users 1000] [--tasks 100000] [--heavy-tasks 5000] [--keep]

What it does:

1. Drops and creates the database named in --database-url (it must be a scratch database: it is
   destroyed), through the server's `postgres` database.
2. Migrates it with `db.upgrade_schema(url)` (the service's Alembic migrations, nothing else).
3. Seeds --tasks tasks spread over --users users, plus one heavy user (`heavy_user`) with
   --heavy-tasks tasks, with COPY, each user's tasks in their Inbox, owned by them and with them as
   its one member (`list_member`, role `owner`). Tags go both in `task.tags` (JSON, as the API
   returns them) and in `task_tag` (tag_key = tag.lower(), with the task's list), exactly as
   store.py writes them. Then VACUUM ANALYZE.
4. Runs the service's own statements: it calls `queries.list_tasks` / `queries.stats` /
   `queries.tag_counts` with filters and orders built by `routes.listing.ListQuery`, captures the SQL
   and parameters they send to the driver (db.Connection._execute, wrapped), and runs
   `EXPLAIN (ANALYZE, BUFFERS)` on exactly that.
5. Prints every plan, then one summary line per statement: which indexes it used (the caller's
   memberships come from `ix_list_member_user_id`), whether one of them is an index on task or
   task_tag whose first column is list_id, and the execution time.

Exit status: 0 when every statement used such a list_id index and none read task, task_tag or
list_member by a sequential scan, 1 otherwise. An index is not yet a fast plan: read the times
(bench/scale.py times every case). The database is dropped at the end unless --keep is given.
"""
import argparse
import asyncio
import csv
import io
import random
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import counts  # noqa: E402
import queries  # noqa: E402
import seed_lists  # noqa: E402  (bench/, beside this file)
import db  # noqa: E402
from config import DatabaseSettings, Settings  # noqa: E402
from db import Database, upgrade_schema  # noqa: E402
from routes.listing import ListQuery  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/taskapi_explain"
HEAVY_USER = "heavy_user"
NOW = datetime.now(timezone.utc)
WORDS = (
    "buy milk call mom write report pay bills fix bike book flight renew passport clean kitchen plan trip "
    "review code email team water plants walk dog read book prepare slides update budget order groceries"
).split()
TAGS = ["home", "work", "errands", "urgent", "finance", "health", "family", "travel", "school", "admin",
        "shopping", "garden", "car", "music", "reading", "sport", "Home", "Work", "Urgent"]
TASK_COLUMNS = ("id", "user_id", "title", "description", "completed", "priority", "tags", "due_date",
                "list_id", "parent_id", "position", "completed_at", "created_at", "updated_at", "version")
TAG_COLUMNS = ("task_id", "tag_key", "list_id", "tag")


# ----------------------------------------------------------------------------------------------
# Database and data


def recreate_database(url: str) -> None:
    target = make_url(url)
    admin = target.set(database="postgres")
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
        connection.exec_driver_sql(f'CREATE DATABASE "{target.database}"')
    engine.dispose()


def drop_database(url: str) -> None:
    target = make_url(url)
    engine = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
    engine.dispose()


def make_task(rng: random.Random, user_id: str) -> dict[str, Any]:
    created = NOW - timedelta(seconds=rng.randint(60, 365 * 86400), microseconds=rng.randint(0, 999_999))
    updated = min(created + timedelta(seconds=rng.randint(0, 30 * 86400)), NOW)
    completed = rng.random() < 0.4
    # Tags as the API stores them: trimmed, case-insensitive duplicates collapsed to the first spelling.
    tags: dict[str, str] = {}
    for tag in rng.sample(TAGS, rng.choice((0, 1, 1, 2, 2, 3))):
        tags.setdefault(tag.lower(), tag)
    roll = rng.random()
    due = None if roll < 0.35 else created + timedelta(days=rng.randint(-10, 60), hours=rng.randint(0, 23))
    title = " ".join(rng.sample(WORDS, rng.randint(2, 5))).capitalize()
    return {
        "user_id": user_id,
        "title": title,
        "description": None if rng.random() < 0.5 else " ".join(rng.sample(WORDS, rng.randint(3, 10))),
        "completed": completed,
        "priority": rng.choice(("low", "medium", "medium", "high")),
        "tags": list(tags.values()),
        "due_date": due,
        "completed_at": updated if completed else None,
        "created_at": created,
        "updated_at": updated,
        "version": 1,
    }


def seed(url: str, users: int, tasks: int, heavy_tasks: int) -> None:
    rng = random.Random(8288)
    user_ids = [f"user_{rng.getrandbits(96):024x}" for _ in range(users)]
    rows = [make_task(rng, user_ids[i % users]) for i in range(tasks)]
    rows += [make_task(rng, HEAVY_USER) for _ in range(heavy_tasks)]
    rows.sort(key=lambda row: row["created_at"])  # ids in creation order, users interleaved
    lists, members = seed_lists.as_tables(seed_lists.place(rows, NOW))  # each task in its user's Inbox, in created order
    list_csv, member_csv = as_csv(lists, seed_lists.LIST_COLUMNS), as_csv(members, seed_lists.MEMBER_COLUMNS)
    task_csv, tag_csv = io.StringIO(), io.StringIO()
    task_writer, tag_writer = csv.writer(task_csv), csv.writer(tag_csv)
    tag_rows = 0
    for task_id, row in enumerate(rows, start=1):
        row["id"] = task_id
        task_writer.writerow([_csv_value(name, row[name]) for name in TASK_COLUMNS])
        for tag in row["tags"]:
            tag_writer.writerow([task_id, tag.lower(), row["list_id"], tag])  # as store._replace_tags
            tag_rows += 1
    engine = sa.create_engine(url)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.copy_expert(f"COPY list ({', '.join(seed_lists.LIST_COLUMNS)}) FROM STDIN WITH (FORMAT csv)", list_csv)
        cursor.copy_expert(
            f"COPY list_member ({', '.join(seed_lists.MEMBER_COLUMNS)}) FROM STDIN WITH (FORMAT csv)", member_csv
        )
        cursor.execute("SELECT setval(pg_get_serial_sequence('list', 'id'), (SELECT max(id) FROM list))")
        for statement in counts.BULK_LOAD_STARTS:  # counted once at the end
            cursor.execute(statement)
        task_csv.seek(0)
        cursor.copy_expert(f"COPY task ({', '.join(TASK_COLUMNS)}) FROM STDIN WITH (FORMAT csv)", task_csv)
        tag_csv.seek(0)
        cursor.copy_expert(f"COPY task_tag ({', '.join(TAG_COLUMNS)}) FROM STDIN WITH (FORMAT csv)", tag_csv)
        for statement in counts.BULK_LOAD_ENDS:
            cursor.execute(statement)
        cursor.execute("SELECT setval(pg_get_serial_sequence('task', 'id'), (SELECT max(id) FROM task))")
        raw.commit()
        raw.driver_connection.autocommit = True  # VACUUM runs outside a transaction
        cursor = raw.driver_connection.cursor()
        for table in ("list", "list_member", "task", "task_tag"):
            cursor.execute(f"VACUUM ANALYZE {table}")
        raw.driver_connection.autocommit = False
    finally:
        raw.close()
        engine.dispose()
    print(f"seeded {len(rows):,} tasks ({tasks:,} over {users:,} users, {heavy_tasks:,} for {HEAVY_USER}) "
          f"and {tag_rows:,} task_tag rows")


def as_csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> io.StringIO:
    """The rows as COPY's csv, ready to read."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow([_csv_value(name, row.get(name)) for name in columns])
    buffer.seek(0)
    return buffer


def _csv_value(name: str, value: Any) -> Any:
    if value is None:
        return None  # an unquoted empty field: NULL in COPY's csv format
    if name == "tags":
        return orjson.dumps(value).decode()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "t" if value else "f"
    return value


# ----------------------------------------------------------------------------------------------
# The service's statements, captured


@dataclass
class Case:
    name: str
    run: Callable[[Database], Any]


def listing(user_id: str, **params: Any) -> Callable[[Database], Any]:
    query = ListQuery.model_validate(params)
    return lambda db: queries.list_tasks(
        db, query.to_filter(user_id), *query.ordering(), limit=query.limit, offset=query.offset
    )


def cases(light_user: str) -> list[Case]:
    return [
        Case("list: default (heavy user)", listing(HEAVY_USER)),
        Case("list: completed=true", listing(HEAVY_USER, completed=True)),
        Case("list: q=report", listing(HEAVY_USER, q="report")),
        Case("list: tag=home", listing(HEAVY_USER, tag=["home"])),
        Case("list: tag=home&tag=work", listing(HEAVY_USER, tag=["home", "work"])),
        Case("list: sort=priority", listing(HEAVY_USER, sort="priority")),
        Case("list: priority=high&status=pending", listing(HEAVY_USER, priority=["high"], status="pending")),
        Case("list: sort=due_date", listing(HEAVY_USER, sort="due_date")),
        Case("list: overdue=true", listing(HEAVY_USER, overdue=True)),
        Case("list: default, page 20 (offset 1900)", listing(HEAVY_USER, offset=1900)),
        Case("list: default (a user with 100 tasks)", listing(light_user, limit=20)),
        Case("stats (heavy user)", lambda db: queries.stats(db, HEAVY_USER)),
        Case("tags (heavy user)", lambda db: queries.tag_counts(db, HEAVY_USER)),
    ]


@contextmanager
def captured_statements() -> Iterator[list[tuple[str, Any]]]:
    """The SQL and parameters the service sends to the driver while the block runs."""
    captured: list[tuple[str, Any]] = []
    real_execute = db.Connection._execute

    async def recording_execute(self: db.Connection, sql: str, arguments: Any, *rest: Any) -> Any:
        captured.append((sql, arguments))
        return await real_execute(self, sql, arguments, *rest)

    db.Connection._execute = recording_execute  # type: ignore[method-assign]
    try:
        yield captured
    finally:
        db.Connection._execute = real_execute  # type: ignore[method-assign]


def capture(url: str, run: Callable[[Database], Any]) -> list[tuple[str, Any]]:
    """The statements (SQL text and parameters, as sent to the driver) that `run` executes."""

    async def run_once() -> None:
        settings = Settings(_env_file=None, database_url=url, better_auth_secret=secrets.token_urlsafe(48))  # unused here
        database = Database(settings)
        try:
            await run(database)
        finally:
            await database.close()

    with captured_statements() as captured:
        asyncio.run(run_once())
    return captured


def list_id_indexes(engine: sa.Engine) -> set[str]:
    """Indexes on task / task_tag whose first key column is list_id."""
    sql = """
        SELECT i.relname FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid
        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]
        WHERE t.relname IN ('task', 'task_tag') AND a.attname = 'list_id'
    """
    with engine.connect() as connection:
        return {row[0] for row in connection.exec_driver_sql(sql)}


INDEX_IN_PLAN = re.compile(r"(?:Index Scan|Index Only Scan|Bitmap Index Scan)(?: Backward)? (?:using|on) (\S+)")
SEQ_SCAN = re.compile(r"Seq Scan on (\S+)")


def plan_lines(engine: sa.Engine, statement: str, parameters: Any, analyze: bool = True) -> list[str]:
    """The plan of `statement` as the service sends it: `$1` placeholders and their values in order
    (db.Compiled.positions), run the service's way (psycopg 3's raw cursor), then rolled back."""
    conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as connection:
        cursor = psycopg.RawCursor(connection)
        cursor.execute(("EXPLAIN (ANALYZE, BUFFERS) " if analyze else "EXPLAIN ") + statement, parameters)
        plan = [row[0] for row in cursor.fetchall()]
        connection.rollback()
    return plan


def explain(engine: sa.Engine, statement: str, parameters: Any) -> tuple[str, list[str]]:
    shown = statement + "\n-- values: " + ", ".join(f"${index} = {value!r}" for index, value in enumerate(parameters, 1))
    return shown, plan_lines(engine, statement, parameters)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL, help=f"a scratch database, recreated (default {DEFAULT_URL})")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=100_000, help="spread over --users")
    parser.add_argument("--heavy-tasks", type=int, default=5000, help=f"for {HEAVY_USER}, on top of --tasks")
    parser.add_argument("--keep", action="store_true", help="do not drop the database at the end")
    args = parser.parse_args()

    url = DatabaseSettings.normalise_database_url(args.database_url)
    if not url.startswith("postgresql"):
        parser.error("--database-url must be a PostgreSQL URL")
    started = time.perf_counter()
    recreate_database(url)
    upgrade_schema(url)
    seed(url, args.users, args.tasks, args.heavy_tasks)
    print(f"database ready in {time.perf_counter() - started:.1f} s")

    engine = sa.create_engine(url)
    with engine.connect() as connection:
        server = connection.exec_driver_sql("SHOW server_version").scalar_one()
        light_user = connection.exec_driver_sql(
            f"SELECT user_id FROM task WHERE user_id <> '{HEAVY_USER}' ORDER BY id LIMIT 1"
        ).scalar_one()
    indexes = list_id_indexes(engine)
    print(f"PostgreSQL {server}; indexes with list_id first: {', '.join(sorted(indexes))}")

    summary: list[str] = []
    all_ok = True
    for case in cases(light_user):
        for number, (statement, parameters) in enumerate(capture(url, case.run), start=1):
            label = case.name if number == 1 else f"{case.name} [count]"
            sql, plan = explain(engine, statement, parameters)
            used = list(dict.fromkeys(INDEX_IN_PLAN.findall("\n".join(plan))))
            seq = list(dict.fromkeys(SEQ_SCAN.findall("\n".join(plan))))
            on_list_id = [name for name in used if name in indexes]
            ok = bool(on_list_id) and not {"task", "task_tag", "list_member"} & set(seq)
            all_ok &= ok
            total = next((line for line in plan if line.startswith("Execution Time")), "")
            print("\n" + "=" * 100 + f"\n{label}\n" + "-" * 100)
            print(sql)
            print("-" * 100)
            print("\n".join(plan))
            summary.append(
                f"{'OK  ' if ok else 'FAIL'} {label:<48} list_id index: {'yes' if on_list_id else 'NO '} "
                f"({', '.join(used) or 'no index'}{'; seq scan on ' + ', '.join(seq) if seq else ''}); {total}"
            )
    print("\n" + "=" * 100 + "\nSummary\n" + "-" * 100)
    print("\n".join(summary))
    engine.dispose()
    if not args.keep:
        drop_database(url)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
