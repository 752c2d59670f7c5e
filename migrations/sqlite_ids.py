"""SQLite's AUTOINCREMENT counters across table rebuilds: ids of deleted rows are never handed out again.

A table with `sqlite_autoincrement` (task, list, reminder, event: models.py) keeps the highest id it
ever gave out in `sqlite_sequence`. A batch migration rebuilds the table on SQLite (a new table, the
rows copied, the old one dropped, the new one renamed), and the counter goes with the dropped table:
the copy's counter is the highest id copied. Ids of rows deleted after the highest survivor were
handed out again (issue 23: a task deleted before the upgrade had its id, and its ETag, reused by
the next task created after it). PostgreSQL sequences are untouched by ALTER TABLE: nothing to do.
"""
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

COUNTER = sa.text("SELECT seq FROM sqlite_sequence WHERE name = :name")
RAISE_COUNTER = sa.text("UPDATE sqlite_sequence SET seq = max(seq, :at_least) WHERE name = :name")
NEW_COUNTER = sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:name, :at_least)")


def _on_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


@contextmanager
def batch_alter_keeping_ids(table_name: str) -> Iterator[BatchOperations]:
    """`op.batch_alter_table` for a table whose ids are never reused: the rebuilt table stays
    AUTOINCREMENT (reflection does not see it) and keeps its counter."""
    saved = op.get_bind().execute(COUNTER, {"name": table_name}).scalar() if _on_sqlite() else None
    with op.batch_alter_table(table_name, table_kwargs={"sqlite_autoincrement": True}) as batch:
        yield batch
    if saved is not None:
        raise_counter(table_name, saved)


def raise_counter(table_name: str, at_least: int) -> None:
    """The table's next id is above `at_least` (SQLite; a counter is never lowered)."""
    if not _on_sqlite() or at_least <= 0:
        return
    connection = op.get_bind()
    if connection.execute(RAISE_COUNTER, {"name": table_name, "at_least": at_least}).rowcount == 0:
        # No row yet: the table never had one inserted since it was (re)created.
        connection.execute(NEW_COUNTER, {"name": table_name, "at_least": at_least})
