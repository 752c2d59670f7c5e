"""Database outage (contract §6): while PostgreSQL is down, requests fail fast with 503
SERVICE_UNAVAILABLE and Retry-After, readiness is 503, nothing hangs; when it is back, the running
service recovers by itself.

Runs against a throwaway PostgreSQL cluster that the test creates (initdb), starts and stops, so the
shared server is never touched. Needs PostgreSQL's server binaries (initdb, pg_ctl)."""
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
import uuid

import httpx
import pytest

from config import Settings
from conftest import TEST_SECRET, mint_token, unavailable
from db import upgrade_schema
from live_server import LiveServer, free_port

pytestmark = pytest.mark.slow

FAIL_FAST_SECONDS = 5.0


def postgres_bin_dir() -> str | None:
    candidates = [os.environ.get("PG_BIN_DIR", "")] + sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for directory in candidates:
        if directory and os.path.exists(os.path.join(directory, "initdb")):
            return directory
    found = shutil.which("initdb")
    return os.path.dirname(found) if found else None


class ThrowawayCluster:
    """A PostgreSQL cluster in a temporary directory, on a free port, owned by the `postgres` user
    when we are root (initdb refuses to run as root)."""

    def __init__(self, bin_dir: str):
        self.bin_dir = bin_dir
        self.root = tempfile.mkdtemp(prefix="pg-outage-")  # short: the socket path has a length limit
        self.data = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "postgres.log")
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = self.as_user + [os.path.join(self.bin_dir, args[0]), *args[1:]]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            with open(self.log) as log:
                return log.read()[-2000:]
        except OSError:
            return ""

    def init(self) -> None:
        self._run("initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", self.data, "-o", options, "-l", self.log, "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "30", "stop")

    def destroy(self) -> None:
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl) not found; set PG_BIN_DIR"
        unavailable(message)
    cluster = ThrowawayCluster(bin_dir)
    try:
        cluster.init()
        cluster.start()
        upgrade_schema(Settings.normalise_database_url(cluster.url))
        yield cluster
    finally:
        cluster.destroy()


def timed(http: httpx.Client, method: str, path: str, **kwargs) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = http.request(method, path, **kwargs)
    return response, time.monotonic() - started


def assert_unavailable(response: httpx.Response, elapsed: float) -> None:
    assert response.status_code == 503, response.text
    assert elapsed < FAIL_FAST_SECONDS, f"took {elapsed:.1f} s"
    body = response.json()
    assert body["error_code"] == "SERVICE_UNAVAILABLE" and body["detail"] and body["timestamp"]
    assert int(response.headers["Retry-After"]) > 0
    assert response.headers["X-Request-ID"]
    assert "psycopg" not in response.text and "5432" not in response.text and "127.0.0.1" not in response.text


def test_database_down_gives_fast_503_and_the_service_recovers_without_restart(cluster):
    user_id = f"outage_{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {mint_token(user_id)}"}
    with LiveServer(cluster.url, secret=TEST_SECRET, env={"LOG_LEVEL": "WARNING"}) as server, httpx.Client(
        base_url=server.url, headers=headers, timeout=30.0
    ) as http:
        created = http.post("/api/tasks", json={"title": "before the outage"})
        assert created.status_code == 201, created.text
        task = created.json()
        assert http.get("/health/ready").status_code == 200
        for _ in range(5):  # warm the pool: several idle connections that are about to die
            assert http.get("/api/tasks").status_code == 200

        cluster.stop("fast")
        latencies = []
        for method, path, kwargs in [
            ("GET", "/api/tasks", {}),
            ("GET", f"/api/tasks/{task['id']}", {}),
            ("POST", "/api/tasks", {"json": {"title": "during the outage"}}),
            ("POST", "/api/tasks", {"json": {"title": "keyed"}, "headers": {"Idempotency-Key": "outage-key"}}),
            ("PATCH", f"/api/tasks/{task['id']}", {"json": {"title": "x"}}),
            ("DELETE", f"/api/tasks/{task['id']}", {}),
            ("GET", "/api/tasks/stats", {}),
        ]:
            response, elapsed = timed(http, method, path, **kwargs)
            assert_unavailable(response, elapsed)
            latencies.append(elapsed)
        ready, elapsed = timed(http, "GET", "/health/ready")
        assert_unavailable(ready, elapsed)
        assert http.get("/health").status_code == 200  # liveness does not depend on the database
        assert http.get("/api/me").status_code == 200  # nor do routes that do not touch it

        # Many at once: no pool exhaustion turning into a hang.
        results: list[tuple[httpx.Response, float] | BaseException] = []

        def hit() -> None:
            try:
                with httpx.Client(base_url=server.url, headers=headers, timeout=30.0) as own:
                    results.append(timed(own, "GET", "/api/tasks"))
            except BaseException as exc:
                results.append(exc)

        threads = [threading.Thread(target=hit) for _ in range(25)]
        burst_started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        burst = time.monotonic() - burst_started
        assert len(results) == 25 and not [r for r in results if isinstance(r, BaseException)], results
        for response, elapsed in results:  # type: ignore[misc]
            assert_unavailable(response, elapsed)

        cluster.start()
        # The very next request succeeds: dead pooled connections are replaced, no restart needed.
        after, elapsed = timed(http, "GET", "/api/tasks")
        assert after.status_code == 200, after.text
        assert [t["id"] for t in after.json()] == [task["id"]]
        assert http.get(f"/api/tasks/{task['id']}").json() == task
        assert http.post("/api/tasks", json={"title": "after the outage"}).status_code == 201
        assert http.get("/health/ready").status_code == 200
        assert server.process.poll() is None  # the same process served it all
    print(
        f"outage: 503 in {min(latencies):.3f}-{max(latencies):.3f} s, 25 concurrent 503s in {burst:.2f} s, "
        f"first request after restart {after.status_code} in {elapsed:.3f} s; burst latencies "
        f"{sorted(round(e, 2) for _, e in results)}"
    )
