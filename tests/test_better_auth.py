"""End to end with a real Better Auth (1.7.x, jwt plugin) server: its own sign-up, sign-in and
token endpoints make the JWTs, and our service, configured with nothing but `BETTER_AUTH_URL`,
verifies them through Better Auth's JWKS. For each key type the jwt plugin can use: EdDSA
(Better Auth's default), ES256, RS256.

Needs Node.js >= 20 (tests/betterauth holds the pinned packages; `npm ci` runs once if
node_modules is missing). Without Node these tests are skipped, and fail under CI.
"""
import json
import subprocess
import uuid
from collections.abc import Iterator

import jwt
import pytest
from fastapi.testclient import TestClient

from conftest import make_settings, mint_token, unavailable
from main import create_app
from tests.betterauth.harness import (
    ALGORITHMS,
    HERE as BETTER_AUTH_DIR,
    BetterAuthServer,
    ensure_node_modules,
    node_available,
    start_better_auth,
)

pytestmark = pytest.mark.slow
PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(scope="session")
def better_auth_installed() -> None:
    if not node_available():
        message = (
            "Node.js >= 20 and npm are not on PATH: the Better Auth tests run a real Better Auth server "
            "(tests/betterauth/server.mjs). Install Node.js 20+ to run them."
        )
        unavailable(message)
    ensure_node_modules()  # `npm ci` from the lockfile, once, if node_modules is missing


@pytest.fixture(scope="module", params=ALGORITHMS)
def better_auth(request: pytest.FixtureRequest, better_auth_installed: None) -> Iterator[BetterAuthServer]:
    with start_better_auth(request.param) as server:
        yield server


@pytest.fixture(scope="module")
def service(better_auth: BetterAuthServer, scratch_database) -> Iterator[TestClient]:
    """Our service as a Better Auth user would configure it: BETTER_AUTH_URL only, no shared secret.
    (Verifying tokens does not depend on the database; every route runs on both elsewhere.)"""
    settings = make_settings(scratch_database("sqlite"), better_auth_url=better_auth.base_url, better_auth_secret=None)
    assert settings.better_auth_secret is None and settings.jwks_endpoint == better_auth.base_url + "/api/auth/jwks"
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def sign_up(server: BetterAuthServer, name: str = "Alice") -> tuple[dict[str, str], dict]:
    """A new Better Auth user, signed up and in through Better Auth's API: (auth header, its claims)."""
    email = f"{name.lower()}-{uuid.uuid4().hex[:10]}@example.com"
    token = server.token_for(email, PASSWORD, name)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert jwt.get_unverified_header(token)["alg"] == server.alg
    assert claims["email"] == email and claims["iss"] == claims["aud"] == server.base_url
    return {"Authorization": f"Bearer {token}"}, claims


def test_me_is_the_better_auth_user(service: TestClient, better_auth: BetterAuthServer) -> None:
    auth, claims = sign_up(better_auth, "Alice")
    response = service.get("/api/me", headers=auth)
    assert response.status_code == 200, response.text
    assert response.json() == {"user_id": claims["sub"], "email": claims["email"], "name": "Alice"}


def test_every_task_route_works_with_a_better_auth_token(service: TestClient, better_auth: BetterAuthServer) -> None:
    auth, claims = sign_up(better_auth)
    user_id = claims["sub"]

    created = service.post("/api/tasks", headers=auth, json={"title": "Buy milk", "tags": ["home"]})
    assert created.status_code == 201, created.text
    task = created.json()
    assert task["user_id"] == user_id
    assert created.headers["Location"] == f"/api/tasks/{task['id']}"

    listed = service.get("/api/tasks", headers=auth)
    assert listed.status_code == 200 and [t["id"] for t in listed.json()] == [task["id"]]
    assert service.get(f"/api/{user_id}/tasks", headers=auth).json() == listed.json()  # Hackathon spelling

    read = service.get(f"/api/tasks/{task['id']}", headers=auth)
    assert read.status_code == 200 and read.json() == task

    patched = service.patch(
        f"/api/tasks/{task['id']}", headers={**auth, "If-Match": read.headers["ETag"]}, json={"title": "Buy oat milk"}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["title"] == "Buy oat milk"

    assert service.post(f"/api/tasks/{task['id']}/toggle", headers=auth).json()["completed"] is True
    assert service.get("/api/tasks/stats", headers=auth).json()["completed"] == 1
    assert service.get("/api/tags", headers=auth).json() == [{"tag": "home", "count": 1}]

    assert service.delete(f"/api/tasks/{task['id']}", headers=auth).status_code == 204
    assert service.get(f"/api/tasks/{task['id']}", headers=auth).status_code == 404


def test_another_better_auth_user_sees_none_of_the_first_users_tasks(
    service: TestClient, better_auth: BetterAuthServer
) -> None:
    alice, alice_claims = sign_up(better_auth, "Alice")
    bob, bob_claims = sign_up(better_auth, "Bob")
    assert alice_claims["sub"] != bob_claims["sub"]
    task = service.post("/api/tasks", headers=alice, json={"title": "Alice's secret"}).json()

    for method, path in [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/toggle")]:
        kwargs = {"json": {"title": "mine now"}} if method == "PATCH" else {}
        response = service.request(method, f"/api/tasks/{task['id']}{path}", headers=bob, **kwargs)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error_code"] == "TASK_NOT_FOUND"
    listed = service.get("/api/tasks", headers=bob)
    assert listed.status_code == 200 and listed.json() == [] and listed.headers["X-Total-Count"] == "0"
    assert service.get("/api/tasks/stats", headers=bob).json()["total"] == 0
    assert service.get(f"/api/{alice_claims['sub']}/tasks", headers=bob).status_code == 403

    unchanged = service.get(f"/api/tasks/{task['id']}", headers=alice)
    assert unchanged.status_code == 200 and unchanged.json() == task


def test_a_token_from_another_better_auth_instance_is_refused(
    service: TestClient, better_auth: BetterAuthServer
) -> None:
    auth, _ = sign_up(better_auth)
    assert service.get("/api/tasks", headers=auth).status_code == 200  # our instance's keys are known

    with start_better_auth(better_auth.alg) as other:  # another port, its own key pair
        other_auth, other_claims = sign_up(other, "Mallory")
    response = service.get("/api/tasks", headers=other_auth)
    assert response.status_code == 401, response.text
    assert response.json()["error_code"] == "UNAUTHORIZED"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert other_claims["sub"] not in response.text

    assert service.get("/api/tasks", headers=auth).status_code == 200  # and ours still work


def test_a_shared_secret_token_is_refused_when_only_better_auth_url_is_set(service: TestClient) -> None:
    response = service.get("/api/tasks", headers={"Authorization": f"Bearer {mint_token('alice')}"})
    assert response.status_code == 401
    assert response.json()["error_code"] == "UNAUTHORIZED"


def test_the_readme_client_code_gets_a_token_the_service_accepts(
    service: TestClient, better_auth: BetterAuthServer
) -> None:
    """README "Connect a Better Auth frontend": createAuthClient({plugins: [jwtClient()]}) and
    `const { data } = await authClient.token()`, run in Node against the real server."""
    email = f"carol-{uuid.uuid4().hex[:10]}@example.com"
    result = subprocess.run(
        ["node", "client_token.mjs", better_auth.base_url, email, PASSWORD, "Carol"],
        cwd=BETTER_AUTH_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["error"] is None and output["token"], output
    me = service.get("/api/me", headers={"Authorization": f"Bearer {output['token']}"})
    assert me.status_code == 200, me.text
    assert me.json()["email"] == email and me.json()["name"] == "Carol"
