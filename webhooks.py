"""Outbound events: every event POSTed to EVENTS_WEBHOOK_URL as a CloudEvents 1.0 JSON document,
signed the Standard Webhooks way when EVENTS_WEBHOOK_SECRET is set (contract §10).

The event table is the outbox (events.py writes it in the same transaction as the change); this
module drains it:

- At least once, in order per user. `webhook_delivery.delivered_seq` says how far each user's
  events went out; it moves past an event only after the receiver answered 2xx, so a crash between
  the answer and that write sends the event again (same `id`: receivers dedupe by it). An event is
  sent only after the user's earlier ones were acknowledged. Any other answer, a refused
  connection or a timeout holds that user's queue back (`retry_at`, exponential backoff with a cap
  and jitter); other users' events keep flowing. A 4xx is retried too: Dapr answers 404/403 for a
  misconfigured pubsub or topic, and a paused queue that resumes once it is fixed beats lost events.
- One delivering process across all workers and instances: a lease row (`webhook_lease`), taken
  and renewed by short single-statement transactions (safe behind PgBouncer in transaction mode).
  The holder bumps its token every RENEW_SECONDS; another process takes over after it has seen the
  same token for LEASE_SECONDS on its own monotonic clock (no wall clocks to agree). The holder
  stops sending when its last renewal is LEASE_SECONDS / 2 old, well before anyone may take over.
- Nothing holds a database connection while waiting for the receiver, and the receiver's answer
  is bounded by EVENTS_WEBHOOK_TIMEOUT_SECONDS.
"""
import asyncio
import base64
import hashlib
import hmac
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

import events
from config import Settings
from db import Database, DatabaseUnavailable, Row
from models import Event, UserEventCounter, UTCDateTime, WebhookDelivery, WebhookLease
from responses import to_json

log = logging.getLogger("task_api.webhooks")

event_table: sa.Table = Event.__table__
counter_table: sa.Table = UserEventCounter.__table__
delivery_table: sa.Table = WebhookDelivery.__table__
lease_table: sa.Table = WebhookLease.__table__

CONTENT_TYPE = "application/cloudevents+json"
USER_AGENT = "task-api-webhooks/1.0"
# In EVENTS_WEBHOOK_URL, replaced by the user id (URL-encoded, `.` and `..` too): a Dapr sidecar's
# `?metadata.partitionKey={subject}` keeps each user's events on one Kafka partition, in order.
SUBJECT_PLACEHOLDER = "{subject}"
LEASE_NAME = "events-webhook"  # the row migration 0006 creates
LEASE_SECONDS = 10.0
RENEW_SECONDS = 2.0
POLL_SECONDS = 0.5  # how often the holder looks for new events when idle
CONCURRENCY = 8  # users delivered at the same time (each user's events one after the other)
BATCH = 100  # events of one user read at once
FIRST_RETRY_SECONDS = 1.0
MAX_RESPONSE_BYTES = 64 * 1024  # read (and drop) at most this much of a receiver's answer
RETRY_AFTER_CAP_SECONDS = 3600.0

# ----------------------------------------------------------------------------- statements

_c, _d, _e, _l = counter_table.c, delivery_table.c, event_table.c, lease_table.c
_delivered = sa.func.coalesce(_d.delivered_seq, 0)

# Users with events past what was delivered, not waiting out a backoff; least recently served first.
PENDING_USERS = (
    sa.select(
        _c.user_id,
        _c.seq.label("last_seq"),
        _delivered.label("delivered_seq"),
        sa.func.coalesce(_d.failures, 0).label("failures"),
    )
    .select_from(counter_table.outerjoin(delivery_table, _d.user_id == _c.user_id))
    .where(_c.seq > _delivered, sa.or_(_d.retry_at.is_(None), _d.retry_at <= sa.bindparam("now", type_=UTCDateTime())))
    .order_by(_d.updated_at.is_not(None), _d.updated_at)
    .limit(sa.bindparam("limit", type_=sa.Integer))
)
# Numbered but not delivered, plus not numbered yet (events.sequence).
PENDING_COUNT = sa.select(
    sa.select(sa.func.coalesce(sa.func.sum(_c.seq - _delivered), 0))
    .select_from(counter_table.outerjoin(delivery_table, _d.user_id == _c.user_id))
    .where(_c.seq > _delivered)
    .scalar_subquery()
    + sa.select(sa.func.count()).select_from(event_table).where(_e.seq.is_(None)).scalar_subquery()
)
EVENTS_AFTER = (
    sa.select(_e.id, _e.seq, _e.type, _e.entity_id, _e.data, _e.created_at, _e.actor)
    .where(_e.user_id == sa.bindparam("owner"), _e.seq > sa.bindparam("after", type_=sa.BigInteger))
    .order_by(_e.seq)
    .limit(BATCH)
)


def _upsert_delivery(insert: Any, updated: tuple[str, ...], *, only_forward: bool) -> sa.Insert:
    statement = insert(delivery_table).values(
        {column.name: sa.bindparam(column.name, type_=column.type) for column in delivery_table.columns}
    )
    return statement.on_conflict_do_update(
        index_elements=[_d.user_id],
        set_={name: statement.excluded[name] for name in updated},
        where=_d.delivered_seq < statement.excluded.delivered_seq if only_forward else None,
    )


_ACKNOWLEDGED = ("delivered_seq", "failures", "retry_at", "last_error", "updated_at")
_FAILED = ("failures", "retry_at", "last_error", "updated_at")
# Per dialect (ON CONFLICT is not in SQLAlchemy's generic INSERT). An acknowledgement never moves
# delivered_seq backwards (a former lease holder's late answer); a failure never moves it at all.
ACKNOWLEDGE = {
    "postgresql": _upsert_delivery(postgresql.insert, _ACKNOWLEDGED, only_forward=True),
    "sqlite": _upsert_delivery(sqlite.insert, _ACKNOWLEDGED, only_forward=True),
}
RECORD_FAILURE = {
    "postgresql": _upsert_delivery(postgresql.insert, _FAILED, only_forward=False),
    "sqlite": _upsert_delivery(sqlite.insert, _FAILED, only_forward=False),
}

READ_LEASE = sa.select(_l.holder, _l.token).where(_l.name == sa.bindparam("name"))
RENEW_LEASE = (
    sa.update(lease_table).where(_l.name == sa.bindparam("name"), _l.holder == sa.bindparam("me")).values(token=_l.token + 1)
)
TAKE_LEASE = (
    sa.update(lease_table)
    .where(_l.name == sa.bindparam("name"), _l.token == sa.bindparam("seen_token", type_=sa.BigInteger))
    .values(holder=sa.bindparam("new_holder"), token=_l.token + 1)
)
RELEASE_LEASE = (
    sa.update(lease_table)
    .where(_l.name == sa.bindparam("name"), _l.holder == sa.bindparam("me"))
    .values(holder=None, token=_l.token + 1)
)

# ----------------------------------------------------------------------------- the message


def message_id(event: Row) -> str:
    """The CloudEvents `id` and the `webhook-id`: the event's global id, the same on every retry."""
    return f"evt_{event['id']}"


def cloud_event(event: Row, user_id: str, source: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": message_id(event),
        "source": source,
        "type": event["type"],
        "subject": user_id,
        "time": event["created_at"],
        "datacontenttype": "application/json",
        "data": events.as_change(event),
    }


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))."""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def request_headers(msg_id: str, body: bytes, key: bytes | None, now: float) -> dict[str, str]:
    timestamp = int(now)  # fresh on every attempt, as the receiver checks it against its clock
    headers = {"content-type": CONTENT_TYPE, "webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
    if key is not None:
        headers["webhook-signature"] = sign(key, msg_id, timestamp, body)
    return headers


def retry_delay(failures: int, cap: float, retry_after: float | None = None, rand: Callable[[], float] = random.random) -> float:
    """The pause after the `failures`-th failure in a row: 1 s, 2 s, 4 s... up to `cap`, of which a
    random half ("equal jitter": receivers coming back are not hit by every queue at once). A
    receiver's Retry-After lengthens it, never beyond the cap."""
    ceiling = min(cap, FIRST_RETRY_SECONDS * 2 ** min(failures - 1, 32))
    delay = ceiling / 2 + rand() * ceiling / 2
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


def url_for(url: str, user_id: str) -> str:
    if SUBJECT_PLACEHOLDER not in url:
        return url
    subject = quote(user_id, safe="")
    if subject in (".", ".."):  # a dot segment: the HTTP client would collapse it and change the path
        subject = subject.replace(".", "%2E")
    return url.replace(SUBJECT_PLACEHOLDER, subject)


def receiver_name(url: str) -> str:
    """The URL for logs: no credentials, no query string (either may hold a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


@dataclass(frozen=True)
class Failure:
    reason: str  # "HTTP 500", "ConnectError", "timeout"
    retry_after: float | None = None


def _retry_after(value: str | None) -> float | None:
    try:
        return min(max(float(value), 0.0), RETRY_AFTER_CAP_SECONDS) if value else None
    except ValueError:  # an HTTP date: rare from a webhook receiver; the backoff applies
        return None


# ----------------------------------------------------------------------------- the lease


class Lease:
    """One holder at a time across processes; see the module docstring."""

    def __init__(self, db: Database, *, seconds: float = LEASE_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.db = db
        self.seconds = seconds
        self.clock = clock
        self.me = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"[:255]
        self.renewed_at: float | None = None  # when the last take or renewal was sent; None: not held
        self._seen: tuple[int, float] | None = None  # (another holder's token, when first seen)

    @property
    def held(self) -> bool:
        return self.renewed_at is not None and self.clock() - self.renewed_at < self.seconds / 2

    async def refresh(self) -> bool:
        """Renew the lease if held, take it if vacant or stale; whether this process holds it now."""
        started = self.clock()
        async with self.db.connect() as connection:
            if self.renewed_at is not None:
                if await connection.execute(RENEW_LEASE, {"name": LEASE_NAME, "me": self.me}) == 1:
                    self.renewed_at = started
                    return True
                self.renewed_at = None
                log.warning("another process took over webhook delivery")
            row = await connection.fetch_one(READ_LEASE, {"name": LEASE_NAME})
            if row is None:
                raise RuntimeError("the webhook_lease row is missing: run `alembic upgrade head`")
            if self._seen is None or self._seen[0] != row["token"]:
                self._seen = (row["token"], started)
            stale = started - self._seen[1] >= self.seconds
            if row["holder"] is None or stale:
                taken = await connection.execute(
                    TAKE_LEASE, {"name": LEASE_NAME, "seen_token": row["token"], "new_holder": self.me}
                )
                if taken == 1:
                    self.renewed_at, self._seen = started, None
                    return True
        return False

    async def release(self) -> None:
        if self.renewed_at is not None:
            self.renewed_at = None
            async with self.db.connect() as connection:
                await connection.execute(RELEASE_LEASE, {"name": LEASE_NAME, "me": self.me})


# ----------------------------------------------------------------------------- delivery


class Dispatcher:
    """Runs in every worker process (started by the app's lifespan); only the lease holder sends."""

    def __init__(self, settings: Settings, db: Database):
        assert settings.events_webhook_url is not None
        self.db = db
        self.url = settings.events_webhook_url
        self.receiver = receiver_name(self.url)
        self.source = settings.events_webhook_source
        self.key = settings.events_webhook_key
        self.timeout = settings.events_webhook_timeout_seconds
        self.max_backoff = settings.events_webhook_max_backoff_seconds
        self.lease = Lease(db)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="webhook-dispatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:  # hand over at once instead of after LEASE_SECONDS
            async with asyncio.timeout(RENEW_SECONDS):
                await self.lease.release()
        except Exception:  # shutting down anyway; the lease expires by itself
            pass

    async def _run(self) -> None:
        log.info("webhook delivery enabled", extra={"receiver": self.receiver, "signed": self.key is not None})
        async with httpx.AsyncClient(
            timeout=self.timeout, follow_redirects=False, headers={"user-agent": USER_AGENT}
        ) as client:
            delivering: asyncio.Task | None = None
            try:
                while True:
                    await self._refresh_lease()
                    if delivering is not None and (delivering.done() or not self.lease.held):
                        await _cancel(delivering)
                        delivering = None
                    if delivering is None and self.lease.held:
                        delivering = asyncio.get_running_loop().create_task(self._deliver(client))
                    await asyncio.sleep(RENEW_SECONDS)
            finally:
                if delivering is not None:
                    await _cancel(delivering)

    async def _refresh_lease(self) -> None:
        try:
            async with asyncio.timeout(RENEW_SECONDS):
                await self.lease.refresh()
        except (DatabaseUnavailable, TimeoutError) as error:
            log.warning("webhook lease not renewed: database unavailable", extra={"error_type": type(error).__name__})
        except Exception:
            log.exception("webhook lease not renewed")

    async def _deliver(self, client: httpx.AsyncClient) -> None:
        """While the lease is held: keep up to CONCURRENCY users' queues draining."""
        in_flight: dict[str, asyncio.Task] = {}
        try:
            while self.lease.held:
                if len(in_flight) < CONCURRENCY:
                    for user in await self._pending_users(CONCURRENCY + len(in_flight)):
                        if user["user_id"] not in in_flight and len(in_flight) < CONCURRENCY:
                            in_flight[user["user_id"]] = asyncio.get_running_loop().create_task(
                                self._deliver_user(client, user)
                            )
                if not in_flight:
                    await asyncio.sleep(POLL_SECONDS)
                    continue
                await asyncio.wait(in_flight.values(), timeout=POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED)
                for user_id, task in list(in_flight.items()):
                    if task.done():
                        del in_flight[user_id]
                        if not task.cancelled() and task.exception() is not None:
                            _log_error(task.exception())
        finally:
            for task in in_flight.values():
                task.cancel()
            await asyncio.gather(*in_flight.values(), return_exceptions=True)

    async def _pending_users(self, limit: int) -> list[Row]:
        try:
            await events.sequence_everyone(self.db)  # what committed since the last look gets its numbers
            async with self.db.connect() as connection:
                return await connection.fetch_all(PENDING_USERS, {"now": _utc_now(), "limit": limit})
        except DatabaseUnavailable as error:
            _log_error(error)
            return []

    async def _deliver_user(self, client: httpx.AsyncClient, user: Row) -> None:
        """Send one user's next events in order; stop at the first failure (its retry is scheduled)."""
        user_id, delivered_seq, failures = user["user_id"], user["delivered_seq"], user["failures"]
        async with self.db.connect() as connection:
            batch = await connection.fetch_all(EVENTS_AFTER, {"owner": user_id, "after": delivered_seq})
        if not batch:  # counted but no longer there: the retention purge removed them first
            log.warning("events purged before delivery", extra={"count": user["last_seq"] - delivered_seq})
            await self._acknowledge(user_id, user["last_seq"])
            return
        for event in batch:
            if not self.lease.held:
                return
            failure = await self._send(client, event, user_id)
            if failure is not None:
                await self._record_failure(user_id, delivered_seq, failures + 1, failure, message_id(event))
                return
            await self._acknowledge(user_id, event["seq"])
            delivered_seq, failures = event["seq"], 0

    async def _send(self, client: httpx.AsyncClient, event: Row, user_id: str) -> Failure | None:
        """One POST; None when the receiver acknowledged it (2xx)."""
        msg_id = message_id(event)
        body = to_json(cloud_event(event, user_id, self.source))
        headers = request_headers(msg_id, body, self.key, time.time())
        try:
            async with asyncio.timeout(self.timeout):  # the whole exchange, not each phase
                async with client.stream("POST", url_for(self.url, user_id), content=body, headers=headers) as response:
                    status, retry_after = response.status_code, response.headers.get("retry-after")
                    await _drain(response)
        except TimeoutError:
            return Failure("timeout")
        except httpx.HTTPError as error:
            return Failure(type(error).__name__)
        if 200 <= status < 300:
            return None
        return Failure(f"HTTP {status}", _retry_after(retry_after))

    async def _acknowledge(self, user_id: str, seq: int) -> None:
        async with self.db.connect() as connection:
            await connection.execute(
                ACKNOWLEDGE[connection.dialect],
                {"user_id": user_id, "delivered_seq": seq, "failures": 0, "retry_at": None, "last_error": None,
                 "updated_at": _utc_now()},
            )

    async def _record_failure(self, user_id: str, delivered_seq: int, failures: int, failure: Failure, msg_id: str) -> None:
        delay = retry_delay(failures, self.max_backoff, failure.retry_after)
        now = _utc_now()
        log.warning(
            "webhook delivery failed; will retry",
            extra={"receiver": self.receiver, "event_id": msg_id, "reason": failure.reason, "failures": failures,
                   "retry_in_seconds": round(delay, 1)},
        )
        async with self.db.connect() as connection:
            await connection.execute(
                RECORD_FAILURE[connection.dialect],
                {"user_id": user_id, "delivered_seq": delivered_seq, "failures": failures,
                 "retry_at": now + timedelta(seconds=delay), "last_error": failure.reason[:200], "updated_at": now},
            )


async def pending_count(db: Database) -> int:
    """Events recorded but not yet acknowledged by the webhook receiver (the /metrics gauge)."""
    async with db.connect() as connection:
        return int(await connection.fetch_value(PENDING_COUNT) or 0)


async def _drain(response: httpx.Response) -> None:
    received = 0
    async for chunk in response.aiter_raw():
        received += len(chunk)
        if received > MAX_RESPONSE_BYTES:
            break


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    results = await asyncio.gather(task, return_exceptions=True)
    if results and isinstance(results[0], Exception):
        _log_error(results[0])


def _log_error(error: BaseException) -> None:
    if isinstance(error, DatabaseUnavailable):
        log.warning("webhook delivery paused: database unavailable", extra={"error_type": type(error.__cause__ or error).__name__})
    else:
        log.error("webhook delivery failed unexpectedly", exc_info=error)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)
