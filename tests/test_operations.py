"""CONTRACT §6: health, docs, OpenAPI, CORS, configuration, migrations and durability.

The migration and durability tests run real processes (`alembic upgrade head`, `uvicorn main:app`)
against scratch databases of both backends.
"""
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urljoin, urlparse

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from config import DEFAULT_SQLITE_URL, Settings
from conftest import TEST_SECRET, make_settings, mint_token
from live_server import LiveServer
from db import upgrade_schema
from main import create_app

PROJECT = Path(__file__).resolve().parent.parent
VENV_BIN = PROJECT / ".venv" / "bin"
LOCAL_ORIGIN = "http://localhost:3000"
DEAD_POSTGRES = "postgresql://postgres@127.0.0.1:1/x"


# ---------------------------------------------------------------- health


def test_health_is_ok_without_auth(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_health_ready_is_ok_when_database_answers(client):
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.fixture(scope="module")
def dead_client():
    with TestClient(create_app(make_settings(DEAD_POSTGRES)), raise_server_exceptions=False) as client:
        yield client


def test_health_ready_is_503_when_database_is_down(dead_client):
    started = time.monotonic()
    response = dead_client.get("/health/ready")
    assert time.monotonic() - started < 10
    assert response.status_code == 503
    assert response.json()["error_code"] == "SERVICE_UNAVAILABLE"
    assert int(response.headers["Retry-After"]) > 0
    # Liveness does not depend on the database.
    assert dead_client.get("/health").json() == {"status": "ok"}


# ---------------------------------------------------------------- docs


def test_docs_page_assets_are_served_by_the_service(client):
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    for host in ("cdn.jsdelivr.net", "unpkg.com", "cdnjs", "fonts.googleapis.com"):
        assert host not in html
    assets = re.findall(r'<(?:script|link)[^>]*?(?:src|href)="([^"]+)"', html)
    scripts = [url for url in assets if url.endswith(".js")]
    styles = [url for url in assets if url.endswith(".css")]
    assert scripts and styles, assets
    for url in assets:
        parsed = urlparse(url)
        assert not parsed.netloc, f"{url} is not served by the service"
        asset = client.get(urljoin("http://testserver/docs", url))
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
    for url in scripts:
        assert "javascript" in client.get(urljoin("http://testserver/docs", url)).headers["content-type"]
    for url in styles:
        assert "css" in client.get(urljoin("http://testserver/docs", url)).headers["content-type"]
    assert "/openapi.json" in html


# ---------------------------------------------------------------- OpenAPI


ROUTES = {
    ("/tasks", "get"), ("/tasks", "post"), ("/tasks", "delete"),
    ("/tasks/{}", "get"), ("/tasks/{}", "put"), ("/tasks/{}", "patch"), ("/tasks/{}", "delete"),
    ("/tasks/{}/toggle", "post"), ("/tasks/{}/complete", "patch"),
    ("/tasks/stats", "get"), ("/tags", "get"), ("/me", "get"), ("/tasks/{}/move", "post"),
    ("/lists", "get"), ("/lists", "post"), ("/lists/{}", "get"), ("/lists/{}", "put"), ("/lists/{}", "patch"),
    ("/lists/{}", "delete"), ("/lists/{}/move", "post"),
}
SINGLE_LIST_WRITES = {("/lists/{}", "put"), ("/lists/{}", "patch"), ("/lists/{}", "delete"), ("/lists/{}/move", "post")}
SINGLE_TASK_WRITES = {("/tasks/{}", "put"), ("/tasks/{}", "patch"), ("/tasks/{}", "delete"),
                      ("/tasks/{}/toggle", "post"), ("/tasks/{}/complete", "patch"), ("/tasks/{}/move", "post")}


@pytest.fixture(scope="module")
def openapi(client) -> dict:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(openapi: dict):
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield path, method, operation


def normalise(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def test_openapi_has_every_route_in_both_spellings(openapi):
    documented = {(normalise(path), method) for path, method, _ in operations(openapi)}
    for route, method in ROUTES:
        assert ("/api" + route, method) in documented, (route, method)
        assert ("/api/{}" + route, method) in documented, ("/api/{user_id}" + route, method)
    assert ("/health", "get") in documented and ("/health/ready", "get") in documented


def test_openapi_operation_ids_are_unique(openapi):
    ids = [operation["operationId"] for _, _, operation in operations(openapi)]
    assert len(ids) == len(set(ids))


def test_openapi_has_bearer_scheme_on_every_api_route(openapi):
    schemes = openapi["components"]["securitySchemes"]
    bearer = [name for name, scheme in schemes.items() if scheme.get("type") == "http" and scheme.get("scheme") == "bearer"]
    assert bearer, schemes
    for path, method, operation in operations(openapi):
        names = {name for requirement in operation.get("security", []) for name in requirement}
        if path.startswith("/api") or path == "/chatkit":  # ChatKit's endpoint takes the same token (§13)
            assert names & set(bearer), (path, method)
        else:
            assert not names, (path, method)  # health needs no token


def response_schema_ref(operation: dict, status: str) -> str | None:
    response = operation["responses"].get(status)
    if response is None:
        return None
    return response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")


def test_openapi_errors_use_error_body(openapi):
    error_body = openapi["components"]["schemas"]["ErrorBody"]
    assert {"detail", "error_code", "timestamp"} <= set(error_body["required"])
    assert "errors" in error_body["properties"]
    ref = "#/components/schemas/ErrorBody"
    for path, method, operation in operations(openapi):
        if not path.startswith("/api"):
            continue
        route = normalise(path).removeprefix("/api").removeprefix("/{}")
        for status in ("401", "422", "500", "503"):
            assert response_schema_ref(operation, status) == ref, (path, method, status)
        if path.startswith("/api/{user_id}"):
            assert response_schema_ref(operation, "403") == ref, (path, method)
        if route.startswith("/tasks/{}"):
            assert response_schema_ref(operation, "404") == ref, (path, method)
        if (route, method) in SINGLE_TASK_WRITES | SINGLE_LIST_WRITES:
            assert response_schema_ref(operation, "412") == ref, (path, method)
        if route.startswith("/lists/{}"):
            assert response_schema_ref(operation, "404") == ref, (path, method)
            assert "LIST_NOT_FOUND" in operation["responses"]["404"]["description"], (path, method)


def test_openapi_documents_headers_and_parameters(openapi):
    for prefix in ("/api", "/api/{user_id}"):
        item = openapi["paths"][f"{prefix}/tasks/{{task_id}}"]
        get_params = {(p["in"], p["name"].lower()) for p in item["get"]["parameters"]}
        assert ("header", "if-none-match") in get_params and ("path", "task_id") in get_params
        assert "ETag" in item["get"]["responses"]["200"]["headers"]
        for method in ("put", "patch", "delete"):
            assert ("header", "if-match") in {(p["in"], p["name"].lower()) for p in item[method]["parameters"]}
        assert "204" in item["delete"]["responses"]
        listing = openapi["paths"][f"{prefix}/tasks"]
        names = {p["name"] for p in listing["get"]["parameters"]}
        assert {"completed", "status", "q", "priority", "tag", "due_before", "due_after", "overdue",
                "sort", "order", "limit", "offset"} <= names
        assert {"X-Total-Count", "Link"} <= set(listing["get"]["responses"]["200"]["headers"])
        assert "Location" in listing["post"]["responses"]["201"]["headers"]
        complete = openapi["paths"][f"{prefix}/tasks/{{task_id}}/complete"]["patch"]
        assert not complete.get("requestBody", {}).get("required", False)  # no body flips it
        if prefix != "/api":
            assert ("path", "user_id") in {(p["in"], p["name"]) for p in item["get"]["parameters"]}


def test_openapi_task_schema_has_every_field(openapi):
    task = openapi["components"]["schemas"]["TaskPublic"]
    assert set(task["properties"]) == {
        "id", "user_id", "title", "description", "completed", "priority", "tags",
        "due_date", "list_id", "parent_id", "position", "time_zone", "recurrence", "reminders", "next_occurrence_id", "assignee_id", "completed_at", "created_at", "updated_at",
    }
    create = openapi["components"]["schemas"]["TaskCreate"]
    assert create["required"] == ["title"]
    assert create.get("additionalProperties") is False
    assert "user_id" not in create["properties"] and "id" not in create["properties"]


# ---------------------------------------------------------------- CORS


def preflight(client, origin: str, method: str = "PATCH", headers: str = "authorization, content-type, if-match, idempotency-key"):
    return client.options(
        "/api/tasks/1",
        headers={"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers},
    )


def header_set(value: str | None) -> set[str]:
    return {item.strip().lower() for item in (value or "").split(",") if item.strip()}


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_cors_preflight_from_localhost_3000_is_allowed(client, method):
    response = preflight(client, LOCAL_ORIGIN, method)
    assert response.status_code in (200, 204), response.text
    assert response.headers["access-control-allow-origin"] == LOCAL_ORIGIN
    assert method in header_set(response.headers["access-control-allow-methods"]) | {m.upper() for m in header_set(response.headers["access-control-allow-methods"])}
    allowed = header_set(response.headers["access-control-allow-headers"])
    assert {"authorization", "content-type", "if-match", "idempotency-key"} <= allowed
    assert response.headers.get("access-control-allow-credentials") == "true"


@pytest.mark.parametrize("header", ["If-None-Match", "X-Request-ID"])
def test_cors_preflight_allows_other_contract_headers(client, header):
    response = preflight(client, LOCAL_ORIGIN, "GET", header)
    assert response.status_code in (200, 204)
    assert header.lower() in header_set(response.headers["access-control-allow-headers"])


def test_cors_response_exposes_contract_headers(alice):
    response = alice.get("/api/tasks", headers={"Origin": LOCAL_ORIGIN})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == LOCAL_ORIGIN
    exposed = header_set(response.headers["access-control-expose-headers"])
    assert {"etag", "location", "link", "x-total-count", "x-request-id"} <= exposed


def test_cors_error_responses_carry_cors_headers(alice, client):
    for response in (client.get("/api/tasks", headers={"Origin": LOCAL_ORIGIN}),
                     alice.get("/api/tasks/999999999", headers={"Origin": LOCAL_ORIGIN})):
        assert response.status_code in (401, 404)
        assert response.headers["access-control-allow-origin"] == LOCAL_ORIGIN


@pytest.mark.parametrize("origin", ["http://evil.example", "http://localhost:3001", "https://localhost:3000", "null"])
def test_cors_other_origin_is_not_allowed(client, alice, origin):
    response = preflight(client, origin)
    assert response.headers.get("access-control-allow-origin") not in (origin, "*")
    simple = alice.get("/api/tasks", headers={"Origin": origin})
    assert simple.headers.get("access-control-allow-origin") not in (origin, "*")


@pytest.fixture
def env(monkeypatch):
    """A clean environment for Settings(_env_file=None): only what the test sets."""
    for name in ("DATABASE_URL", "NEON_DB_URL", "CORS_ORIGINS", "BETTER_AUTH_URL", "JWKS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BETTER_AUTH_SECRET", TEST_SECRET)
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    monkeypatch.setenv("RATE_LIMIT_PER_MINUTE", "0")
    return monkeypatch


def test_cors_origins_env_is_honoured(env, database_url):
    env.setenv("DATABASE_URL", database_url)
    env.setenv("CORS_ORIGINS", "https://app.example.com, https://admin.example.com")
    with TestClient(create_app(Settings(_env_file=None))) as client:
        for origin in ("https://app.example.com", "https://admin.example.com"):
            response = preflight(client, origin)
            assert response.status_code in (200, 204)
            assert response.headers["access-control-allow-origin"] == origin
        assert preflight(client, LOCAL_ORIGIN).headers.get("access-control-allow-origin") != LOCAL_ORIGIN


def test_cors_origins_default_is_localhost_3000(env):
    assert Settings(_env_file=None).cors_origin_list == [LOCAL_ORIGIN]


# ---------------------------------------------------------------- database configuration


@pytest.mark.parametrize(
    "given, expected",
    [
        ("postgres://u:p@db.example.com:5432/app?sslmode=require",
         "postgresql+psycopg2://u:p@db.example.com:5432/app?sslmode=require"),
        ("postgresql://u:p@ep-x.neon.tech/neondb?sslmode=require&channel_binding=require",
         "postgresql+psycopg2://u:p@ep-x.neon.tech/neondb?sslmode=require&channel_binding=require"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
    ids=["postgres", "postgresql-neon", "explicit-driver", "sqlite"],
)
def test_database_url_is_normalised(env, given, expected):
    env.setenv("DATABASE_URL", given)
    assert Settings(_env_file=None).database_url == expected


def test_neon_db_url_is_read(env):
    env.setenv("NEON_DB_URL", "postgres://u:p@ep-x.neon.tech/neondb?sslmode=require")
    assert Settings(_env_file=None).database_url == "postgresql+psycopg2://u:p@ep-x.neon.tech/neondb?sslmode=require"


def test_database_url_unset_means_sqlite_file(env):
    settings = Settings(_env_file=None)
    assert settings.is_sqlite and settings.database_url == DEFAULT_SQLITE_URL
    assert ":memory:" not in settings.database_url


def test_postgres_scheme_url_works_as_given(backend, database_url):
    if backend != "postgres":
        pytest.skip("a PostgreSQL URL")
    url = database_url
    given = re.sub(r"^postgresql(\+psycopg2)?://", "postgres://", url) + "?sslmode=prefer"
    assert given.startswith("postgres://")
    with TestClient(create_app(make_settings(given))) as client:
        headers = {"Authorization": f"Bearer {mint_token('neon_user')}"}
        created = client.post("/api/tasks", json={"title": "via postgres://"}, headers=headers)
        assert created.status_code == 201, created.text
        assert client.get(f"/api/tasks/{created.json()['id']}", headers=headers).json() == created.json()
        assert client.get("/health/ready").status_code == 200


# ---------------------------------------------------------------- migrations


def head_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config(str(PROJECT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT / "migrations"))
    return ScriptDirectory.from_config(config).get_current_head()


def assert_schema_at_head(url: str) -> None:
    engine = sa.create_engine(Settings.normalise_database_url(url))
    try:
        inspector = sa.inspect(engine)
        assert {"task", "task_tag", "alembic_version"} <= set(inspector.get_table_names())
        with engine.connect() as connection:
            versions = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
        assert versions == [head_revision()]
    finally:
        engine.dispose()


def test_upgrade_schema_twice_is_harmless(backend, scratch_database):
    url = scratch_database(backend, migrate=False)
    normalised = Settings.normalise_database_url(url)
    upgrade_schema(normalised)
    with TestClient(create_app(make_settings(url))) as client:
        headers = {"Authorization": f"Bearer {mint_token('migrator')}"}
        task = client.post("/api/tasks", json={"title": "survives", "tags": ["t"]}, headers=headers).json()
        upgrade_schema(normalised)
        upgrade_schema(normalised)
        assert client.get(f"/api/tasks/{task['id']}", headers=headers).json() == task
        assert client.get("/api/tags", headers=headers).json() == [{"tag": "t", "count": 1}]
    assert_schema_at_head(url)


def test_migrations_match_the_models(backend, database_url):
    """A migrated database has exactly the schema the models describe (`alembic check`)."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(PROJECT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT / "migrations"))
    config.attributes["database_url"] = Settings.normalise_database_url(database_url)
    command.check(config)


def subprocess_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("NEON_DB_URL", "CORS_ORIGINS")}
    env.update(DATABASE_URL=database_url, BETTER_AUTH_SECRET=TEST_SECRET, RATE_LIMIT_PER_MINUTE="0", LOG_LEVEL="WARNING")
    env.update(extra)
    return env


@pytest.mark.slow
def test_alembic_upgrade_head_from_two_processes_at_once(backend, scratch_database):
    url = scratch_database(backend, migrate=False)
    processes = [
        subprocess.Popen(
            [str(VENV_BIN / "alembic"), "upgrade", "head"],
            cwd=PROJECT, env=subprocess_env(url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for _ in range(2)
    ]
    for process in processes:
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, output
    assert_schema_at_head(url)


# ---------------------------------------------------------------- durability


@pytest.fixture
def service(backend, scratch_database):
    server = LiveServer(scratch_database(backend), secret=TEST_SECRET)
    yield server
    server.stop()


def client_for(server: LiveServer, user_id: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {mint_token(user_id)}"}, timeout=10)


@pytest.mark.slow
def test_acknowledged_writes_survive_sigterm_and_sigkill(service):
    user = "durable_user"
    service.start()
    acknowledged: dict[int, dict] = {}
    with client_for(service, user) as http:
        for i in range(10):
            response = http.post("/api/tasks", json={"title": f"task {i}", "tags": ["durable"], "priority": "high"})
            assert response.status_code == 201, response.text
            acknowledged[response.json()["id"]] = response.json()
        first, second = list(acknowledged)[:2]
        updated = http.patch(f"/api/tasks/{first}", json={"title": "updated", "completed": True})
        assert updated.status_code == 200
        acknowledged[first] = updated.json()
        assert http.delete(f"/api/tasks/{second}").status_code == 204
        del acknowledged[second]

    # 1. A graceful stop.
    service.stop()
    service.start()
    with client_for(service, user) as http:
        for task_id, task in acknowledged.items():
            assert http.get(f"/api/tasks/{task_id}").json() == task
        assert http.get(f"/api/tasks/{second}").status_code == 404
        assert http.get("/api/tasks").headers["X-Total-Count"] == str(len(acknowledged))

    # 2. A hard kill while writes are in flight: every write that got a 2xx is there afterwards.
    stop_writing = threading.Event()
    in_flight: dict[int, dict] = {}

    def writer() -> None:
        with client_for(service, user) as http:
            i = 0
            while not stop_writing.is_set():
                i += 1
                try:
                    response = http.post("/api/tasks", json={"title": f"in flight {i}"})
                except httpx.TransportError:
                    return
                if response.status_code == 201:
                    in_flight[response.json()["id"]] = response.json()

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while len(in_flight) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    service.kill()  # mid-write: the writers are still sending
    stop_writing.set()
    for thread in threads:
        thread.join(timeout=15)
    assert len(in_flight) >= 10

    service.start()
    with client_for(service, user) as http:
        listed = {task["id"]: task for task in http.get("/api/tasks?limit=500").json()}
    for task_id, task in {**acknowledged, **in_flight}.items():
        assert listed.get(task_id) == task, task_id
    service.stop()


def test_cors_preflight_from_unknown_origin_is_refused_in_json(client):
    response = client.options(
        "/api/tasks",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert response.status_code == 400
    assert response.json()["error_code"] == "BAD_REQUEST"
    assert "CORS_ORIGINS" in response.json()["detail"]
    assert int(response.headers["content-length"]) == len(response.content)
    assert "access-control-allow-origin" not in response.headers
    assert response.headers["x-request-id"]


def test_health_answers_head_for_probes(client):
    response = client.head("/health")
    assert response.status_code == 200
    assert response.content == b""


def test_trailing_slash_is_a_json_404_not_a_redirect(client, alice):
    response = alice.get("/api/tasks/", follow_redirects=False)
    assert response.status_code == 404
    assert response.json()["error_code"] == "NOT_FOUND"
