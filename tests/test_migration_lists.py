"""Migration 0003 on a database with data (from 0002): every task lands in its owner's default
list, in the order it was created; nothing else changes. On SQLite and PostgreSQL."""
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient

from config import Settings
from conftest import make_settings, mint_token
from db import PROJECT_DIR
from main import create_app


def alembic_config(url: str) -> Config:
    config = Config(str(PROJECT_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_DIR / "migrations"))
    config.attributes["database_url"] = Settings.normalise_database_url(url)
    return config


def seed_at_0002(url: str) -> None:
    engine = sa.create_engine(Settings.normalise_database_url(url))
    base = datetime(2026, 11, 1, tzinfo=timezone.utc)
    # (user, title, minutes after base): created out of id order on purpose
    rows = [("mig_u1", "second", 20), ("mig_u2", "only", 5), ("mig_u1", "first", 10), ("mig_u1", "third", 30)]
    with engine.begin() as connection:
        for user, title, minutes in rows:
            created = base + timedelta(minutes=minutes)
            if connection.dialect.name == "sqlite":
                created = created.replace(tzinfo=None)
            task_id = connection.execute(
                sa.text(
                    "INSERT INTO task (user_id, title, completed, priority, tags, created_at, updated_at, version) "
                    "VALUES (:u, :t, false, 'low', :tags, :c, :c, 3) RETURNING id"
                ),
                {"u": user, "t": title, "c": created, "tags": '["home"]'},
            ).scalar()
            connection.execute(
                sa.text("INSERT INTO task_tag (task_id, tag_key, user_id, tag) VALUES (:id, 'home', :u, 'home')"),
                {"id": task_id, "u": user},
            )
    engine.dispose()


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_upgrade_from_0002_with_tasks_puts_them_in_default_lists_in_created_order(scratch_database, backend_name):
    url = scratch_database(backend_name, migrate=False)
    config = alembic_config(url)
    command.upgrade(config, "0002")
    seed_at_0002(url)
    command.upgrade(config, "head")
    command.check(config)  # the migrated schema is exactly the models'
    with TestClient(create_app(make_settings(url))) as client:
        def as_user(user: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {mint_token(user)}"}

        lists = client.get("/api/lists", headers=as_user("mig_u1")).json()
        assert [(row["name"], row["is_default"], row["task_count"]) for row in lists] == [("Inbox", True, 3)]
        tasks = client.get("/api/tasks?sort=position", headers=as_user("mig_u1")).json()
        assert [task["title"] for task in tasks] == ["first", "second", "third"]
        assert all(task["list_id"] == lists[0]["id"] and task["parent_id"] is None for task in tasks)
        assert all(task["tags"] == ["home"] for task in tasks)
        etag = client.get(f"/api/tasks/{tasks[0]['id']}", headers=as_user("mig_u1")).headers["ETag"]
        assert etag == f'"{tasks[0]["id"]}.3"'  # versions untouched: clients' ETags stay valid
        other = client.get("/api/lists", headers=as_user("mig_u2")).json()
        assert len(other) == 1 and other[0]["id"] != lists[0]["id"] and other[0]["task_count"] == 1
        new = client.post("/api/tasks", json={"title": "fourth"}, headers=as_user("mig_u1")).json()
        assert new["id"] > max(task["id"] for task in tasks) and new["list_id"] == lists[0]["id"]
        assert client.get("/api/tasks?sort=position", headers=as_user("mig_u1")).json()[-1]["id"] == new["id"]
        assert client.get("/api/tags", headers=as_user("mig_u1")).json() == [{"tag": "home", "count": 3}]
        fresh_user = client.get("/api/lists", headers=as_user("mig_new")).json()
        assert [row["name"] for row in fresh_user] == ["Inbox"]


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_downgrade_to_0002_and_up_again_keeps_the_tasks(scratch_database, backend_name):
    url = scratch_database(backend_name, migrate=False)
    config = alembic_config(url)
    command.upgrade(config, "0002")
    seed_at_0002(url)
    command.upgrade(config, "head")
    command.downgrade(config, "0002")
    command.upgrade(config, "head")
    engine = sa.create_engine(Settings.normalise_database_url(url))
    with engine.connect() as connection:
        count = connection.execute(sa.text("SELECT count(*) FROM task WHERE list_id IS NOT NULL")).scalar()
        tags = connection.execute(sa.text("SELECT count(*) FROM task_tag")).scalar()
    engine.dispose()
    assert (count, tags) == (4, 4)
