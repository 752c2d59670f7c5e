"""The data of `make bench-scale`: 300,000 tasks, one user (`big_user`) holding 100,000 of them in
their own lists with subtasks, the others spread over users of 100 tasks each; and a user
(`shared_user`) who owns only their (empty) Inbox and is an editor of 5 lists of other users
(`sharer_1`..`sharer_5`), 100,000 tasks between them, made the way the big user's are. Written with
COPY into a database migrated by the service's own Alembic migrations, as bench/explain.py does."""
import csv
import io
import random
from datetime import date, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from fractional_indexing import generate_key_between

import counts
import dates
import explain  # bench/, beside this file: make_task, as_csv
import seed_lists

BIG_USER = "big_user"
BIG_LISTS = 8  # the big user's lists besides their Inbox
SHARED_USER = "shared_user"
SHARED_LISTS = 5  # shared with SHARED_USER, one by each sharer
SHARERS = tuple(f"sharer_{number}" for number in range(1, SHARED_LISTS + 1))
SMALL_USER_PREFIX = "user_"
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


def _finish(rows: list[dict[str, Any]], rng: random.Random) -> None:
    """All-day tasks, and the rare word in some titles."""
    for row in rows:
        _all_day(row, rng)
        if rng.random() < 0.0005:
            row["title"] += " " + RARE_WORD


def _rows(
    rng: random.Random, shared_rng: random.Random, small_users: int, per_small_user: int, big_tasks: int, shared_tasks: int
) -> list[dict[str, Any]]:
    users = [f"{SMALL_USER_PREFIX}{index:05d}" for index in range(small_users)]
    rows = [explain.make_task(rng, users[index % small_users]) for index in range(small_users * per_small_user)]
    rows += [explain.make_task(rng, BIG_USER) for _ in range(big_tasks)]
    _finish(rows, rng)
    # The shared lists' tasks draw from their own generator: everyone else's stay as they were without them.
    shared = [explain.make_task(shared_rng, SHARED_USER) for _ in range(shared_tasks)]
    _finish(shared, shared_rng)
    rows += shared
    rows.sort(key=lambda row: row["created_at"])  # ids in creation order, users interleaved
    for task_id, row in enumerate(rows, start=1):
        row["id"] = task_id
    return rows


def _arrange(rows: list[dict[str, Any]], user: str, list_ids: list[int], inbox_share: float, rng: random.Random) -> None:
    """Spread the user's tasks over their Inbox (`inbox_share` of the top-level ones) and `list_ids`,
    and make some subtasks of earlier tasks (in the parent's list, at most 4 levels), in creation
    order as the service would have."""
    depth: dict[int, int] = {}
    recent: list[dict[str, Any]] = []
    for row in rows:
        if row["user_id"] != user:
            continue
        parents = [candidate for candidate in recent[-50:] if depth[candidate["id"]] < 4]
        if parents and rng.random() < SUBTASK_SHARE:
            parent = rng.choice(parents)
            row["list_id"], row["parent_id"] = parent["list_id"], parent["id"]
            depth[row["id"]] = depth[parent["id"]] + 1
        else:
            row["list_id"] = rng.choice(list_ids) if rng.random() < 1 - inbox_share else None  # None: Inbox
            depth[row["id"]] = 1
        recent.append(row)


def _own_list(list_id: int, owner: str, name: str, position: str, now: datetime) -> dict[str, Any]:
    """A list as seed_lists.default_list makes them, not the default one."""
    return {**seed_lists.default_list(owner, list_id, now), "name": name, "is_default": False, "position": position}


def _big_user_lists(now: datetime) -> list[dict[str, Any]]:
    """The big user's lists besides Inbox (ids 1..BIG_LISTS; the others come after)."""
    return [_own_list(number, BIG_USER, f"List {number}", f"b{number}", now) for number in range(1, BIG_LISTS + 1)]


def _shared_lists(first_id: int, now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The sharers' lists (ids first_id.., one each, after their empty Inbox in their order), the
    Inboxes of the sharers and of the shared user (no tasks), and the shared user's memberships:
    editor of each shared list, in their own order after their Inbox."""
    shared = [_own_list(first_id + index, owner, f"Shared {index + 1}", "a1", now) for index, owner in enumerate(SHARERS)]
    inboxes = [seed_lists.default_list(user, first_id + SHARED_LISTS + index, now)
               for index, user in enumerate((SHARED_USER, *SHARERS))]
    joined, position = [], inboxes[0]["position"]
    for made in shared:
        position = generate_key_between(position, None)
        joined.append({"list_id": made["id"], "user_id": SHARED_USER, "role": "editor", "position": position, "joined_at": now})
    return shared + inboxes, joined


def _created_by_members(rows: list[dict[str, Any]], owners: dict[int, str], rng: random.Random) -> None:
    """The shared lists' tasks were created by their owner or by the shared user, about half each
    (task.user_id is the creator; what a member sees does not depend on it)."""
    for row in rows:
        if row["user_id"] == SHARED_USER and rng.random() < 0.5:
            row["user_id"] = owners[row["list_id"]]


def seed(url: str, small_users: int, per_small_user: int, big_tasks: int, shared_tasks: int) -> None:
    rng, shared_rng = random.Random(15), random.Random(24)
    now = explain.NOW
    rows = _rows(rng, shared_rng, small_users, per_small_user, big_tasks, shared_tasks)
    _arrange(rows, BIG_USER, list(range(1, BIG_LISTS + 1)), 0.2, rng)
    shared, joined = _shared_lists(BIG_LISTS + 1, now)
    shared_ids = [made["id"] for made in shared[:SHARED_LISTS]]
    _arrange(rows, SHARED_USER, shared_ids, 0.0, shared_rng)
    _created_by_members(rows, {made["id"]: made["user_id"] for made in shared[:SHARED_LISTS]}, shared_rng)
    # A subtask of an Inbox task has list_id None like its parent: place() puts both in the Inbox.
    made = _big_user_lists(now) + shared + seed_lists.place(rows, now, first_list_id=BIG_LISTS + 2 * SHARED_LISTS + 2)
    lists, members = seed_lists.as_tables(made)
    tag_csv = io.StringIO()
    tag_writer = csv.writer(tag_csv)
    for row in rows:
        for tag in row["tags"]:
            tag_writer.writerow([row["id"], tag.lower(), row["list_id"], tag])  # as store._replace_tags
    _copy(url, {
        "list": (seed_lists.LIST_COLUMNS, explain.as_csv(lists, seed_lists.LIST_COLUMNS)),
        "list_member": (seed_lists.MEMBER_COLUMNS, explain.as_csv(members + joined, seed_lists.MEMBER_COLUMNS)),
        "task": (TASK_COLUMNS, explain.as_csv(rows, TASK_COLUMNS)),
        "task_tag": (explain.TAG_COLUMNS, tag_csv),
    })
    print(f"seeded {len(rows):,} tasks: {big_tasks:,} for {BIG_USER} ({BIG_LISTS + 1} lists, subtasks), "
          f"{shared_tasks:,} in {SHARED_LISTS} lists shared with {SHARED_USER}, "
          f"{per_small_user} for each of {small_users:,} other users")


def _copy(url: str, tables: dict[str, tuple[tuple[str, ...], io.StringIO]]) -> None:
    engine = sa.create_engine(url)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for statement in counts.BULK_LOAD_STARTS:  # counted once at the end
            cursor.execute(statement)
        for table, (columns, data) in tables.items():
            data.seek(0)
            cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", data)
        for statement in counts.BULK_LOAD_ENDS:
            cursor.execute(statement)
        for table in ("list", "task"):
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        raw.commit()
        raw.driver_connection.autocommit = True  # VACUUM runs outside a transaction
        cursor = raw.driver_connection.cursor()
        for table in tables:
            cursor.execute(f"VACUUM ANALYZE {table}")
    finally:
        raw.close()
        engine.dispose()


def sample_ids(url: str) -> dict[str, Any]:
    """Values the cases need: for the big user, a 100-task user and the shared user, a list and a
    parent task among the tasks they see (their lists' tasks, through list_member)."""
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        def value(sql: str, **params: Any) -> Any:
            return connection.execute(sa.text(sql), params).scalar_one()

        small = value("SELECT user_id FROM task WHERE starts_with(user_id, :prefix) ORDER BY id LIMIT 1", prefix=SMALL_USER_PREFIX)
        found = {
            "small_user": small,
            "big_list": 1,
            "small_list": value("SELECT id FROM list WHERE owner_id = :user", user=small),
            "shared_list": value("SELECT min(list_id) FROM list_member WHERE user_id = :user AND role = 'editor'", user=SHARED_USER),
        }
        for who, user in (("big", BIG_USER), ("small", small), ("shared", SHARED_USER)):
            found[f"{who}_parent"] = value(
                "SELECT coalesce(max(parent_id), min(id)) FROM task"
                " WHERE list_id IN (SELECT list_id FROM list_member WHERE user_id = :user)",
                user=user,
            )
    engine.dispose()
    return found


def busiest_day() -> str:
    """A day with many due tasks: due dates spread from a year ago to two months ahead."""
    return (datetime.now(timezone.utc) - timedelta(days=30)).date().isoformat()
