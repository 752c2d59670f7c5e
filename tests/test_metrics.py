"""GET /metrics (contract §6): Prometheus text, counting every worker process of the instance,
route templates as labels, pool gauges, rate-limited requests; METRICS_TOKEN protects it."""
import re
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import TEST_SECRET, make_settings, mint_token
from live_server import LiveServer
from main import create_app

SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")


def samples(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if not match or match["name"] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match["value"])
    return total


@pytest.fixture(scope="module")
def metrics_client(backend, scratch_database):
    app = create_app(make_settings(scratch_database(backend)))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_metrics_count_requests_by_method_route_template_and_status(metrics_client):
    headers = {"Authorization": f"Bearer {mint_token('metrics_' + uuid.uuid4().hex[:8])}"}
    before = metrics_client.get("/metrics").text
    task = metrics_client.post("/api/tasks", json={"title": "counted"}, headers=headers).json()
    for _ in range(3):
        assert metrics_client.get(f"/api/tasks/{task['id']}", headers=headers).status_code == 200
    assert metrics_client.get("/api/tasks/999999999", headers=headers).status_code == 404
    response = metrics_client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text
    route = "/api/tasks/{task_id}"
    name = "task_api_http_requests_total"

    def grown(**labels):
        return samples(after, name, **labels) - samples(before, name, **labels)

    assert grown(method="GET", route=route, status="200") == 3
    assert grown(method="GET", route=route, status="404") == 1
    assert grown(method="POST", route="/api/tasks", status="201") == 1
    histogram = "task_api_http_request_duration_seconds_count"
    assert samples(after, histogram, method="GET", route=route) - samples(before, histogram, method="GET", route=route) == 4
    assert f"/api/tasks/{task['id']}" not in after  # templates, never raw paths with ids
    for gauge in ("in_use", "open", "max"):
        assert f"task_api_db_pool_connections_{gauge} " in after
    assert "task_api_db_pool_requests_waiting " in after
    assert samples(after, "task_api_db_pool_connections_max") >= 1


def test_metrics_are_left_out_of_the_api_schema_and_documented_in_the_readme(metrics_client):
    schema = metrics_client.get("/openapi.json").json()
    assert not any("metrics" in path for path in schema["paths"])
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "GET /metrics" in readme and "METRICS_TOKEN" in readme


def test_an_invented_method_does_not_become_a_label(metrics_client):
    metrics_client.request("BREW", "/api/tasks")
    assert 'method="BREW"' not in metrics_client.get("/metrics").text


@pytest.fixture(scope="module")
def guarded_client(scratch_database):
    app = create_app(make_settings(scratch_database("sqlite"), metrics_token="s3cret-metrics-token", rate_limit_per_minute=2))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", "Bearer s3cret-metrics-tokenX", "Basic s3cret-metrics-token", "Bearer "]
)
def test_metrics_with_a_token_set_refuse_requests_without_it(guarded_client, authorization):
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = guarded_client.get("/metrics", headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["error_code"] == "UNAUTHORIZED"
    assert "s3cret" not in response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_metrics_with_the_token_are_served_and_never_rate_limited(guarded_client):
    for _ in range(5):  # the limit is 2 a minute
        response = guarded_client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics-token"})
        assert response.status_code == 200, response.text
    assert "task_api_http_requests_total" in response.text


def test_a_user_token_does_not_open_the_metrics(guarded_client):
    response = guarded_client.get("/metrics", headers={"Authorization": f"Bearer {mint_token('someone')}"})
    assert response.status_code == 401


def test_rate_limited_requests_are_counted(guarded_client):
    read = {"Authorization": "Bearer s3cret-metrics-token"}
    before = samples(guarded_client.get("/metrics", headers=read).text, "task_api_rate_limited_requests_total")
    user = {"Authorization": f"Bearer {mint_token('limited_' + uuid.uuid4().hex[:8])}"}
    statuses = [guarded_client.get("/api/tasks", headers=user).status_code for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 429]
    after = samples(guarded_client.get("/metrics", headers=read).text, "task_api_rate_limited_requests_total")
    assert after - before == 3


@pytest.mark.slow
def test_metrics_add_up_across_the_workers_of_an_instance_and_not_across_instances(scratch_database):
    url = scratch_database("sqlite")
    user = f"workers_{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {mint_token(user)}", "Connection": "close"}
    count = 0
    with LiveServer(url, secret=TEST_SECRET, workers=2) as server, LiveServer(url, secret=TEST_SECRET) as other:
        workers = set()  # a request id starts with its process's random prefix
        while count < 400 and (count < 40 or len(workers) < 2):  # until both workers answered some
            response = httpx.get(f"{server.url}/api/tasks", headers=headers)  # a new connection each time
            assert response.status_code == 200
            workers.add(response.headers["X-Request-ID"][:16])
            count += 1
        assert len(workers) == 2, count
        text = httpx.get(f"{server.url}/metrics").text
        assert samples(text, "task_api_http_requests_total", method="GET", route="/api/tasks", status="200") == count
        histogram = samples(text, "task_api_http_request_duration_seconds_count", method="GET", route="/api/tasks")
        assert histogram == count
        assert samples(text, "task_api_db_pool_connections_max") == 2 * 10  # two workers' pools, added up
        untouched = httpx.get(f"{other.url}/metrics").text
        assert samples(untouched, "task_api_http_requests_total", route="/api/tasks") == 0


@pytest.mark.slow
def test_an_explicit_prometheus_multiproc_dir_is_honoured(scratch_database, tmp_path):
    url = scratch_database("sqlite")
    with LiveServer(url, secret=TEST_SECRET, env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}) as server:
        assert httpx.get(f"{server.url}/health").status_code == 200
        text = httpx.get(f"{server.url}/metrics").text
    assert samples(text, "task_api_http_requests_total", route="/health", status="200") >= 1
    assert list(tmp_path.glob("counter_*.db")), list(tmp_path.iterdir())
