"""Requests per minute, per user (from a valid token) or per client address (without one).

Fixed one-minute windows. With REDIS_URL the counters live in Redis and every instance shares
them; without it, or while Redis is unreachable (logged, retried every few seconds), each process
counts on its own: the service fails open rather than refusing traffic.
"""
import logging
import time

import redis.asyncio as redis
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

import metrics
from auth import TokenVerifier
from errors import RateLimited, Unauthorized

log = logging.getLogger("task_api.ratelimit")

WINDOW_SECONDS = 60
EXEMPT_PREFIXES = ("/health", "/metrics", "/docs", "/openapi.json", "/static-offline-docs")
REDIS_RETRY_SECONDS = 5.0


class LocalCounter:
    """Per-process counters for the current window; older windows are dropped as time moves on."""

    def __init__(self) -> None:
        self._window = -1
        self._counts: dict[str, int] = {}

    async def hit(self, key: str, window: int) -> int:
        if window != self._window:
            self._window, self._counts = window, {}
        self._counts[key] = self._counts.get(key, 0) + 1
        return self._counts[key]


class RedisCounter:
    def __init__(self, url: str):
        self._client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._down_until = 0.0

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    async def hit(self, key: str, window: int) -> int | None:
        """The count after this hit, or None when Redis cannot be reached (the caller falls back)."""
        redis_key = f"task-api:rl:{window}:{key}"
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.incr(redis_key)
                pipe.expire(redis_key, WINDOW_SECONDS * 2)
                count, _ = await pipe.execute()
            return int(count)
        except (redis.RedisError, OSError) as exc:
            self._down_until = time.monotonic() + REDIS_RETRY_SECONDS
            log.warning("redis unreachable; rate limiting per process for now", extra={"error": type(exc).__name__})
            return None

    async def close(self) -> None:
        await self._client.aclose()


class WindowCounter:
    """Hits per window and identity: in Redis while it answers (shared by every instance), else in
    this process."""

    def __init__(self, shared: RedisCounter | None):
        self.local = LocalCounter()
        self.shared = shared

    async def hit(self, identity: str, window: int) -> int:
        if self.shared is not None and self.shared.available:
            count = await self.shared.hit(identity, window)
            if count is not None:
                return count
        return await self.local.hit(identity, window)


def limit_exceeded(per_minute: int, now: float, what: str = "requests") -> RateLimited:
    """The 429, with the seconds until the window turns in Retry-After."""
    metrics.record_rate_limited()
    window = int(now // WINDOW_SECONDS)
    retry_after = str(max(1, int((window + 1) * WINDOW_SECONDS - now + 0.999)))
    return RateLimited(
        f"Too many {what}: the limit is {per_minute} a minute. Retry after {retry_after} s.",
        headers={"Retry-After": retry_after},
    )


class UserLimit:
    """A limit of its own per user, counted apart from the general one (chat turns cost model tokens:
    CHAT_RATE_LIMIT_PER_MINUTE)."""

    def __init__(self, name: str, per_minute: int, shared: RedisCounter | None):
        self.name = name
        self.per_minute = per_minute
        self.counter = WindowCounter(shared)

    async def check(self, user_id: str, what: str = "requests") -> None:
        """Count one hit for the user; past the limit, RateLimited."""
        if self.per_minute <= 0:
            return
        now = time.time()
        if await self.counter.hit(f"{self.name}:user:{user_id}", int(now // WINDOW_SECONDS)) > self.per_minute:
            raise limit_exceeded(self.per_minute, now, what)


class RateLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        per_minute: int,
        verifier: TokenVerifier,
        shared: RedisCounter | None,
        deferred_prefixes: tuple[str, ...] = (),
    ):
        """`deferred_prefixes`: paths whose app answers the limit itself (/mcp: a tool call's limit
        is a tool error); the error goes to it in `scope["state"]["rate_limited"]`."""
        self.app = app
        self.deferred_prefixes = deferred_prefixes
        self.per_minute = per_minute
        self.verifier = verifier
        self.counter = WindowCounter(shared)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or scope["path"].startswith(EXEMPT_PREFIXES):
            return await self.app(scope, receive, send)
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        count = await self.counter.hit(await self._identity(scope), window)
        if count > self.per_minute:
            error = limit_exceeded(self.per_minute, now)
            if self.deferred_prefixes and scope["path"].startswith(self.deferred_prefixes):
                scope.setdefault("state", {})["rate_limited"] = error
                return await self.app(scope, receive, send)
            return await error.to_response()(scope, receive, send)
        await self.app(scope, receive, send)

    async def _identity(self, scope: Scope) -> str:
        """`user:<sub>` for a valid token (verified once; the route reuses it), else `ip:<address>`."""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and token.strip():
                    principal = self.verifier.cached(token.strip())
                    try:
                        if principal is None:  # in the threadpool: an unknown kid may fetch the JWKS
                            principal = await run_in_threadpool(self.verifier.verify, token.strip())
                    except Unauthorized:
                        break
                    scope.setdefault("state", {})["principal"] = principal
                    return f"user:{principal.user_id}"
                break
        client = scope.get("client")
        return f"ip:{client[0] if client else 'unknown'}"
