"""What one event costs on disk on PostgreSQL (README, "Operations": sizing CHANGES_RETENTION_DAYS).

Usage (from the repository root):

    .venv/bin/python bench/event_size.py [--database-url postgresql://postgres@127.0.0.1:5432/taskapi_event_size]
                                         [--writes 20000] [--users 50]

What it does:

1. Drops and creates the database named in --database-url (a scratch database: it is destroyed at
   the end), and migrates it with the service's Alembic migrations.
2. Makes --writes changes with the service's own write functions (store.py), as a mix of what
   users do: 50% creates (a title of 2 to 5 words, half with a description, 0 to 3 tags, a third
   with a due date, some with a reminder), 35% updates (title, priority or description), 15%
   completions. Each records its events as the API does (task JSON as `data`).
3. Numbers the events (what any reader of the feed does first), then prints the event table's
   size with its indexes and TOAST (`pg_total_relation_size('event')`) per event: right after the
   writes, after a VACUUM (what autovacuum reaches: numbering updates every row once, and that
   space is reused, not returned), and compacted (VACUUM FULL: the floor).
"""
import argparse
import asyncio
import random
import secrets
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import events  # noqa: E402
import store  # noqa: E402
from config import Settings  # noqa: E402
from db import Database, upgrade_schema  # noqa: E402
from etags import Precondition  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/taskapi_event_size"
WORDS = (
    "buy milk call mom write report pay bills fix bike book flight renew passport clean kitchen plan trip "
    "review code email team water plants walk dog read book prepare slides update budget order groceries"
).split()
TAGS = ["home", "work", "errands", "urgent", "finance", "health", "family", "travel"]
SIZE = sa.text(
    "SELECT count(*) AS events, pg_total_relation_size('event') AS total, pg_relation_size('event') AS heap, "
    "pg_indexes_size('event') AS indexes FROM event"
)


def words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.sample(WORDS, rng.randint(low, high)))


def new_task(rng: random.Random) -> dict:
    fields = {"title": words(rng, 2, 5).capitalize(), "tags": rng.sample(TAGS, rng.choice((0, 1, 1, 2, 3))),
              "priority": rng.choice(("low", "medium", "medium", "high"))}
    if rng.random() < 0.5:
        fields["description"] = words(rng, 3, 10)
    if rng.random() < 0.33:
        fields["due_date"] = datetime.now(timezone.utc) + timedelta(days=rng.randint(0, 60), hours=rng.randint(0, 23))
        if rng.random() < 0.3:
            fields["reminders"] = [{"before_minutes": rng.choice((10, 30, 60))}]
    return fields


async def write(database: Database, writes: int, users: int, concurrency: int) -> None:
    rng = random.Random(16)
    tasks: dict[str, list[int]] = {f"user_{index}": [] for index in range(users)}
    lock = asyncio.Semaphore(concurrency)

    async def one(user_id: str) -> None:
        async with lock:
            roll, owned = rng.random(), tasks[user_id]
            if roll < 0.5 or not owned:
                owned.append((await store.create_task(database, user_id, new_task(rng)))["id"])
            elif roll < 0.85:
                change = rng.choice(({"title": words(rng, 2, 5)}, {"priority": "high"}, {"description": words(rng, 3, 10)}))
                await store.modify_task(database, user_id, rng.choice(owned), change, Precondition(None))
            else:
                await store.modify_task(database, user_id, owned.pop(rng.randrange(len(owned))), {"completed": True},
                                        Precondition(None))

    for start in range(0, writes, 1000):
        await asyncio.gather(*(one(f"user_{rng.randrange(users)}") for _ in range(min(1000, writes - start))))


def recreate(url: str, *, drop_only: bool = False) -> None:
    target = make_url(url)
    engine = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
        if not drop_only:
            connection.exec_driver_sql(f'CREATE DATABASE "{target.database}"')
    engine.dispose()


def report(engine: sa.Engine, when: str) -> None:
    with engine.connect() as connection:
        row = connection.execute(SIZE).mappings().one()
    per_event = row["total"] / row["events"]
    print(f"{when}: {row['events']} events, table {row['heap'] / 2**20:.1f} MiB + indexes {row['indexes'] / 2**20:.1f} MiB"
          f" = {row['total'] / 2**20:.1f} MiB in all: {per_event:.0f} bytes ({per_event / 1000:.2f} KB) per event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--writes", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8)
    arguments = parser.parse_args()
    url = Settings.normalise_database_url(arguments.database_url)
    recreate(url)
    try:
        upgrade_schema(url)
        settings = Settings(_env_file=None, database_url=url, better_auth_secret=secrets.token_urlsafe(48), db_pool_size=arguments.concurrency)
        database = Database(settings)

        async def run() -> None:
            await database.open()
            await write(database, arguments.writes, arguments.users, arguments.concurrency)
            await events.sequence_everyone(database)
            await database.close()

        asyncio.run(run())
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        report(engine, "after the writes")
        with engine.connect() as connection:
            connection.exec_driver_sql("VACUUM ANALYZE event")
        report(engine, "after VACUUM")
        with engine.connect() as connection:
            connection.exec_driver_sql("VACUUM FULL event")
        report(engine, "compacted (VACUUM FULL, the floor)")
        engine.dispose()
    finally:
        recreate(url, drop_only=True)


if __name__ == "__main__":
    main()
