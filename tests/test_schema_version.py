"""Code and schema out of step fail early and say so (issue 23, #14), on SQLite and PostgreSQL.

Before: on a database that was not upgraded, /health/ready answered 200 and every task route 500.
Now /health/ready is 503 SCHEMA_MISMATCH naming the revision found, the one expected and what to
run, whichever way they differ, and a route that fails on a missing table or column is a 503 saying
the same instead of a 500. Once `alembic upgrade head` runs, both recover without a restart.
"""
import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient

from config import Settings
from conftest import make_settings, mint_token
from main import create_app
from schema_version import code_revisions
from test_migration_lists import alembic_config

AUTH = {"Authorization": f"Bearer {mint_token('schema_user')}"}
[HEAD] = code_revisions()[0]


def set_revision(url: str, revision: str) -> None:
    engine = sa.create_engine(Settings.normalise_database_url(url))
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = :revision"), {"revision": revision})
    engine.dispose()


def assert_schema_mismatch(response, found: str | None, says: str) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["error_code"] == "SCHEMA_MISMATCH"
    assert (body["schema_revision"], body["code_revision"]) == (found, HEAD)
    assert says in body["detail"] and HEAD in body["detail"]
    assert int(response.headers["Retry-After"]) > 0


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_a_database_behind_the_code_is_not_ready_and_its_routes_say_why(scratch_database, backend_name):
    url = scratch_database(backend_name, migrate=False)
    command.upgrade(alembic_config(url), "0002")
    with TestClient(create_app(make_settings(url)), raise_server_exceptions=False) as client:
        assert_schema_mismatch(client.get("/health/ready"), "0002", "Run `alembic upgrade head`")
        for method, path, body in [("GET", "/api/tasks", None), ("POST", "/api/tasks", {"title": "x"}),
                                   ("GET", "/api/lists", None), ("GET", "/api/changes", None)]:
            response = client.request(method, path, json=body, headers=AUTH)
            assert_schema_mismatch(response, "0002", "alembic upgrade head")
        assert client.get("/health").status_code == 200  # liveness does not depend on the schema

        command.upgrade(alembic_config(url), "head")  # the service recovers by itself
        assert client.get("/health/ready").json() == {"status": "ok"}
        assert client.post("/api/tasks", json={"title": "after the upgrade"}, headers=AUTH).status_code == 201


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_a_database_never_migrated_is_not_ready(scratch_database, backend_name):
    url = scratch_database(backend_name, migrate=False)
    with TestClient(create_app(make_settings(url)), raise_server_exceptions=False) as client:
        assert_schema_mismatch(client.get("/health/ready"), None, "Run `alembic upgrade head`")
        assert_schema_mismatch(client.get("/api/tasks", headers=AUTH), None, "alembic upgrade head")


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_a_database_ahead_of_the_code_is_not_ready(scratch_database, backend_name):
    """An older version on a database a newer one upgraded: not ready, and told why."""
    url = scratch_database(backend_name)
    set_revision(url, "9999_from_a_newer_version")
    with TestClient(create_app(make_settings(url)), raise_server_exceptions=False) as client:
        assert_schema_mismatch(client.get("/health/ready"), "9999_from_a_newer_version", "newer than this version")
        set_revision(url, HEAD)
        assert client.get("/health/ready").json() == {"status": "ok"}


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_a_database_at_the_code_revision_is_ready(scratch_database, backend_name):
    with TestClient(create_app(make_settings(scratch_database(backend_name)))) as client:
        response = client.get("/health/ready")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_with_the_schema_in_step_a_missing_column_is_still_a_500(scratch_database):
    """Our own SQL naming what the schema lacks is a bug, not the deployment: not blamed on the schema."""
    url = scratch_database("sqlite")
    engine = sa.create_engine(Settings.normalise_database_url(url))
    with engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE user_settings"))
    engine.dispose()
    with TestClient(create_app(make_settings(url)), raise_server_exceptions=False) as client:
        assert client.get("/health/ready").status_code == 200
        response = client.get("/api/settings", headers=AUTH)
    assert response.status_code == 500 and response.json()["error_code"] == "INTERNAL_ERROR"
