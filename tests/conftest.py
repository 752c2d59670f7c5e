"""One suite, two databases: every test that takes `api` (or `app`) runs on SQLite and on PostgreSQL.

PostgreSQL comes from TEST_DATABASE_URL (default: the local server's `test` database); the suite
creates a scratch database next to it and drops it at the end. Unreachable PostgreSQL skips those
tests, except under CI (CI set), where it fails the run.
"""
import os
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import jwt
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

TEST_SECRET = "test-secret-" + secrets.token_urlsafe(48)  # 64+ bytes: long enough for HS512
# main.py builds `app` at import from the environment; give it a valid one before any import.
os.environ.setdefault("BETTER_AUTH_SECRET", TEST_SECRET)
os.environ["BETTER_AUTH_SECRET"] = TEST_SECRET
os.environ.setdefault("DATABASE_URL", "sqlite:///:memory:")
os.environ.setdefault("RATE_LIMIT_PER_MINUTE", "0")

from fastapi.testclient import TestClient  # noqa: E402

from config import Settings  # noqa: E402
from db import upgrade_schema  # noqa: E402
from main import create_app  # noqa: E402

DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS = ["sqlite", "postgres"]


def unavailable(message: str) -> NoReturn:
    """Something a test needs (a server, a tool) is missing: skip, except under CI, where
    everything must run, so it fails."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: this must run)")
    pytest.skip(message)


def postgres_admin_url() -> str:
    return os.environ.get("TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL


def _postgres_reachable(url: str) -> str | None:
    try:
        engine = sa.create_engine(Settings.normalise_database_url(url), connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        engine.dispose()
        return None
    except sa.exc.SQLAlchemyError as exc:
        return str(exc).splitlines()[0]


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The admin URL of a reachable PostgreSQL, or a skip (a failure under CI)."""
    url = postgres_admin_url()
    problem = _postgres_reachable(url)
    if problem:
        unavailable(f"PostgreSQL at {make_url(url).render_as_string(hide_password=True)} is unreachable: {problem}")
    return url


@pytest.fixture(scope="session")
def scratch_database(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A factory of empty, migrated databases: `scratch_database("sqlite" | "postgres")` -> URL."""
    created: list[tuple[str, str]] = []

    def make(backend: str, *, migrate: bool = True) -> str:
        if backend == "sqlite":
            path = request.config._tmp_path_factory.mktemp("db") / "tasks.db"  # type: ignore[attr-defined]
            url = f"sqlite:///{path}"
        else:
            admin_url = request.getfixturevalue("postgres_server_url")
            name = f"taskapi_test_{uuid.uuid4().hex[:12]}"
            _run_autocommit(admin_url, f'CREATE DATABASE "{name}"')
            created.append((admin_url, name))
            url = make_url(Settings.normalise_database_url(admin_url)).set(database=name).render_as_string(
                hide_password=False
            )
        if migrate:
            upgrade_schema(Settings.normalise_database_url(url))
        return url

    yield make
    for admin_url, name in created:
        _run_autocommit(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run_autocommit(admin_url: str, statement: str) -> None:
    engine = sa.create_engine(Settings.normalise_database_url(admin_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql(statement)
    engine.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def database_url(backend: str, scratch_database: Any) -> str:
    return scratch_database(backend)


@pytest.fixture(scope="session")
def sql_engine(database_url: str) -> Iterator[sa.Engine]:
    """A plain SQLAlchemy engine on the test database, for tests that look at or age rows directly."""
    engine = sa.create_engine(Settings.normalise_database_url(database_url))
    yield engine
    engine.dispose()


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "better_auth_secret": TEST_SECRET,
        "rate_limit_per_minute": 0,
        "log_level": "WARNING",
        # No background reminder loop in the in-process apps: its statements would mix into tests
        # that count statements. tests/test_reminders.py fires explicitly, and through real servers.
        "reminder_poll_seconds": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="session")
def app(database_url: str):
    return create_app(make_settings(database_url))


@pytest.fixture(scope="session")
def client(app) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def mint_token(sub: str | None = "user", *, secret: str = TEST_SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    """An HS token like Better Auth's shared-secret setup makes. Pass exp=..., drop claims with None."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + 3600, **claims}
    payload = {key: value for key, value in payload.items() if value is not None}
    return jwt.encode(payload, secret, algorithm=algorithm)


@pytest.fixture
def make_token():
    return mint_token


@dataclass
class ApiUser:
    """A caller with its own token: `alice.post("/api/tasks", json={...})`."""

    client: TestClient
    user_id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def request(self, method: str, url: str, headers: dict[str, str] | None = None, **kwargs: Any):
        return self.client.request(method, url, headers={**self.auth, **(headers or {})}, **kwargs)

    def get(self, url: str, **kwargs: Any):
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any):
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any):
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any):
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any):
        return self.request("DELETE", url, **kwargs)

    def create_task(self, **fields: Any) -> dict[str, Any]:
        response = self.post("/api/tasks", json={"title": "a task", **fields})
        assert response.status_code == 201, response.text
        return response.json()


@pytest.fixture
def new_user(client: TestClient):
    """A factory of users with fresh ids, so tests sharing a database never see each other's tasks."""

    def make(prefix: str = "user", **claims: Any) -> ApiUser:
        user_id = f"{prefix}_{uuid.uuid4().hex[:10]}"
        return ApiUser(client, user_id, mint_token(user_id, **claims))

    return make


@pytest.fixture
def alice(new_user) -> ApiUser:
    return new_user("alice")


@pytest.fixture
def bob(new_user) -> ApiUser:
    return new_user("bob")
