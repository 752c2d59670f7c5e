"""Backfills are set-based (issue 23, #13), on SQLite and PostgreSQL: 0003's (each task into its
owner's default list, positioned in created order) and 0010's downgrade (numbering pending events)
send a few statements whatever the number of rows (a row at a time, 0003 held the task table
locked 8 s of an upgrade of 50,000 tasks on PostgreSQL), and give exactly the data the
row-at-a-time versions gave on the same seed.

The row-at-a-time versions are kept below as they were, to migrate a second copy the old way.
"""
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from unittest import mock

import pytest
import sqlalchemy as sa
from alembic import command, op
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.script import ScriptDirectory
from fractional_indexing import generate_key_between

from config import Settings
from test_migration_lists import alembic_config

BASE = datetime(2026, 11, 1, tzinfo=timezone.utc)
# One user's 4,000 tasks cross two key lengths (a0..az, b00..bzz, c000...), created out of id
# order with ties in created_at (broken by id); a few small users besides.
BIG_USER_TASKS = 4_000


# ----------------------------------------------------------------------------- the old ways, verbatim

def old_0003_backfill() -> None:
    """0003's backfill before issue 23: a correlated update, then the positions one row at a time."""
    task_table = sa.table(
        "task", sa.column("id", sa.Integer), sa.column("user_id", sa.String), sa.column("created_at"),
        sa.column("list_id", sa.Integer), sa.column("position", sa.String),
    )
    list_table = sa.table(
        "list", sa.column("id", sa.Integer), sa.column("user_id", sa.String), sa.column("name", sa.String),
        sa.column("is_default", sa.Boolean), sa.column("position", sa.String), sa.column("created_at"),
        sa.column("updated_at"), sa.column("version", sa.Integer),
    )
    connection = op.get_bind()
    now = datetime.now(timezone.utc)
    if connection.dialect.name == "sqlite":
        now = now.replace(tzinfo=None)
    defaults = sa.select(
        task_table.c.user_id, sa.literal("Inbox"), sa.literal(True), sa.literal("a0"),
        sa.literal(now), sa.literal(now), sa.literal(1),
    ).group_by(task_table.c.user_id)
    connection.execute(
        sa.insert(list_table).from_select(
            ["user_id", "name", "is_default", "position", "created_at", "updated_at", "version"], defaults
        )
    )
    default_list = (
        sa.select(list_table.c.id)
        .where(list_table.c.user_id == task_table.c.user_id, list_table.c.is_default)
        .scalar_subquery()
    )
    connection.execute(sa.update(task_table).values(list_id=default_list))
    ordered = connection.execute(
        sa.select(task_table.c.id, task_table.c.user_id).order_by(
            task_table.c.user_id, task_table.c.created_at, task_table.c.id
        )
    )
    positions, user, last = [], None, None
    for task_id, user_id in ordered:
        if user_id != user:
            user, last = user_id, None
        last = generate_key_between(last, None)
        positions.append({"task_id": task_id, "new_position": last})
    if positions:
        connection.execute(
            sa.update(task_table)
            .where(task_table.c.id == sa.bindparam("task_id"))
            .values(position=sa.bindparam("new_position")),
            positions,
        )


def old_0010_number_pending() -> None:
    """0010's downgrade before issue 23: pending events numbered one row at a time."""
    connection = op.get_bind()
    pending = connection.execute(
        sa.text("SELECT user_id, id FROM event WHERE seq IS NULL ORDER BY user_id, id")
    ).all()
    last: dict[str, int] = {}
    for user_id, event_id in pending:
        if user_id not in last:
            last[user_id] = connection.execute(
                sa.text("SELECT coalesce(max(seq), 0) FROM event WHERE user_id = :user_id"), {"user_id": user_id}
            ).scalar_one()
        last[user_id] += 1
        connection.execute(sa.text("UPDATE event SET seq = :seq WHERE id = :id"), {"seq": last[user_id], "id": event_id})
    for user_id, seq in last.items():
        connection.execute(
            sa.text("INSERT INTO user_event_counter (user_id, seq) VALUES (:user_id, :seq)"
                    " ON CONFLICT (user_id) DO UPDATE SET seq = excluded.seq"),
            {"seq": seq, "user_id": user_id},
        )


# ----------------------------------------------------------------------------- helpers

def engine_of(url: str) -> sa.Engine:
    return sa.create_engine(Settings.normalise_database_url(url))


def run_migration(url: str, revision: str, direction: str, **replaced: Callable[[], None]) -> None:
    """One migration's upgrade() or downgrade() as alembic runs it, with some of its functions
    replaced; then the database is stamped where that step leaves it."""
    config = alembic_config(url)
    module = ScriptDirectory.from_config(config).get_revision(revision).module
    engine = engine_of(url)
    with engine.begin() as connection, mock.patch.multiple(module, **replaced):
        with Operations.context(MigrationContext.configure(connection)):
            getattr(module, direction)()
    engine.dispose()
    command.stamp(config, revision if direction == "upgrade" else module.down_revision)


@contextmanager
def parameter_sets_sent() -> Iterator[list[int]]:
    """How many statements (parameter sets of an executemany included) reach the database."""
    sent: list[int] = []

    def count(_connection, _cursor, _statement, parameters, _context, executemany) -> None:
        sent.append(len(parameters) if executemany else 1)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)


def seed_tasks_at_0002(url: str) -> None:
    engine = engine_of(url)
    naive = engine.dialect.name == "sqlite"

    def task(user: str, minutes: int) -> dict:
        created = BASE + timedelta(minutes=minutes)
        return {"u": user, "t": f"{user} {minutes}", "c": created.replace(tzinfo=None) if naive else created}

    rows = [task("bf_big", (index * 7919) % BIG_USER_TASKS // 3) for index in range(BIG_USER_TASKS)]
    rows += [task("bf_ties", 0) for _ in range(5)]
    rows += [task("bf_reversed", 100 - index) for index in range(70)]
    with engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO task (user_id, title, completed, priority, tags, created_at, updated_at, version) "
                    "VALUES (:u, :t, false, 'low', '[]', :c, :c, 1)"),
            rows,
        )
    engine.dispose()


def placement(url: str) -> tuple[list[tuple], list[tuple]]:
    engine = engine_of(url)
    with engine.connect() as connection:
        tasks = connection.execute(sa.text("SELECT id, user_id, list_id, parent_id, position FROM task ORDER BY id")).all()
        shared = "owner_id" in {column["name"] for column in sa.inspect(connection).get_columns("list")}
        lists = connection.execute(sa.text(
            # Since 0013 (sharing) the owner is owner_id, and the position their membership's.
            "SELECT l.id, l.owner_id, l.name, l.color, l.is_default, m.position, l.version FROM list l "
            "JOIN list_member m ON m.list_id = l.id AND m.user_id = l.owner_id ORDER BY l.id"
            if shared else "SELECT id, user_id, name, color, is_default, position, version FROM list ORDER BY id"
        )).all()
    engine.dispose()
    return [tuple(row) for row in tasks], [tuple(row) for row in lists]


def seed_events_at_head(url: str) -> None:
    """Numbered and pending events of four users (one with pending events only, one with no
    pending event), ids interleaved."""
    engine = engine_of(url)
    at = BASE.replace(tzinfo=None) if engine.dialect.name == "sqlite" else BASE
    numbered = {"bf_a": 3, "bf_b": 2, "bf_c": 4}
    with engine.begin() as connection:
        insert = sa.text("INSERT INTO event (user_id, seq, type, entity_id, data, created_at) "
                         "VALUES (:u, :s, 'task.updated', 1, NULL, :at)")
        for user, count in numbered.items():
            connection.execute(insert, [{"u": user, "s": seq, "at": at} for seq in range(1, count + 1)])
            connection.execute(sa.text("INSERT INTO user_event_counter (user_id, seq) VALUES (:u, :s)"), {"u": user, "s": count})
        pending = [("bf_a", "bf_b", "bf_d")[index % 3] for index in range(300)] + ["bf_a"] * 5
        connection.execute(insert, [{"u": user, "s": None, "at": at} for user in pending])
    engine.dispose()


def numbering(url: str) -> tuple[list[tuple], list[tuple]]:
    engine = engine_of(url)
    with engine.connect() as connection:
        events = connection.execute(sa.text("SELECT id, user_id, seq FROM event ORDER BY id")).all()
        counters = connection.execute(sa.text("SELECT user_id, seq FROM user_event_counter ORDER BY user_id")).all()
    engine.dispose()
    return [tuple(row) for row in events], [tuple(row) for row in counters]


# ----------------------------------------------------------------------------- the tests

@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_0003_backfill_gives_the_old_placement(scratch_database, backend_name):
    new_way, old_way = (scratch_database(backend_name, migrate=False) for _ in range(2))
    for url in (new_way, old_way):
        command.upgrade(alembic_config(url), "0002")
        seed_tasks_at_0002(url)
    command.upgrade(alembic_config(new_way), "0003")
    run_migration(old_way, "0003", "upgrade", _backfill=old_0003_backfill)
    tasks, lists = placement(new_way)
    assert (tasks, lists) == placement(old_way)
    assert len(tasks) == BIG_USER_TASKS + 75 and len(lists) == 3
    assert {len(position) for *_, position in tasks} == {2, 3, 4}  # a0.., b00.., c000..
    for url in (new_way, old_way):  # both go on to the same schema
        command.upgrade(alembic_config(url), "head")
    assert placement(new_way) == placement(old_way)


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_0003_backfill_sends_a_few_statements_whatever_the_number_of_tasks(scratch_database, backend_name):
    url = scratch_database(backend_name, migrate=False)
    command.upgrade(alembic_config(url), "0002")
    seed_tasks_at_0002(url)
    with parameter_sets_sent() as sent:
        command.upgrade(alembic_config(url), "0003")
    assert sum(sent) < 60, f"{sum(sent)} statements for {BIG_USER_TASKS + 75} tasks"


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_0010_downgrade_numbers_pending_events_as_before(scratch_database, backend_name):
    new_way, old_way = (scratch_database(backend_name) for _ in range(2))
    for url in (new_way, old_way):
        seed_events_at_head(url)
        command.downgrade(alembic_config(url), "0010")
    with parameter_sets_sent() as sent:
        command.downgrade(alembic_config(new_way), "0009")
    run_migration(old_way, "0010", "downgrade", _number_pending=old_0010_number_pending)
    events, counters = numbering(new_way)
    assert (events, counters) == numbering(old_way)
    assert all(seq is not None for _, _, seq in events)
    assert counters == [("bf_a", 108), ("bf_b", 102), ("bf_c", 4), ("bf_d", 100)]
    assert sum(sent) < 60, f"{sum(sent)} statements for 305 pending events"


def test_0003_keys_are_the_librarys_across_every_key_length(sql_engine):
    """The SQL that numbers positions gives generate_key_between's keys, also where they grow a
    digit (a user's 63rd, 3,907th, 242,235th... task), on the test database's own arithmetic."""
    nth_key = ScriptDirectory.from_config(alembic_config("sqlite://")).get_revision("0003").module._nth_key

    def key(n: int) -> str:
        with sql_engine.connect() as connection:
            return connection.execute(sa.text(f"SELECT {nth_key(str(n))}")).scalar()

    first = 0
    for length, head in enumerate("abcdef", start=1):
        assert key(first) == head + "0" * length
        if first:
            assert generate_key_between(key(first - 1), None) == key(first)
        following = key(first)
        for _ in range(70):
            following = generate_key_between(following, None)
        assert key(first + 70) == following
        first += 62**length
