"""Migration 0013 (sharing) on a database made by the version before it, with data, on SQLite and
PostgreSQL: every list gets its owner as its `owner` member, with the list's position as theirs;
tags carry their task's list; existing events get their user as `actor` (a reminder.due none); every
task, list, tag, ETag and cursor reads as before. Down and up again keeps them."""
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient

from config import Settings
from conftest import make_settings, mint_token
from main import create_app
from test_migration_lists import alembic_config

BEFORE_SHARING = "0011"


def seed_before_sharing(url: str) -> None:
    """Two users' lists and tasks as the version before sharing wrote them (user_id on lists and tags)."""
    engine = sa.create_engine(Settings.normalise_database_url(url))
    now = datetime(2026, 11, 20, tzinfo=timezone.utc)
    if engine.dialect.name == "sqlite":
        now = now.replace(tzinfo=None)
    with engine.begin() as connection:
        def insert(sql: str, **values):
            result = connection.execute(sa.text(sql), values)
            return result.scalar() if result.returns_rows else None

        for user, lists in (("mig_a", [("Inbox", True, "a0"), ("Work", False, "a1")]), ("mig_b", [("Inbox", True, "a0")])):
            for name, is_default, position in lists:
                list_id = insert(
                    "INSERT INTO list (user_id, name, is_default, position, created_at, updated_at, version) "
                    "VALUES (:u, :n, :d, :p, :t, :t, 2) RETURNING id", u=user, n=name, d=is_default, p=position, t=now,
                )
                task_id = insert(
                    "INSERT INTO task (user_id, title, completed, priority, tags, reminders, list_id, position, created_at, "
                    "updated_at, version) VALUES (:u, :n, false, 'low', '[\"Home\"]', '[]', :l, 'a0', :t, :t, 4) RETURNING id",
                    u=user, n=f"{name} task", l=list_id, t=now,
                )
                insert("INSERT INTO task_tag (task_id, tag_key, user_id, tag) VALUES (:i, 'home', :u, 'Home')", i=task_id, u=user)
                insert(
                    "INSERT INTO event (user_id, type, entity_id, data, created_at) VALUES (:u, 'task.created', :i, NULL, :t)",
                    u=user, i=task_id, t=now,
                )
        insert(
            "INSERT INTO event (user_id, type, entity_id, data, created_at) VALUES ('mig_a', 'reminder.due', 1, NULL, :t)", t=now
        )
    engine.dispose()


def rows(url: str, sql: str) -> list[tuple]:
    engine = sa.create_engine(Settings.normalise_database_url(url))
    with engine.connect() as connection:
        found = [tuple(row) for row in connection.execute(sa.text(sql))]
    engine.dispose()
    return found


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_every_list_gets_its_owner_as_member_and_reads_as_before(scratch_database, backend_name):
    url = scratch_database(backend_name, migrate=False)
    config = alembic_config(url)
    command.upgrade(config, BEFORE_SHARING)
    seed_before_sharing(url)
    command.upgrade(config, "head")
    command.check(config)  # the migrated schema is exactly the models'
    assert rows(url, "SELECT l.name, m.user_id, m.role, m.position FROM list l JOIN list_member m ON m.list_id = l.id "
                     "ORDER BY m.user_id, m.position") == [
        ("Inbox", "mig_a", "owner", "a0"), ("Work", "mig_a", "owner", "a1"), ("Inbox", "mig_b", "owner", "a0"),
    ]
    assert rows(url, "SELECT count(*) FROM task_tag t JOIN task ON task.id = t.task_id WHERE t.list_id = task.list_id") == [(3,)]
    assert sorted(rows(url, "SELECT type, actor FROM event WHERE user_id = 'mig_a'")) == [
        ("reminder.due", None), ("task.created", "mig_a"), ("task.created", "mig_a"),
    ]
    with TestClient(create_app(make_settings(url))) as client:
        alice = {"Authorization": f"Bearer {mint_token('mig_a')}"}
        lists = client.get("/api/lists", headers=alice).json()
        assert [(row["name"], row["role"], row["owner_id"], row["member_count"], row["task_count"]) for row in lists] == [
            ("Inbox", "owner", "mig_a", 1, 1), ("Work", "owner", "mig_a", 1, 1),
        ]
        tasks = client.get("/api/tasks", headers=alice).json()
        assert sorted(task["title"] for task in tasks) == ["Inbox task", "Work task"]
        assert all(task["assignee_id"] is None for task in tasks)
        etag = client.get(f"/api/tasks/{tasks[0]['id']}", headers=alice).headers["ETag"]
        assert etag == f'"{tasks[0]["id"]}.4"'  # versions untouched: clients' ETags stay valid
        assert client.get("/api/tags", headers=alice).json() == [{"tag": "Home", "count": 2}]
        assert client.get("/api/tasks", params={"tag": "home"}, headers=alice).json() != []
        bob = {"Authorization": f"Bearer {mint_token('mig_b')}"}
        assert [task["title"] for task in client.get("/api/tasks", headers=bob).json()] == ["Inbox task"]
        shared = client.post(f"/api/lists/{lists[1]['id']}/invitations", json={"email": "b@example.test", "role": "viewer"}, headers=alice)
        assert shared.status_code == 201, shared.text


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_downgrade_below_sharing_and_up_again_keeps_lists_tasks_and_tags(scratch_database, backend_name):
    url = scratch_database(backend_name, migrate=False)
    config = alembic_config(url)
    command.upgrade(config, BEFORE_SHARING)
    seed_before_sharing(url)
    command.upgrade(config, "head")
    command.downgrade(config, BEFORE_SHARING)
    assert sorted(rows(url, "SELECT user_id, name, position FROM list")) == [
        ("mig_a", "Inbox", "a0"), ("mig_a", "Work", "a1"), ("mig_b", "Inbox", "a0"),
    ]
    assert rows(url, "SELECT count(*) FROM task_tag t JOIN task ON task.id = t.task_id WHERE t.user_id = task.user_id") == [(3,)]
    command.upgrade(config, "head")
    command.check(config)
    assert rows(url, "SELECT count(*) FROM list_member WHERE role = 'owner'") == [(3,)]
