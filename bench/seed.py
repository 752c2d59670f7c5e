"""The benchmark's data, the same for ours and the floor: 1,000 users with 20 tasks, the bench user's
50 (the routes read and write them), the writer (creates) and the tree user's 500 tasks in manual
order; seeded with COPY into fresh databases. Used by bench/run.py."""
import datetime as dt
import io
import json
import random
import sys
from pathlib import Path

import psycopg2

import seed_lists  # bench/, beside this file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import counts  # noqa: E402  (the service's, for its bulk-load statements)

BENCH_USER, WRITER_USER, TREE_USER = "bench_user", "bench_writer", "bench_tree"
SEED_USERS, TASKS_PER_USER, BENCH_TASKS = 1000, 20, 50
# The tree user's list in manual order: 50 top-level tasks, 3 subtasks each, 2 below each of those
# (50 + 150 + 300 = 500 tasks, 3 levels), rendered whole by one request.
TREE_LIST_ID, TREE_SHAPE = 100_000, (50, 3, 2)
TREE_TASKS = TREE_SHAPE[0] * (1 + TREE_SHAPE[1] * (1 + TREE_SHAPE[2]))
WORDS = ["groceries", "invoice", "dentist", "garden", "meeting", "laundry", "taxes", "birthday", "car", "email",
         "backup", "review", "plan", "call", "book", "clean", "fix", "pay", "read", "write"]
TAGS = ["home", "work", "urgent", "errands", "Project-X", "reading", "health", "finance"]


def recreate_database(admin_dsn: str, name: str) -> None:
    assert name.endswith("_bench"), "the bench only drops databases it owns (*_bench)"
    conn = psycopg2.connect(admin_dsn, dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def iso(value: dt.datetime | None) -> str:
    return "\\N" if value is None else value.isoformat()


def seed_rows() -> list[dict]:
    """The same tasks for both databases: 1,000 users x 20 tasks, then the benchmark user's 50
    (every one with tags and a due date; every 10th is tagged `work` and titled with `report`)."""
    rng = random.Random(42)
    base = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(days=60)
    rows, task_id = [], 0
    for u in range(1, SEED_USERS + 1):
        for k in range(TASKS_PER_USER):
            task_id += 1
            completed = rng.random() < 0.3
            created = base + dt.timedelta(seconds=task_id * 60)
            rows.append(dict(
                id=task_id, user_id=f"user_{u:04d}",
                title=f"{rng.choice(WORDS).capitalize()} {rng.choice(WORDS)} {k}",
                description=rng.choice([None, f"Note about {rng.choice(WORDS)}"]),
                completed=completed, priority=rng.choice(["low", "medium", "high"]),
                tags=rng.sample(TAGS, rng.randint(0, 3)),
                due_date=created + dt.timedelta(days=rng.randint(1, 90)) if rng.random() < 0.5 else None,
                completed_at=created + dt.timedelta(hours=1) if completed else None,
                created_at=created, updated_at=created + dt.timedelta(hours=1) if completed else created,
            ))
    for i in range(BENCH_TASKS):
        task_id += 1
        created = base + dt.timedelta(days=30, seconds=i * 600)
        tags = (["work"] if i % 2 == 0 else []) + [TAGS[(i % 7) if (i % 7) != 1 else 0], "Project-X" if i % 3 == 0 else "reading"]
        rows.append(dict(
            id=task_id, user_id=BENCH_USER,
            title=f"Quarterly report part {i}" if i % 5 == 0 else f"{WORDS[i % len(WORDS)].capitalize()} item {i}",
            description=f"Benchmark task {i}: details for the {WORDS[(i * 3) % len(WORDS)]}",
            completed=i % 4 == 0, priority=("low", "medium", "high")[i % 3],
            tags=list(dict.fromkeys(tags)),
            due_date=created + dt.timedelta(days=1 + i), completed_at=created + dt.timedelta(hours=2) if i % 4 == 0 else None,
            created_at=created, updated_at=created + dt.timedelta(hours=2) if i % 4 == 0 else created,
        ))
    rows += tree_rows(rng, base, task_id)
    return rows


def tree_rows(rng: random.Random, base: dt.datetime, last_id: int) -> list[dict]:
    """The tree user's list (TREE_LIST_ID): TREE_SHAPE levels, parents before their subtasks."""
    rows, task_id = [], last_id

    def add(parent: int | None, depth: int, index: int) -> int:
        nonlocal task_id
        task_id += 1
        created = base + dt.timedelta(days=40, seconds=task_id)
        completed = rng.random() < 0.2
        rows.append(dict(
            id=task_id, user_id=TREE_USER, title=f"Step {index} at level {depth}", description=None,
            completed=completed, priority=rng.choice(["low", "medium", "high"]), tags=[], due_date=None,
            completed_at=created if completed else None, created_at=created, updated_at=created,
            list_id=TREE_LIST_ID, parent_id=parent,
        ))
        return task_id

    for i in range(TREE_SHAPE[0]):
        top = add(None, 1, i)
        for j in range(TREE_SHAPE[1]):
            middle = add(top, 2, j)
            for k in range(TREE_SHAPE[2]):
                add(middle, 3, k)
    return rows


def list_rows(rows: list[dict]) -> list[dict]:
    """Every user's default list and the tree list; sets list_id, parent_id and position on the rows."""
    now = dt.datetime.now(dt.timezone.utc)
    lists = seed_lists.place(rows, now)
    tree_list = {**lists[0], "id": TREE_LIST_ID, "user_id": TREE_USER, "name": "Tree", "is_default": False, "position": "a1"}
    tree_default = {**lists[0], "id": TREE_LIST_ID - 1, "user_id": TREE_USER}  # its Inbox, empty
    return [*lists, tree_default, tree_list]


def copy_rows(cur, table: str, columns: list[str], lines: list[str]) -> None:
    cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", io.StringIO("".join(lines)))


def drop_indexes(dsn: str, names: list[str]) -> None:
    """Drop indexes of the seeded database (`bench/run.py --drop-index`: what they cost the writes,
    an experiment, never a result to quote as ours)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        for name in names:
            cur.execute("SELECT 1 FROM pg_indexes WHERE schemaname = 'public' AND indexname = %s", (name,))
            if cur.fetchone() is None:
                raise SystemExit(f"--drop-index: no index named {name}")
            cur.execute(f'DROP INDEX "{name}"')
    conn.close()


def seed_ours(dsn: str, rows: list[dict]) -> None:
    """Rows exactly as store.create_task writes them: version 1, tags as JSON, one task_tag row
    per tag (tag_key = tag.lower()), each in its list at the end of its siblings (bench/seed_lists.py)."""
    lists = list_rows(rows)
    list_lines = ["\t".join([
        str(r["id"]), r["user_id"], r["name"], "\\N", "t" if r["is_default"] else "f",
        iso(r["created_at"]), iso(r["updated_at"]), "1",
    ]) + "\n" for r in lists]
    # Each list's owner is its only member (access.py reads every task through list_member).
    member_lines = [f"{r['id']}\t{r['user_id']}\towner\t{r['position']}\t{iso(r['created_at'])}\n" for r in lists]
    task_lines, tag_lines = [], []
    for r in rows:
        task_lines.append("\t".join([
            str(r["id"]), r["user_id"], r["title"], r["description"] or "\\N", "t" if r["completed"] else "f",
            r["priority"], json.dumps(r["tags"]), iso(r["due_date"]), str(r["list_id"]),
            "\\N" if r["parent_id"] is None else str(r["parent_id"]), r["position"], iso(r["completed_at"]),
            iso(r["created_at"]), iso(r["updated_at"]), "1",
        ]) + "\n")
        for tag in r["tags"]:
            tag_lines.append(f"{r['id']}\t{tag.lower()}\t{r['list_id']}\t{tag}\n")
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        copy_rows(cur, "list", ["id", "owner_id", "name", "color", "is_default", "created_at", "updated_at", "version"], list_lines)
        copy_rows(cur, "list_member", ["list_id", "user_id", "role", "position", "joined_at"], member_lines)
        for statement in counts.BULK_LOAD_STARTS:  # counted once at the end
            cur.execute(statement)
        copy_rows(cur, "task", ["id", "user_id", "title", "description", "completed", "priority", "tags", "due_date",
                                "list_id", "parent_id", "position", "completed_at", "created_at", "updated_at",
                                "version"], task_lines)
        copy_rows(cur, "task_tag", ["task_id", "tag_key", "list_id", "tag"], tag_lines)
        for statement in counts.BULK_LOAD_ENDS:
            cur.execute(statement)
        cur.execute("SELECT setval(pg_get_serial_sequence('task', 'id'), (SELECT max(id) FROM task))")
        cur.execute("SELECT setval(pg_get_serial_sequence('list', 'id'), (SELECT max(id) FROM list))")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("ANALYZE")
    conn.close()


def floor_schema(floor_dir: Path, shared_floor_dir: Path) -> str:
    """The SQL of the floor's table: its own, or the shared floor's (bench/fastapi_floor has none)."""
    own = floor_dir / "floor_schema.sql"
    return (own if own.exists() else shared_floor_dir / "floor_schema.sql").read_text()


FLOOR_COLUMNS = ("id", "user_id", "title", "description", "completed", "priority", "tags", "due_date", "completed_at",
                 "created_at", "updated_at")
PLACE_COLUMNS = ("list_id", "parent_id", "position")  # bench/fastapi_floor's table has them (its tree route)


def floor_values(r: dict, with_places: bool) -> list[str]:
    tags = "{" + ",".join(r["tags"]) + "}"
    values = [
        str(r["id"]), r["user_id"], r["title"], r["description"] or "\\N", "t" if r["completed"] else "f",
        r["priority"], tags, iso(r["due_date"]), iso(r["completed_at"]), iso(r["created_at"]), iso(r["updated_at"]),
    ]
    if with_places:  # as ours has them (seed_ours placed the rows)
        values += [str(r["list_id"]), "\\N" if r["parent_id"] is None else str(r["parent_id"]), r["position"]]
    return values


def seed_floor(dsn: str, schema_sql: str, rows: list[dict]) -> None:
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(schema_sql)
        cur.execute("SELECT 1 FROM information_schema.columns WHERE table_name = 'floor_task' AND column_name = 'position'")
        with_places = cur.fetchone() is not None
        lines = ["\t".join(floor_values(r, with_places)) + "\n" for r in rows]
        copy_rows(cur, "floor_task", list(FLOOR_COLUMNS + (PLACE_COLUMNS if with_places else ())), lines)
        cur.execute("SELECT setval(pg_get_serial_sequence('floor_task', 'id'), (SELECT max(id) FROM floor_task))")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("ANALYZE")
    conn.close()


# --------------------------------------------------------------------------- HTTP and wrk
