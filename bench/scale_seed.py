"""The data of `make bench-scale`: 300,000 tasks, one user (`big_user`) holding 100,000 of them in
several lists with subtasks, the others spread over users of 100 tasks each. Written with COPY into
a database migrated by the service's own Alembic migrations, as bench/explain.py does."""
import csv
import io
import random
from datetime import date, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

import dates
import explain  # bench/, beside this file: make_task, _csv_value
import seed_lists

BIG_USER = "big_user"
BIG_LISTS = 8  # the big user's lists besides their Inbox
SUBTASK_SHARE = 0.1
ALL_DAY_SHARE = 0.3  # of the dated tasks
RARE_WORD = "zanzibar"  # in about 1 task in 2,000: the bench's rare search
TASK_COLUMNS = (*explain.TASK_COLUMNS, "all_day")


def _all_day(task: dict[str, Any], rng: random.Random) -> None:
    """Some dated tasks are all-day: due at the end of their day (UTC here), as dates.due_columns makes them."""
    if task["due_date"] is not None and rng.random() < ALL_DAY_SHARE:
        day: date = task["due_date"].date()
        task["all_day"] = day.isoformat()
        task["due_date"] = dates.end_of_day(day, dates.UTC_NAME)
    else:
        task["all_day"] = None


def _rows(rng: random.Random, small_users: int, per_small_user: int, big_tasks: int) -> list[dict[str, Any]]:
    users = [f"user_{index:05d}" for index in range(small_users)]
    rows = [explain.make_task(rng, users[index % small_users]) for index in range(small_users * per_small_user)]
    rows += [explain.make_task(rng, BIG_USER) for _ in range(big_tasks)]
    for row in rows:
        _all_day(row, rng)
        if rng.random() < 0.0005:
            row["title"] += " " + RARE_WORD
    rows.sort(key=lambda row: row["created_at"])  # ids in creation order, users interleaved
    for task_id, row in enumerate(rows, start=1):
        row["id"] = task_id
    return rows


def _big_user_lists(now: datetime) -> list[dict[str, Any]]:
    """The big user's lists besides Inbox (ids 1..BIG_LISTS; the default lists come after)."""
    return [
        {"id": number, "user_id": BIG_USER, "name": f"List {number}", "color": None, "is_default": False,
         "position": f"b{number}", "created_at": now, "updated_at": now, "version": 1}
        for number in range(1, BIG_LISTS + 1)
    ]


def _arrange_big_user(rows: list[dict[str, Any]], rng: random.Random) -> None:
    """Spread the big user's tasks over Inbox and their lists, and make some subtasks of earlier tasks
    (in the parent's list, at most 4 levels), in creation order as the service would have."""
    depth: dict[int, int] = {}
    recent: list[dict[str, Any]] = []
    for row in rows:
        if row["user_id"] != BIG_USER:
            continue
        parents = [candidate for candidate in recent[-50:] if depth[candidate["id"]] < 4]
        if parents and rng.random() < SUBTASK_SHARE:
            parent = rng.choice(parents)
            row["list_id"], row["parent_id"] = parent["list_id"], parent["id"]
            depth[row["id"]] = depth[parent["id"]] + 1
        else:
            row["list_id"] = rng.randint(1, BIG_LISTS) if rng.random() < 0.8 else None  # None: Inbox
            depth[row["id"]] = 1
        recent.append(row)


def seed(url: str, small_users: int, per_small_user: int, big_tasks: int) -> None:
    rng = random.Random(15)
    now = explain.NOW
    rows = _rows(rng, small_users, per_small_user, big_tasks)
    _arrange_big_user(rows, rng)
    # A subtask of an Inbox task has list_id None like its parent: place() puts both in the Inbox.
    lists = _big_user_lists(now) + seed_lists.place(rows, now, first_list_id=BIG_LISTS + 1)
    tag_csv = io.StringIO()
    tag_writer = csv.writer(tag_csv)
    for row in rows:
        for tag in row["tags"]:
            tag_writer.writerow([row["id"], tag.lower(), row["user_id"], tag])  # as store._replace_tags
    _copy(url, {
        "list": (seed_lists.LIST_COLUMNS, _csv(lists, seed_lists.LIST_COLUMNS)),
        "task": (TASK_COLUMNS, _csv(rows, TASK_COLUMNS)),
        "task_tag": (explain.TAG_COLUMNS, tag_csv),
    })
    print(f"seeded {len(rows):,} tasks: {big_tasks:,} for {BIG_USER} ({BIG_LISTS + 1} lists, subtasks), "
          f"{per_small_user} for each of {small_users:,} other users")


def _csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> io.StringIO:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow([explain._csv_value(name, row.get(name)) for name in columns])
    buffer.seek(0)
    return buffer


def _copy(url: str, tables: dict[str, tuple[tuple[str, ...], io.StringIO]]) -> None:
    engine = sa.create_engine(url)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for table, (columns, data) in tables.items():
            data.seek(0)
            cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", data)
        for table in ("list", "task"):
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        raw.commit()
        raw.driver_connection.autocommit = True  # VACUUM runs outside a transaction
        cursor = raw.driver_connection.cursor()
        for table in ("list", "task", "task_tag"):
            cursor.execute(f"VACUUM ANALYZE {table}")
    finally:
        raw.close()
        engine.dispose()


def sample_ids(url: str) -> dict[str, Any]:
    """Values the cases need: a list and a parent of the big user's, a 100-task user and theirs."""
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        def value(sql: str, **params: Any) -> Any:
            return connection.execute(sa.text(sql), params).scalar_one()

        small = value("SELECT user_id FROM task WHERE user_id <> :big ORDER BY id LIMIT 1", big=BIG_USER)
        found = {
            "small_user": small,
            "big_list": 1,
            "small_list": value("SELECT id FROM list WHERE user_id = :user", user=small),
        }
        for who, user in (("big", BIG_USER), ("small", small)):
            found[f"{who}_parent"] = value(
                "SELECT coalesce(max(parent_id), min(id)) FROM task WHERE user_id = :user", user=user
            )
    engine.dispose()
    return found


def busiest_day() -> str:
    """A day with many due tasks: due dates spread from a year ago to two months ahead."""
    return (datetime.now(timezone.utc) - timedelta(days=30)).date().isoformat()
