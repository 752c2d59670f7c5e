"""The pooled engine, the session dependency, and schema upgrades."""
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import orjson
import sqlalchemy as sa
from fastapi import Depends, Request
from sqlmodel import Session

from config import Settings

PROJECT_DIR = Path(__file__).resolve().parent


def make_engine(settings: Settings) -> sa.Engine:
    json_options = {"json_serializer": lambda value: orjson.dumps(value).decode(), "json_deserializer": orjson.loads}
    if settings.is_sqlite:
        return _make_sqlite_engine(settings.database_url, json_options)
    return sa.create_engine(
        settings.database_url,
        # A connection the server (or Neon's idle reaper) closed is replaced, not handed out.
        pool_pre_ping=True,
        pool_recycle=settings.db_pool_recycle_seconds,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        # Fail fast while the database is down: a short pool wait and connect timeout, not 30 s.
        pool_timeout=settings.db_pool_timeout_seconds,
        # SQL parameters are task contents: keep them out of exception messages, hence out of the logs.
        hide_parameters=True,
        connect_args={
            "connect_timeout": settings.db_connect_timeout_seconds,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "application_name": "task-api",
        },
        **json_options,
    )


def _make_sqlite_engine(url: str, json_options: dict) -> sa.Engine:
    in_memory = sa.engine.make_url(url).database in (None, "", ":memory:")
    # Handlers run in a threadpool: connections are shared across threads, one at a time.
    # An in-memory database exists once per connection, so it gets exactly one.
    pool_options = {"poolclass": sa.pool.StaticPool} if in_memory else {"pool_size": 8, "max_overflow": 8}
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 10},
        hide_parameters=True,  # as above: no task contents in exception messages
        **pool_options,
        **json_options,
    )

    @sa.event.listens_for(engine, "connect")
    def _configure_sqlite(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers do not wait for the writer
        cursor.execute("PRAGMA synchronous=FULL")  # an acknowledged write survives a crash
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()
        # SQLite's lower() folds ASCII only; searches must find "École" with "école" as PostgreSQL does.
        dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)

    return engine


def _unicode_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def database_is_reachable(engine: sa.Engine) -> bool:
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        return True
    except sa.exc.SQLAlchemyError:
        return False


def upgrade_schema(database_url: str) -> None:
    """`alembic upgrade head` for the given database, as the canonical start runs it."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(PROJECT_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_DIR / "migrations"))
    config.attributes["database_url"] = database_url
    command.upgrade(config, "head")
