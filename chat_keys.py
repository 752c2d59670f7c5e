"""`Idempotency-Key` on `POST /api/chat`: a retried turn returns the first answer and runs nothing again.

A turn is not one transaction (it waits on the model between its writes), so its key is claimed
before it starts and answered when it ends, in the `idempotency_key` table beside the task keys
(same user scoping, same 24 h retention and purge). The row's `task_id` holds the turn's user
message, `response_body` the answer ('' while there is none), and `created_at`, while there is no
answer, when the current attempt claimed the key: a claim is held for a lease of the chat timeout
plus a margin.

- The same key again, answered: the first answer, replayed (a different body: 422).
- Unanswered, within the lease: the first attempt is still running, 409.
- Unanswered, after the lease (the attempt failed, or its process died): this attempt takes over
  the same turn. It adds no second user message, and the model sees the tool calls that already
  ran, so a retry after a failure does not do them twice. A failed attempt ends its lease at once.
"""
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol, TypeVar

import sqlalchemy as sa

import dates
import fingerprints
from db import Connection, Database, DuplicateKey
from errors import Conflict, IdempotencyKeyReused
from idempotency import RETENTION, key_table
from models import UTCDateTime

LEASE_MARGIN_SECONDS = 10.0
_k = key_table.c
_KEY = (_k.user_id == sa.bindparam("owner"), _k.key == sa.bindparam("key"))
FIND = sa.select(_k.request_hash, _k.task_id, _k.response_body, _k.created_at).where(*_KEY).with_for_update()
DELETE_EXPIRED = sa.delete(key_table).where(*_KEY, _k.created_at < sa.bindparam("retained_since", type_=UTCDateTime()))
INSERT = sa.insert(key_table).values(
    user_id=sa.bindparam("owner"), key=sa.bindparam("key"), request_hash=sa.bindparam("request_hash"),
    task_id=sa.bindparam("message_id"), response_body="", created_at=sa.bindparam("now", type_=UTCDateTime()),
)
SET_MESSAGE = sa.update(key_table).where(*_KEY).values(task_id=sa.bindparam("message_id"))
RENEW = sa.update(key_table).where(*_KEY, _k.response_body == "").values(
    created_at=sa.bindparam("now", type_=UTCDateTime())
)
ANSWER = sa.update(key_table).where(*_KEY).values(
    response_body=sa.bindparam("body"), created_at=sa.bindparam("now", type_=UTCDateTime())
)


@dataclass(frozen=True)
class TurnKey:
    user_id: str
    key: str
    fingerprint: str


@dataclass(frozen=True)
class Claimed:
    """This attempt runs the turn: a new one (`message_id` None) or the unanswered turn it resumes."""

    message_id: int | None


@dataclass(frozen=True)
class Answered:
    body: bytes


class Started(Protocol):
    message_id: int


S = TypeVar("S", bound=Started)


def turn_key(user_id: str, key: str, message: str, conversation_id: int | None) -> TurnKey:
    return TurnKey(user_id, key, fingerprints.of_values("chat", {"message": message, "conversation_id": conversation_id}))


async def claim(connection: Connection, turn: TurnKey, lease_seconds: float) -> Claimed | Answered:
    """In the caller's transaction. A concurrent first claim of the same key makes the insert fail
    (DuplicateKey): the caller's transaction is undone, and its retry sees the claim (409)."""
    now = dates.utc_now()
    params = {"owner": turn.user_id, "key": turn.key}
    await connection.execute(DELETE_EXPIRED, {**params, "retained_since": now - RETENTION})
    row = await connection.fetch_one(FIND, params)
    if row is None:
        await connection.execute(INSERT, {**params, "request_hash": turn.fingerprint, "message_id": 0, "now": now})
        return Claimed(None)
    if row["request_hash"] != turn.fingerprint:
        raise IdempotencyKeyReused()
    if row["response_body"]:
        return Answered(row["response_body"].encode())
    if row["created_at"] > now - timedelta(seconds=lease_seconds + LEASE_MARGIN_SECONDS):
        raise Conflict("This turn (its Idempotency-Key) is still running. Retry in a moment.")
    await connection.execute(RENEW, {**params, "now": now})
    return Claimed(row["task_id"] or None)


async def claim_once(
    db: Database, turn: TurnKey, lease_seconds: float, start: Callable[[Connection, Claimed], Awaitable[S]]
) -> tuple[Claimed | Answered, S | None]:
    """claim() and `start(connection, claimed)` (which stores the turn's user message) in one
    transaction: (the claim, what start returned). Two first claims at once: one 409."""
    try:
        async with db.transaction() as connection:
            claimed = await claim(connection, turn, lease_seconds)
            if isinstance(claimed, Answered):
                return claimed, None
            started = await start(connection, claimed)
            await connection.execute(SET_MESSAGE, {"owner": turn.user_id, "key": turn.key, "message_id": started.message_id})
            return claimed, started
    except DuplicateKey:
        raise Conflict("This turn (its Idempotency-Key) is still running. Retry in a moment.") from None


async def answer(connection: Connection, turn: TurnKey, body: bytes) -> None:
    await connection.execute(ANSWER, {"owner": turn.user_id, "key": turn.key, "body": body.decode(), "now": dates.utc_now()})


async def give_back(db: Database, turn: TurnKey, lease_seconds: float) -> None:
    """A failed attempt ends its lease now, so that a retry takes the turn over at once."""
    expired = dates.utc_now() - timedelta(seconds=lease_seconds + LEASE_MARGIN_SECONDS + 1)
    async with db.connect() as connection:
        await connection.execute(RENEW, {"owner": turn.user_id, "key": turn.key, "now": expired})
