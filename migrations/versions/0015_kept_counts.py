"""Counts kept by the writes: per list, its tasks by state and priority, and its tags by spelling.

`list_task_count` has a list's tasks, open and done, of each priority (six counters; their sums are
the list's total, completed and by-priority counts). `list_tag_count` has, per (list, tag key,
spelling), how many of the list's tasks carry that tag. On PostgreSQL each is split over up to
SLOTS rows by the writing connection (a list's counts are the sum of its rows): concurrent writes to
one list mostly add to different rows, instead of all waiting for one row from their statement to
their commit (8 clients inserting into one list: 3,160 transactions a second without counts, 1,290
with one row per list, 2,000 with 8). Stats, `/api/tags` and the `X-Total-Count` of a listing
filtered by state, priority, list or one tag read these rows, a few per list, instead of counting a
list's tasks (100,000 tasks: 20 ms for stats, 27 for tags).

Triggers keep them, in the transaction of every write of `task` and `task_tag` (whatever the path:
the service's statements, a list's deletion cascading to its tasks, COPY): exact by construction.
- PostgreSQL: a deletion's changes (it may span lists) are summed per statement and applied in key
  order; an insert and an update are counted per row (an update only when a counted column
  changed), its one or two lists in order. A change of `task_tag` first takes its connection's
  `list_task_count` row of its lists: the writes that change a list's tags on the same row wait for
  each other there, instead of each holding one tag's row and waiting for the other's (a task tagged
  a -> b beside one tagged b -> a); writes on other rows share no row at all. A transaction stays on
  one connection, so on one slot: its rows are taken in list order as with one row per list.
  Statements that change rows of several lists otherwise are moves, which lock both lists first
  (tree.lock_lists).
- SQLite: row-level triggers (one writer at a time: no lock order to keep).
A list's count rows go with it (ON DELETE CASCADE); the triggers then skip a list that is gone.

A later migration that rebuilds `task` or `task_tag` on SQLite (batch_alter_table) drops their
triggers: it must create them again (`create_triggers` below).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PRIORITIES = ("low", "medium", "high")
# PostgreSQL: which of a list's rows of counts a write adds to, by its connection (so the same for a
# whole transaction). Writes on other connections mostly add to other rows and do not wait for each
# other; the reads sum a list's rows. SQLite: one row (one writer at a time).
SLOTS = 8
PG_SLOT = f"pg_backend_pid() % {SLOTS}"
# counter -> the condition on a task row (`{row}.` prefixed: NEW., OLD. or nothing)
COUNTERS = {
    f"{state}_{priority}": f"{'NOT ' if state == 'open' else ''}{{row}}completed AND {{row}}priority = '{priority}'"
    for state in ("open", "done") for priority in PRIORITIES
}


def upgrade() -> None:
    op.create_table(
        "list_task_count",
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("slot", sa.SmallInteger(), nullable=False, server_default="0"),
        *(sa.Column(counter, sa.Integer(), nullable=False, server_default="0") for counter in COUNTERS),
        sa.ForeignKeyConstraint(["list_id"], ["list.id"], name=op.f("fk_list_task_count_list_id_list"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("list_id", "slot", name=op.f("pk_list_task_count")),
    )
    op.create_table(
        "list_tag_count",
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("tag_key", sa.String(200), nullable=False),
        sa.Column("tag", sa.String(50), nullable=False),
        sa.Column("slot", sa.SmallInteger(), nullable=False, server_default="0"),
        sa.Column("tasks", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["list_id"], ["list.id"], name=op.f("fk_list_tag_count_list_id_list"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("list_id", "tag_key", "tag", "slot", name=op.f("pk_list_tag_count")),
    )
    # What the rows say now; from here on the triggers keep it (the migration holds the tables).
    sums = ", ".join(f"sum(CASE WHEN {condition.format(row='')} THEN 1 ELSE 0 END)" for condition in COUNTERS.values())
    op.execute(f"INSERT INTO list_task_count (list_id, {', '.join(COUNTERS)}) SELECT list_id, {sums} FROM task GROUP BY list_id")
    op.execute(
        "INSERT INTO list_tag_count (list_id, tag_key, tag, tasks)"
        " SELECT list_id, tag_key, tag, count(*) FROM task_tag GROUP BY list_id, tag_key, tag"
    )
    create_triggers()


def create_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_triggers()
    else:
        _sqlite_triggers()


# ------------------------------------------------------------------------------------------------
# PostgreSQL: a deletion summed per list (and tag) and applied in key order; rows counted one by one

def _selected(source: str, sign: int, columns: tuple[str, ...]) -> str:
    """The changed rows of a source as (columns..., sign): a row (NEW, OLD) or a transition table."""
    if source in ("NEW", "OLD"):
        return f"SELECT {', '.join(f'{source}.{column} AS {column}' for column in columns)}, {sign} AS sign"
    return f"SELECT {', '.join(columns)}, {sign} AS sign FROM {source}"


def _task_changes(*sources: tuple[str, int]) -> str:
    return " UNION ALL ".join(_selected(source, sign, ("list_id", "completed", "priority")) for source, sign in sources)


def _apply_task_counts(changes: str) -> str:
    sums = {counter: f"coalesce(sum(sign) FILTER (WHERE {condition.format(row='')}), 0)" for counter, condition in COUNTERS.items()}
    return f"""
    INSERT INTO list_task_count AS c (list_id, slot, {', '.join(COUNTERS)})
    SELECT changed.list_id, {PG_SLOT}, {', '.join(sums.values())}
    FROM ({changes}) AS changed
    WHERE EXISTS (SELECT FROM list WHERE list.id = changed.list_id)
    GROUP BY changed.list_id
    HAVING {' OR '.join(f'{total} <> 0' for total in sums.values())}
    ORDER BY changed.list_id
    ON CONFLICT (list_id, slot) DO UPDATE SET {', '.join(f'{counter} = c.{counter} + excluded.{counter}' for counter in COUNTERS)};
    """


def _tag_changes(*sources: tuple[str, int]) -> str:
    return " UNION ALL ".join(_selected(source, sign, ("list_id", "tag_key", "tag")) for source, sign in sources)


def _apply_tag_counts(changes: str) -> str:
    return _hold_lists(f"SELECT list_id FROM ({changes}) AS changed") + f"""
    INSERT INTO list_tag_count AS c (list_id, tag_key, tag, slot, tasks)
    SELECT changed.list_id, changed.tag_key, changed.tag, {PG_SLOT}, sum(changed.sign)
    FROM ({changes}) AS changed
    WHERE EXISTS (SELECT FROM list WHERE list.id = changed.list_id)
    GROUP BY changed.list_id, changed.tag_key, changed.tag
    HAVING sum(changed.sign) <> 0
    ORDER BY changed.list_id, changed.tag_key, changed.tag
    ON CONFLICT (list_id, tag_key, tag, slot) DO UPDATE SET tasks = c.tasks + excluded.tasks;
    """


def _hold_lists(lists: str) -> str:
    """Take this connection's row of counts of each of these lists (a query of list ids) first, in
    list order, made if missing (see the module's docstring)."""
    return f"""
    INSERT INTO list_task_count AS c (list_id, slot)
    SELECT DISTINCT held.list_id, {PG_SLOT} FROM ({lists}) AS held
    WHERE EXISTS (SELECT FROM list WHERE list.id = held.list_id)
    ORDER BY held.list_id
    ON CONFLICT (list_id, slot) DO UPDATE SET open_low = c.open_low;
    """


def _in_list_order(add: Callable[[str, int], str]) -> str:
    return (f"IF OLD.list_id <= NEW.list_id THEN {add('OLD', -1)} {add('NEW', 1)}"
            f" ELSE {add('NEW', 1)} {add('OLD', -1)} END IF;")


# Inserts and updates count per row (an update only when a counted column changed, WHEN: the writes
# that change nothing counted, a title or a position, pay nothing; per statement, with transition
# tables, every UPDATE paid for them: +130 us on a one-row title change), one upsert each, a moved
# row's two lists in order. A deletion, which can span lists (clearing completed tasks), counts per
# statement, its lists in order.
_PG_ROW_BODIES = {
    ("task", "INSERT"): lambda: _add_task("NEW", 1),
    ("task", "UPDATE"): lambda: _in_list_order(_add_task),
    ("task_tag", "INSERT"): lambda: _hold_lists("SELECT NEW.list_id") + _add_tag("NEW", 1),
    ("task_tag", "UPDATE"): lambda: _hold_lists("SELECT OLD.list_id UNION ALL SELECT NEW.list_id") + _in_list_order(_add_tag),
}
_PG_DELETIONS = {"task": (_task_changes, _apply_task_counts), "task_tag": (_tag_changes, _apply_tag_counts)}
_COUNTED = {"task": ("list_task_count", ("list_id", "completed", "priority")), "task_tag": ("list_tag_count", ("list_id", "tag_key", "tag"))}
_OPERATIONS = ("INSERT", "UPDATE", "DELETE")


def _postgresql_triggers() -> None:
    for table, (counts, columns) in _COUNTED.items():
        for operation in _OPERATIONS:
            name = f"{counts}_{operation.lower()}"
            if operation == "DELETE":
                changes_of, apply = _PG_DELETIONS[table]
                body, event, level = apply(changes_of(("old_rows", -1))), "DELETE", "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT"
            else:
                body, event, level = _PG_ROW_BODIES[(table, operation)](), operation, "FOR EACH ROW"
            if operation == "UPDATE":
                changed = " OR ".join(f"OLD.{column} IS DISTINCT FROM NEW.{column}" for column in columns)
                event, level = f"UPDATE OF {', '.join(columns)}", f"FOR EACH ROW WHEN ({changed})"
            op.execute(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n{body}\nRETURN NULL;\nEND\n$$")
            op.execute(f"CREATE TRIGGER {name} AFTER {event} ON {table} {level} EXECUTE FUNCTION {name}()")


# ------------------------------------------------------------------------------------------------
# Per row: the SQLite triggers, and the PostgreSQL ones of inserts and updates

def _add_task(row: str, sign: int, postgresql: bool = True) -> str:
    """Add (sign 1) or take away (-1) a task row (NEW or OLD) from its list's counts: on PostgreSQL to
    its connection's row (SLOTS), the table named `c` (to tell its columns from `excluded`'s; SQLite's
    triggers take no alias and need none)."""
    values = ", ".join(f"CASE WHEN {condition.format(row=row + '.')} THEN {sign} ELSE 0 END" for condition in COUNTERS.values())
    table, current, slot = ("list_task_count AS c", "c.", PG_SLOT) if postgresql else ("list_task_count", "", "0")
    return (
        f"INSERT INTO {table} (list_id, slot, {', '.join(COUNTERS)}) SELECT {row}.list_id, {slot}, {values}"
        f" WHERE EXISTS (SELECT 1 FROM list WHERE list.id = {row}.list_id)"
        f" ON CONFLICT (list_id, slot) DO UPDATE SET"
        f" {', '.join(f'{counter} = {current}{counter} + excluded.{counter}' for counter in COUNTERS)};"
    )


def _add_tag(row: str, sign: int, postgresql: bool = True) -> str:
    table, current, slot = ("list_tag_count AS c", "c.", PG_SLOT) if postgresql else ("list_tag_count", "", "0")
    return (
        f"INSERT INTO {table} (list_id, tag_key, tag, slot, tasks) SELECT {row}.list_id, {row}.tag_key, {row}.tag, {slot}, {sign}"
        f" WHERE EXISTS (SELECT 1 FROM list WHERE list.id = {row}.list_id)"
        f" ON CONFLICT (list_id, tag_key, tag, slot) DO UPDATE SET tasks = {current}tasks + excluded.tasks;"
    )


_SQLITE_TRIGGERS = {
    "task": (_add_task, "list_task_count", ("list_id", "completed", "priority")),
    "task_tag": (_add_tag, "list_tag_count", ("list_id", "tag_key", "tag")),
}


def _sqlite_triggers() -> None:
    for table, (add, counts, columns) in _SQLITE_TRIGGERS.items():
        changed = " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in columns)
        op.execute(f"CREATE TRIGGER {counts}_insert AFTER INSERT ON {table} BEGIN {add('NEW', 1, False)} END")
        op.execute(f"CREATE TRIGGER {counts}_delete AFTER DELETE ON {table} BEGIN {add('OLD', -1, False)} END")
        op.execute(
            f"CREATE TRIGGER {counts}_update AFTER UPDATE OF {', '.join(columns)} ON {table} WHEN {changed}"
            f" BEGIN {add('OLD', -1, False)} {add('NEW', 1, False)} END"
        )


def drop_triggers() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table, counts in (("task", "list_task_count"), ("task_tag", "list_tag_count")):
        for operation in _OPERATIONS:
            name = f"{counts}_{operation.lower()}"
            op.execute(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {table}" if postgresql else ""))
            if postgresql:
                op.execute(f"DROP FUNCTION IF EXISTS {name}()")


def downgrade() -> None:
    drop_triggers()
    op.drop_table("list_tag_count")
    op.drop_table("list_task_count")
