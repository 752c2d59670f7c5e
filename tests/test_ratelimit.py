"""Rate limiting (contract §6): per user, per client address without a valid token, configurable,
off with 0, 429 RATE_LIMITED with Retry-After; shared through Redis, per process without it, and
fail-open when Redis is unreachable.

The limiter's clock is frozen in the middle of a one-minute window, so no test straddles two."""
import logging
import os
import time
import uuid

import pytest
import redis
from fastapi.testclient import TestClient

import ratelimit
from conftest import make_settings, mint_token, unavailable
from live_server import free_port
from main import create_app

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LIMIT = 5


class FrozenClock:
    """Stands in for the `time` module inside ratelimit.py: wall time is ours, monotonic is real."""

    def __init__(self) -> None:
        self.now = (time.time() // 60) * 60 + 10.0  # 10 s into the current window

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return time.monotonic()


@pytest.fixture
def clock(monkeypatch) -> FrozenClock:
    frozen = FrozenClock()
    monkeypatch.setattr(ratelimit, "time", frozen)
    return frozen


@pytest.fixture
def make_client(database_url, clock):
    """`make_client(rate_limit_per_minute=..., redis_url=..., client=(address, port))`: a started app."""
    clients: list[TestClient] = []

    def make(*, address: str = "203.0.113.1", **overrides) -> TestClient:
        overrides.setdefault("rate_limit_per_minute", LIMIT)
        client = TestClient(
            create_app(make_settings(database_url, **overrides)), raise_server_exceptions=False, client=(address, 40000)
        )
        client.__enter__()  # run the lifespan, keep one event loop (the Redis client lives in it)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {REDIS_URL} is unreachable: {exc}")
    return REDIS_URL


def bearer(user_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(user_id)}"}


def unique_user() -> str:
    return f"rl_{uuid.uuid4().hex[:12]}"


def assert_rate_limited(response, clock: FrozenClock) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["error_code"] == "RATE_LIMITED"
    assert body["detail"] and body["timestamp"]
    assert set(body) == {"detail", "error_code", "timestamp"}
    assert response.headers["content-type"] == "application/json"
    assert response.headers["Retry-After"] == "50"  # the window ends 50 s after the frozen clock
    assert response.headers["X-Request-ID"]


def test_limit_per_user_then_429_with_retry_after(make_client, clock):
    client = make_client()
    alice = bearer(unique_user())
    for _ in range(LIMIT):
        assert client.get("/api/me", headers=alice).status_code == 200
    assert_rate_limited(client.get("/api/me", headers=alice), clock)
    assert_rate_limited(client.post("/api/tasks", json={"title": "x"}, headers=alice), clock)
    # A new window lets the user in again.
    clock.now += 60
    assert client.get("/api/me", headers=alice).status_code == 200


def test_users_are_limited_independently(make_client, clock):
    client = make_client()
    alice, bob = bearer(unique_user()), bearer(unique_user())
    for _ in range(LIMIT):
        assert client.get("/api/tasks", headers=alice).status_code == 200
    assert client.get("/api/tasks", headers=alice).status_code == 429
    for _ in range(LIMIT):
        assert client.get("/api/tasks", headers=bob).status_code == 200
    assert client.get("/api/tasks", headers=bob).status_code == 429


def test_one_user_with_several_tokens_shares_one_budget(make_client, clock):
    client = make_client()
    user_id = unique_user()
    for i in range(LIMIT):
        token = mint_token(user_id, jti=str(i))
        assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/api/me", headers=bearer(user_id)).status_code == 429


def test_unauthenticated_requests_are_limited_per_address(make_client, clock):
    first = make_client(address="198.51.100.7")
    for _ in range(LIMIT):
        assert first.get("/api/tasks").status_code == 401
    assert_rate_limited(first.get("/api/tasks"), clock)
    # A bad token is not an identity: it counts against the address too.
    assert first.get("/api/tasks", headers={"Authorization": "Bearer not.a.jwt"}).status_code == 429
    forged = mint_token(unique_user(), secret="forged-" + uuid.uuid4().hex)
    assert first.get("/api/tasks", headers={"Authorization": f"Bearer {forged}"}).status_code == 429
    # Another address has its own budget.
    second = make_client(address="198.51.100.8")
    assert second.get("/api/tasks").status_code == 401


def test_a_valid_token_is_not_limited_by_its_address(make_client, clock):
    client = make_client(address="198.51.100.9")
    for _ in range(LIMIT + 1):
        client.get("/api/tasks")
    assert client.get("/api/tasks").status_code == 429
    assert client.get("/api/me", headers=bearer(unique_user())).status_code == 200


def test_health_and_docs_are_not_limited(make_client, clock):
    client = make_client()
    for _ in range(LIMIT * 2):
        assert client.get("/health").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    user = bearer(unique_user())
    for _ in range(LIMIT):
        assert client.get("/api/me", headers=user).status_code == 200


def test_limit_is_configurable(make_client, clock):
    client = make_client(rate_limit_per_minute=2)
    user = bearer(unique_user())
    assert [client.get("/api/me", headers=user).status_code for _ in range(3)] == [200, 200, 429]


def test_zero_turns_it_off(make_client, clock):
    client = make_client(rate_limit_per_minute=0)
    user = bearer(unique_user())
    assert {client.get("/api/me", headers=user).status_code for _ in range(50)} == {200}
    assert {client.get("/api/tasks").status_code for _ in range(50)} == {401}


def test_without_redis_each_process_counts_on_its_own(make_client, clock):
    one, two = make_client(), make_client()
    user = bearer(unique_user())
    for _ in range(LIMIT):
        assert one.get("/api/me", headers=user).status_code == 200
    assert one.get("/api/me", headers=user).status_code == 429
    assert two.get("/api/me", headers=user).status_code == 200


def test_with_redis_the_limit_is_shared_by_every_instance(make_client, clock, redis_url):
    one, two = make_client(redis_url=redis_url), make_client(redis_url=redis_url)
    user_id = unique_user()
    user = bearer(user_id)
    for _ in range(3):
        assert one.get("/api/me", headers=user).status_code == 200
    for _ in range(2):
        assert two.get("/api/me", headers=user).status_code == 200
    assert_rate_limited(two.get("/api/me", headers=user), clock)
    assert_rate_limited(one.get("/api/me", headers=user), clock)
    # The counter really is in Redis, and expires.
    window = int(clock.now // 60)
    client = redis.Redis.from_url(redis_url)
    assert int(client.get(f"task-api:rl:{window}:user:{user_id}")) == LIMIT + 2
    assert 0 < client.ttl(f"task-api:rl:{window}:user:{user_id}") <= 120
    # Another user is unaffected, on either instance.
    other = bearer(unique_user())
    assert one.get("/api/me", headers=other).status_code == 200
    assert two.get("/api/me", headers=other).status_code == 200


def test_redis_unreachable_fails_open_and_logs_a_warning(make_client, clock):
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(level=logging.WARNING)
    logger = logging.getLogger("task_api.ratelimit")
    logger.addHandler(handler)
    try:
        client = make_client(redis_url=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
        user = bearer(unique_user())
        started = time.monotonic()
        statuses = [client.get("/api/me", headers=user).status_code for _ in range(LIMIT)]
        elapsed = time.monotonic() - started
    finally:
        logger.removeHandler(handler)
    assert statuses == [200] * LIMIT  # served
    assert elapsed < 5, f"{LIMIT} requests took {elapsed:.1f} s with Redis down"
    warnings = [r for r in records if r.levelno == logging.WARNING and "redis" in r.getMessage().lower()]
    assert warnings, [r.getMessage() for r in records]
    # Still limited, per process, while Redis is away.
    assert client.get("/api/me", headers=user).status_code == 429
