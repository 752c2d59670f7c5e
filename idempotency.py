"""`Idempotency-Key` on creation (tasks, lists): a retried POST returns the first response and creates nothing.

The key's row is written in the same transaction as what it created, so a crash records both or neither.
On PostgreSQL a transaction-scoped advisory lock on (user, key) tells a retry that arrives while
the first request is still running (409) from one that arrives after it (replay). SQLite runs one
writer at a time, so there the retry simply waits and replays. The primary key on (user, key) is
the last line of defence: a duplicate insert fails and the request replays instead.
"""
import logging
import math
import re
import time
from datetime import datetime, timedelta, timezone
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel

import fingerprints
from db import Connection, Database, DuplicateKey, Row
from errors import Conflict, IdempotencyKeyReused, ValidationFailed
from models import IdempotencyKey, UTCDateTime
from responses import to_json

log = logging.getLogger("task_api.idempotency")

key_table: sa.Table = IdempotencyKey.__table__
VALID_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII, as UUIDs and ULIDs are
RETENTION = timedelta(hours=24)
PURGE_EVERY_SECONDS = 600.0
# Namespace of our advisory locks (any fixed int4), so they cannot collide with other users'.
ADVISORY_LOCK_NAMESPACE = 7_270_736

# Not yet in this process. (Not 0.0: monotonic time counts from the machine's boot, so a process started
# in its first 10 minutes would not purge until then.)
NEVER_PURGED = -math.inf
_last_purge = NEVER_PURGED

TRY_LOCK = sa.select(
    sa.func.pg_try_advisory_xact_lock(ADVISORY_LOCK_NAMESPACE, sa.func.hashtext(sa.bindparam("lock_name", type_=sa.Text)))
)
FIND_KEY = sa.select(key_table.c.request_hash, key_table.c.task_id, key_table.c.response_body).where(
    key_table.c.user_id == sa.bindparam("owner"),
    key_table.c.key == sa.bindparam("key"),
    key_table.c.created_at >= sa.bindparam("retained_since", type_=UTCDateTime()),
)
DELETE_EXPIRED_KEY = sa.delete(key_table).where(
    key_table.c.user_id == sa.bindparam("owner"),
    key_table.c.key == sa.bindparam("key"),
    key_table.c.created_at < sa.bindparam("retained_since", type_=UTCDateTime()),
)
INSERT_KEY = sa.insert(key_table).values(
    {name: sa.bindparam(name) for name in ("user_id", "key", "request_hash", "task_id", "response_body", "created_at")}
)
PURGE_EXPIRED_KEYS = sa.delete(key_table).where(
    key_table.c.created_at < sa.bindparam("retained_since", type_=UTCDateTime())
)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def check_key(key: str) -> str:
    if not VALID_KEY.fullmatch(key):
        raise ValidationFailed(
            [{"field": "Idempotency-Key", "message": "must be 1 to 255 visible ASCII characters, e.g. a UUID"}]
        )
    return key


# Creates one thing in the given transaction: (its id, its public representation).
Creator = Callable[[Connection], Awaitable[tuple[int, dict[str, Any]]]]


async def create_once(
    db: Database, user_id: str, key: str, kind: str, request: BaseModel, create: Creator
) -> tuple[int, bytes, bool]:
    """Create it, or replay the first response for this key: (id, body, replayed). `kind` and the
    validated `request` identify the request (fingerprints.py); one key cannot create a task and a list."""
    try:
        async with db.transaction(writer=user_id) as connection:
            await _lock_or_conflict(connection, user_id, key)
            earlier = await _find(connection, user_id, key)
            if earlier is not None:
                return *_replay(earlier, kind, request), True
            created_id, representation = await create(connection)
            body = to_json(representation)
            await _remember(connection, user_id, key, fingerprints.of(kind, request), created_id, body)
            return created_id, body, False
    except DuplicateKey:  # a request with this key committed first (SQLite: no advisory lock)
        async with db.connect() as connection:
            earlier = await _find(connection, user_id, key)
        if earlier is None:
            raise
        return *_replay(earlier, kind, request), True


async def _lock_or_conflict(connection: Connection, user_id: str, key: str) -> None:
    if connection.dialect != "postgresql":
        return
    if not await connection.fetch_value(TRY_LOCK, {"lock_name": f"{user_id}\x1f{key}"}):
        raise Conflict("A request with this Idempotency-Key is still being processed. Retry in a moment.")


async def _find(connection: Connection, user_id: str, key: str) -> Row | None:
    return await connection.fetch_one(
        FIND_KEY, {"owner": user_id, "key": key, "retained_since": _utc_now() - RETENTION}
    )


def _replay(earlier: Row, kind: str, request: BaseModel) -> tuple[int, bytes]:
    """The first response, byte for byte (stored by an older version: as that version showed it)."""
    if not fingerprints.matches(earlier["request_hash"], kind, request):
        raise IdempotencyKeyReused()
    return earlier["task_id"], earlier["response_body"].encode()


async def _remember(connection: Connection, user_id: str, key: str, fingerprint: str, task_id: int, body: bytes) -> None:
    now = _utc_now()
    # Only an expired row may be replaced. A live one was committed by a concurrent request after our
    # lookup (SQLite has no advisory lock): then the insert below fails and the request replays it.
    await connection.execute(DELETE_EXPIRED_KEY, {"owner": user_id, "key": key, "retained_since": now - RETENTION})
    await connection.execute(
        INSERT_KEY,
        {"user_id": user_id, "key": key, "request_hash": fingerprint, "task_id": task_id,
         "response_body": body.decode(), "created_at": now},
    )
    await _purge_expired_now_and_then(connection, now)


async def _purge_expired_now_and_then(connection: Connection, now: datetime) -> None:
    """Expired keys go without a separate job: one keyed create in each process every few minutes
    deletes them, in its transaction."""
    global _last_purge
    if time.monotonic() - _last_purge < PURGE_EVERY_SECONDS:
        return
    _last_purge = time.monotonic()  # before the await: one purge at a time per process
    purged = await connection.execute(PURGE_EXPIRED_KEYS, {"retained_since": now - RETENTION})
    if purged:
        log.info("purged expired idempotency keys", extra={"count": purged})
