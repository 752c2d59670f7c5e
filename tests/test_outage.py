"""Database outage (contract §6): while PostgreSQL is down, requests fail fast with 503
SERVICE_UNAVAILABLE and Retry-After, readiness is 503, nothing hangs; when it is back, the running
service recovers by itself.

Runs against a throwaway PostgreSQL cluster that the test creates (initdb), starts and stops, so the
shared server is never touched. Needs PostgreSQL's server binaries (initdb, pg_ctl)."""
import glob
import os
import pwd
import shutil
import signal
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


def cluster_processes(cluster: ThrowawayCluster) -> list[int]:
    """The postmaster and every process it started (backends, checkpointer, walwriter...)."""
    with open(os.path.join(cluster.data, "postmaster.pid")) as pid_file:
        postmaster = int(pid_file.readline())
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == postmaster:
                children.append(int(entry))
    return [postmaster, *children]


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def test_a_restart_right_after_traffic_costs_no_failed_request(cluster):
    user_id = f"restart_{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {mint_token(user_id)}"}
    with LiveServer(cluster.url, secret=TEST_SECRET, env={"LOG_LEVEL": "WARNING"}) as server, httpx.Client(
        base_url=server.url, headers=headers, timeout=30.0
    ) as http:
        task = http.post("/api/tasks", json={"title": "across restarts"}).json()
        for round_ in range(3):
            for _ in range(5):
                assert http.get("/api/tasks").status_code == 200
            cluster.stop("fast")
            cluster.start()
            read = http.get(f"/api/tasks/{task['id']}")  # no pause after the restart
            assert read.status_code == 200, (round_, read.text)
            cluster.stop("fast")
            cluster.start()
            write = http.patch(f"/api/tasks/{task['id']}", json={"title": f"round {round_}"})
            assert write.status_code == 200, (round_, write.text)


FROZEN_TIMEOUT_SECONDS = 2.0
FROZEN_MARGIN_SECONDS = 2.5


def test_a_frozen_database_gives_503_within_the_deadline_and_the_service_recovers(cluster):
    """SIGSTOP on every PostgreSQL process: what a frozen host, or a network that drops packets
    without resetting, looks like. Nothing answers, not even a cancel request."""
    user_id = f"frozen_{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {mint_token(user_id)}"}
    env = {"LOG_LEVEL": "WARNING", "DB_STATEMENT_TIMEOUT_SECONDS": str(FROZEN_TIMEOUT_SECONDS), "DB_POOL_SIZE": "3"}
    with LiveServer(cluster.url, secret=TEST_SECRET, env=env) as server, httpx.Client(
        base_url=server.url, headers=headers, timeout=60.0
    ) as http:
        task = http.post("/api/tasks", json={"title": "before the freeze"}).json()
        for _ in range(5):
            assert http.get("/api/tasks").status_code == 200
        frozen = cluster_processes(cluster)
        signal_all(frozen, signal.SIGSTOP)
        try:
            for method, path, kwargs in [
                ("GET", f"/api/tasks/{task['id']}", {}),
                ("GET", "/api/tasks", {}),
                ("PATCH", f"/api/tasks/{task['id']}", {"json": {"title": "during the freeze"}}),
                ("POST", "/api/tasks", {"json": {"title": "frozen", "tags": ["a"]}}),
                ("GET", "/api/tasks/stats", {}),
                ("GET", "/api/tasks", {}),
                ("GET", "/health/ready", {}),
            ]:
                response, elapsed = timed(http, method, path, **kwargs)
                assert response.status_code == 503, (method, path, response.text)
                assert int(response.headers["Retry-After"]) > 0
                assert elapsed < FROZEN_TIMEOUT_SECONDS + FROZEN_MARGIN_SECONDS, (method, path, elapsed)
            assert http.get("/health").status_code == 200
        finally:
            signal_all(frozen, signal.SIGCONT)
        after = http.get(f"/api/tasks/{task['id']}")
        assert after.status_code == 200, after.text
        assert after.json()["title"] in ("before the freeze", "during the freeze")
        assert http.post("/api/tasks", json={"title": "after the freeze"}).status_code == 201
        assert server.process.poll() is None
