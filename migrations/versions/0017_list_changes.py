"""A list's changes, counted by the writes: `list_task_count.changes` (a search's count is remembered
while the lists it counted have none new: search_counts.py).

Every write of a task that can change which tasks a search finds, or how many (an insert, a
deletion, a change of its list, state, priority, title or description), adds to `changes` of its
list (both lists of a move), in the write's transaction. The sum of a list's rows only grows. A
write that changes none of those columns (a position, a due date, tags) adds nothing and pays
nothing.

0015's triggers of `task` are replaced by ones that keep the counts as before and add the changes
in the same statement, on the same row (the writing connection's slot): an insert, a deletion, and
an update of a counted column or of the title or description. An update within one list is one
statement (the counts' difference), where 0015 took the task away and added it back (two); a move
is still two, its lists in id order. `task_tag`'s triggers stay 0015's.

Existing rows start at 0: what is remembered is keyed by the lists as well as by the sum.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As of 0015 (a migration keeps its SQL): the slot of the writing connection, and the counters.
PG_SLOT = "pg_backend_pid() % 8"
COUNTERS = {
    f"{state}_{priority}": f"{'NOT ' if state == 'open' else ''}{{row}}completed AND {{row}}priority = '{priority}'"
    for state in ("open", "done") for priority in ("low", "medium", "high")
}
COUNTED_COLUMNS = ("list_id", "completed", "priority")
SEARCHED_COLUMNS = ("title", "description")
OPERATIONS = ("insert", "update", "delete")


def upgrade() -> None:
    op.add_column("list_task_count", sa.Column("changes", sa.BigInteger(), nullable=False, server_default="0"))
    drop_triggers()
    create_triggers(with_changes=True)


def downgrade() -> None:
    drop_triggers()
    create_triggers(with_changes=False)
    op.drop_column("list_task_count", "changes")


def create_triggers(with_changes: bool) -> None:
    """`task`'s triggers of the counts: 0015's (without changes), or this revision's."""
    columns = COUNTED_COLUMNS + (SEARCHED_COLUMNS if with_changes else ())
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_triggers(columns, with_changes)
    else:
        _sqlite_triggers(columns, with_changes)


def drop_triggers() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for operation in OPERATIONS:
        name = f"list_task_count_{operation}"
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (" ON task" if postgresql else ""))
        if postgresql:
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")


def _is(condition: str, row: str) -> str:
    return f"CASE WHEN {condition.format(row=row + '.')} THEN 1 ELSE 0 END"


def _add(list_id: str, values: list[str], with_changes: bool, changes: str = "1", *, postgresql: bool = True,
         rows: str = "") -> str:
    """Add `values` (one per counter) and `changes` to the list's row (PostgreSQL: the connection's
    slot; SQLite: the one row): of a trigger's row, or with `rows` (a deletion's) grouped by list, in
    list order."""
    table, current, slot = ("list_task_count AS c", "c.", PG_SLOT) if postgresql else ("list_task_count", "", "0")
    columns, updates = list(COUNTERS), [f"{counter} = {current}{counter} + excluded.{counter}" for counter in COUNTERS]
    if with_changes:
        columns, values = [*columns, "changes"], [*values, changes]
        updates.append(f"changes = {current}changes + excluded.changes")
    grouped = f" GROUP BY {list_id} ORDER BY {list_id}" if rows else ""
    return (
        f"INSERT INTO {table} (list_id, slot, {', '.join(columns)}) SELECT {list_id}, {slot}, {', '.join(values)}{rows}"
        f" WHERE EXISTS (SELECT 1 FROM list WHERE list.id = {list_id}){grouped}"
        f" ON CONFLICT (list_id, slot) DO UPDATE SET {', '.join(updates)};"
    )


def _counted(row: str, sign: int) -> list[str]:
    return [_is(condition, row) if sign > 0 else f"-{_is(condition, row)}" for condition in COUNTERS.values()]


def _postgresql_triggers(columns: tuple[str, ...], with_changes: bool) -> None:
    within_list = [f"{_is(condition, 'NEW')} - {_is(condition, 'OLD')}" for condition in COUNTERS.values()]
    update = (
        f"IF OLD.list_id = NEW.list_id THEN {_add('NEW.list_id', within_list, with_changes)}"
        f" ELSIF OLD.list_id < NEW.list_id THEN {_add('OLD.list_id', _counted('OLD', -1), with_changes)}"
        f" {_add('NEW.list_id', _counted('NEW', 1), with_changes)}"
        f" ELSE {_add('NEW.list_id', _counted('NEW', 1), with_changes)} {_add('OLD.list_id', _counted('OLD', -1), with_changes)}"
        " END IF;"
    )
    # A deletion, which may span lists, per statement: each list's sums.
    sums = [f"-count(*) FILTER (WHERE {condition.format(row='')})" for condition in COUNTERS.values()]
    delete = _add("gone.list_id", sums, with_changes, "count(*)", rows=" FROM old_rows AS gone")
    changed = " OR ".join(f"OLD.{column} IS DISTINCT FROM NEW.{column}" for column in columns)
    triggers = {
        "insert": (_add("NEW.list_id", _counted("NEW", 1), with_changes), "INSERT", "FOR EACH ROW"),
        "update": (update, f"UPDATE OF {', '.join(columns)}", f"FOR EACH ROW WHEN ({changed})"),
        "delete": (delete, "DELETE", "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT"),
    }
    for operation, (body, event, level) in triggers.items():
        name = f"list_task_count_{operation}"
        op.execute(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n{body}\nRETURN NULL;\nEND\n$$")
        op.execute(f"CREATE TRIGGER {name} AFTER {event} ON task {level} EXECUTE FUNCTION {name}()")


def _sqlite_triggers(columns: tuple[str, ...], with_changes: bool) -> None:
    def add(row: str, sign: int, changes: str = "1") -> str:
        return _add(f"{row}.list_id", _counted(row, sign), with_changes, changes, postgresql=False)

    changed = " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in columns)
    op.execute(f"CREATE TRIGGER list_task_count_insert AFTER INSERT ON task BEGIN {add('NEW', 1)} END")
    op.execute(f"CREATE TRIGGER list_task_count_delete AFTER DELETE ON task BEGIN {add('OLD', -1)} END")
    # The task taken away from its old list and added to its new one: one change of each list.
    op.execute(
        f"CREATE TRIGGER list_task_count_update AFTER UPDATE OF {', '.join(columns)} ON task WHEN {changed}"
        f" BEGIN {add('OLD', -1, 'CASE WHEN OLD.list_id = NEW.list_id THEN 0 ELSE 1 END')} {add('NEW', 1)} END"
    )
