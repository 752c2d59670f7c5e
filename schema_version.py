"""Is the database's schema the one this code was written for? (issue 23, #14)

The code's revision is the head of migrations/ (alembic's ScriptDirectory), worked out once per
process; the database's is what `alembic upgrade head` wrote in `alembic_version`. Out of step
either way, the service does not work: behind (a migration has not run), routes fail on missing
tables and columns; ahead (an older version on an upgraded database), writes may skip what the
newer schema needs (the round-2 version on an upgraded database wrote tasks without their events).

/health/ready reads the revision on every probe (the one query it sends, which also says the database
answers) and is 503 while they differ. A request that fails on a missing table or column asks again
at most every RECHECK_SECONDS, and answers 503 naming the revisions instead of a 500.
"""
import functools
import logging
import time
from dataclasses import dataclass

import sqlalchemy as sa
from alembic.script import ScriptDirectory

from db import PROJECT_DIR, Database, SchemaMismatch

log = logging.getLogger("task_api.schema")

RECHECK_SECONDS = 5.0
READ_REVISIONS = sa.select(sa.column("version_num", sa.String)).select_from(sa.table("alembic_version"))


@functools.cache
def code_revisions() -> tuple[frozenset[str], frozenset[str]]:
    """(the head revisions of migrations/, every revision it has)."""
    script = ScriptDirectory(str(PROJECT_DIR / "migrations"))
    return frozenset(script.get_heads()), frozenset(revision.revision for revision in script.walk_revisions())


@dataclass(frozen=True)
class Revisions:
    found: frozenset[str]  # in the database; empty: never migrated
    expected: frozenset[str]  # the code's head
    known: frozenset[str]  # every revision the code has

    @property
    def in_step(self) -> bool:
        return self.found == self.expected

    def problem(self) -> str:
        """What is wrong and what to do, for an operator (only when not in step)."""
        found, expected = _spelt(self.found), _spelt(self.expected)
        if not self.found:
            return (f"The database has no schema yet (no alembic_version). Run `alembic upgrade head` (this version "
                    f"needs {expected}).")
        if self.found <= self.known:
            return (f"The database schema is at revision {found}; this version of the service needs {expected}. "
                    "Run `alembic upgrade head`.")
        return (f"The database schema is at revision {found}, newer than this version of the service knows (its "
                f"newest is {expected}): an older version runs on an upgraded database. Run the version that upgraded "
                "it; `alembic upgrade head` from this one cannot help.")

    def fields(self) -> dict[str, str | None]:
        return {"schema_revision": _spelt(self.found) or None, "code_revision": _spelt(self.expected)}


def _spelt(revisions: frozenset[str]) -> str:
    return ", ".join(sorted(revisions))


class SchemaVersion:
    """The database's revision against the code's; the last answer is kept for the error path."""

    def __init__(self) -> None:
        self.expected, self.known = code_revisions()
        self._last: Revisions | None = None
        self._checked_at = 0.0

    async def check(self, db: Database, max_age: float = 0.0) -> Revisions:
        """Read the database's revision (or reuse one read at most `max_age` seconds ago).
        DatabaseUnavailable when the database does not answer."""
        if self._last is not None and time.monotonic() - self._checked_at <= max_age:
            return self._last
        revisions = Revisions(await _read(db), self.expected, self.known)
        if not revisions.in_step and (self._last is None or self._last.found != revisions.found):
            log.error("database schema out of step with the code", extra={"problem": revisions.problem()})
        self._last, self._checked_at = revisions, time.monotonic()
        return revisions


async def _read(db: Database) -> frozenset[str]:
    async with db.connect() as connection:
        try:
            rows = await connection.fetch_all(READ_REVISIONS)
        except SchemaMismatch:  # no alembic_version table: never migrated
            return frozenset()
    return frozenset(row["version_num"] for row in rows)
