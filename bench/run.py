"""Benchmark: our service against the floor (shared/bench/floor.py), side by side, in one run.

    .venv/bin/python bench/run.py                 # HS256 tokens (default)
    .venv/bin/python bench/run.py --auth eddsa    # ours verifies EdDSA tokens from a local JWKS
    .venv/bin/python bench/run.py --profile       # py-spy profile of ours under list + get-one load

Seeds two fresh databases (taskapi_bench for ours, floor_bench for the floor) with the same data,
starts ours the canonical way (`alembic upgrade head` then `uvicorn main:app --workers N`) and the
floor beside it, then drives both with wrk, alternating ours/floor per route for several rounds,
and prints requests/s, p50, p99, the ratio ours/floor and non-2xx counts, plus the resident memory
of each of our workers after 1,000 and 100,000 requests. The same goes to bench/results/latest.json.
Everything listens on 127.0.0.1; every server this script starts is stopped when it ends.
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import psycopg2
from psycopg2.extensions import parse_dsn

from seed import (  # bench/, beside this file
    BENCH_TASKS, BENCH_USER, SEED_USERS, TASKS_PER_USER, TREE_LIST_ID, TREE_TASKS, TREE_USER, WRITER_USER,
    recreate_database, seed_floor, seed_ours, seed_rows,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
LUA_DIR = BENCH_DIR / "lua"
RESULTS_DIR = BENCH_DIR / "results"
VENV_BIN = Path(sys.executable).parent if (Path(sys.executable).parent / "uvicorn").exists() else REPO / ".venv" / "bin"

OURS_DB, FLOOR_DB = "taskapi_bench", "floor_bench"
WRITERS = 64  # seeded users whose tokens the create_users route takes in turn
LIST_TREE = f"?list_id={TREE_LIST_ID}&sort=position&limit=500"
# Filter + search + a non-default sort; PATCH and toggle never touch tags or titles, so this
# route's result (5 tasks) stays the same through the run.
LIST_QUERY = "?tag=work&q=report&sort=due_date"
P99_TARGET_MS = 100.0
MEMORY_GROWTH_TARGET = 0.20

# name -> how ours and the floor are driven. The floor has no PATCH, toggle or filters: its README
# says to compare writes against its POST, and lists against its plain list.
ROUTES = {
    "list": dict(label="GET /api/tasks (50 tasks)", target=0.5,
                 ours=("get.lua", "/api/tasks", "bench", False), floor=("get.lua", "/api/tasks", "bench", False)),
    "get_one": dict(label="GET /api/tasks/{id}", target=0.5,
                    ours=("get_one.lua", "/api/tasks", "bench", True), floor=("get_one.lua", "/api/tasks", "bench", True)),
    "create": dict(label="POST /api/tasks", target=0.4,
                   ours=("create.lua", "/api/tasks", "writer", False), floor=("create.lua", "/api/tasks", "writer", False)),
    # The same creates from 64 users: a user's writes wait for each other (the per-user event
    # counter keeps the change feed in commit order, events.py); different users' writes do not.
    "create_users": dict(label=f"POST /api/tasks ({WRITERS} users in turn)", target=0.4,
                         ours=("create.lua", "/api/tasks", "writers", False), floor=("create.lua", "/api/tasks", "writers", False)),
    "update": dict(label="PATCH /api/tasks/{id}  (floor: POST)", target=0.4,
                   ours=("patch.lua", "/api/tasks", "bench", True), floor=("create.lua", "/api/tasks", "writer", False)),
    "toggle": dict(label="POST /api/tasks/{id}/toggle  (floor: POST)", target=0.4,
                   ours=("toggle.lua", "/api/tasks", "bench", True), floor=("create.lua", "/api/tasks", "writer", False)),
    "list_query": dict(label=f"GET /api/tasks{LIST_QUERY}  (floor: plain list)", target=None,
                       ours=("get.lua", "/api/tasks" + LIST_QUERY, "bench", False), floor=("get.lua", "/api/tasks", "bench", False)),
    "list_tree": dict(label=f"GET /api/tasks{LIST_TREE}  ({TREE_TASKS} tasks, 3 levels; floor: plain list)", target=None,
                      ours=("get.lua", "/api/tasks" + LIST_TREE, "tree", False), floor=("get.lua", "/api/tasks", "bench", False)),
}



def log(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- processes


class Processes:
    """Every process this script starts, each in its own process group, stopped in stop_all()."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: list[str], *, env: dict[str, str], cwd: Path, log_path: Path | None) -> subprocess.Popen:
        out = open(log_path, "wb") if log_path else subprocess.DEVNULL
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 10.0) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # the group holds the uvicorn master and its workers
            except ProcessLookupError:
                pass
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def stop_all(self) -> None:
        for _name, proc in reversed(list(self.procs)):
            self.stop(proc)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry))
    return sorted(found)


def worker_pids(master: int) -> list[int]:
    """uvicorn --workers N: the master's children that run spawn_main (not the resource tracker)."""
    pids = []
    for pid in children(master):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"resource_tracker" not in cmdline:
            pids.append(pid)
    return pids


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    ticks = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[pid] = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks


def cpu_delta(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU seconds used between two samples; a process that exited in between is left out."""
    return sum(t - before.get(pid, 0) for pid, t in after.items()) / os.sysconf("SC_CLK_TCK")


def postgres_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == "postgres":
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- tokens and JWKS


class Auth:
    """Tokens for the benchmark user and the writer user. The floor always gets HS256."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.secret = secrets.token_urlsafe(48)
        self.kid = "bench-" + secrets.token_hex(4)
        self.jwks_server: ThreadingHTTPServer | None = None
        self.jwks_url: str | None = None
        if mode == "eddsa":
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
            from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

            self.private_key = Ed25519PrivateKey.generate()
            raw = self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
            self.jwks = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": "EdDSA", "use": "sig"}]}

    def claims(self, user: str) -> dict:
        now = int(time.time())
        return {"sub": user, "iat": now, "exp": now + 3 * 3600, "email": f"{user}@bench.local", "name": user}

    def hs256(self, user: str) -> str:
        return jwt.encode(self.claims(user), self.secret, algorithm="HS256")

    def ours(self, user: str) -> str:
        if self.mode == "eddsa":
            return jwt.encode(self.claims(user), self.private_key, algorithm="EdDSA", headers={"kid": self.kid})
        return self.hs256(user)

    def start_jwks(self) -> None:
        if self.mode != "eddsa":
            return
        body = json.dumps(self.jwks).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args):
                pass

        self.jwks_server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.jwks_url = f"http://127.0.0.1:{self.jwks_server.server_address[1]}/api/auth/jwks"
        threading.Thread(target=self.jwks_server.serve_forever, daemon=True).start()

    def stop_jwks(self) -> None:
        if self.jwks_server is not None:
            self.jwks_server.shutdown()
            self.jwks_server.server_close()
            self.jwks_server = None


# --------------------------------------------------------------------------- databases and seed


def http(method: str, url: str, token: str | None = None, body: dict | None = None, timeout: float = 5.0):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()[:300]


def wait_ready(url: str, token: str | None, proc: subprocess.Popen, name: str, log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode} while starting; see {log_path}:\n{tail(log_path)}")
        try:
            status, _ = http("GET", url, token, timeout=2)
            if status == 200:
                return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"{name} not ready after {timeout:.0f}s ({url}); see {log_path}:\n{tail(log_path)}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Wrk:
    def __init__(self, connections: int, threads: int, timeout_s: int) -> None:
        self.connections, self.threads, self.timeout_s = connections, threads, timeout_s

    def run(self, base: str, script: str, path: str, token: str, ids: list[int], duration: float,
            limit: int | None = None, extra_env: dict[str, str] | None = None, connections: int | None = None) -> dict:
        connections = connections or self.connections
        env = {**os.environ, "BENCH_LUA_DIR": str(LUA_DIR), "BENCH_TOKEN": token,
               "BENCH_TASK_IDS": ",".join(map(str, ids)), **(extra_env or {})}
        if limit:
            env["BENCH_LIMIT_PER_THREAD"] = str(max(1, -(-limit // self.threads)))
        cmd = ["wrk", f"-t{self.threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
               f"--timeout={self.timeout_s}s", "-s", str(LUA_DIR / script), base + path]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watchdog = threading.Timer(duration + 60, proc.kill)
        watchdog.start()
        lines, finished = [], 0
        try:
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("BENCH_THREAD_DONE"):
                    finished += 1
                    if finished == self.threads:
                        # Every thread reached its request limit: wrk stops early on SIGINT and still reports.
                        proc.send_signal(signal.SIGINT)
            stderr = proc.stderr.read()
            proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for line in lines:
            if line.startswith("BENCH_JSON "):
                result = json.loads(line[len("BENCH_JSON "):])
                seconds = result["duration_us"] / 1e6
                result["rps"] = result["requests"] / seconds if seconds else 0.0
                result["p50_ms"] = result["latency_us"]["p50"] / 1000
                result["p99_ms"] = result["latency_us"]["p99"] / 1000
                result["socket_errors"] = sum(v for k, v in result["errors"].items() if k != "status")
                return result
        raise RuntimeError(f"wrk gave no result (exit {proc.returncode}): {' '.join(cmd)}\n{''.join(lines)}\n{stderr}")


# --------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs = Processes()
        self.auth = Auth(args.auth)
        self.wrk = Wrk(args.connections, args.threads, args.wrk_timeout)
        self.admin_dsn = args.pg
        pg = parse_dsn(args.pg)
        host, port, user = pg.get("host", "127.0.0.1"), pg.get("port", "5432"), pg.get("user", "postgres")
        password = f":{pg['password']}" if pg.get("password") else ""
        self.ours_url_db = f"postgresql://{user}{password}@{host}:{port}/{OURS_DB}"
        self.ours_dsn = psycopg2.extensions.make_dsn(args.pg, dbname=OURS_DB)
        self.floor_dsn = psycopg2.extensions.make_dsn(args.pg, dbname=FLOOR_DB)
        self.floor_dir = find_floor_dir()
        self.logs = RESULTS_DIR / "logs"
        self.ours_proc = self.floor_proc = None
        self.ours_base = self.floor_base = ""
        self.bench_ids: list[int] = []
        self.tokens: dict[str, dict[str, str]] = {}
        self.ours_requests = 0  # every request ours has answered since it started (for the memory check)
        self.rss: list[dict] = []

    # ---- setup
    def prepare(self) -> None:
        t0 = time.monotonic()
        self.logs.mkdir(parents=True, exist_ok=True)
        recreate_database(self.admin_dsn, OURS_DB)
        migrate = subprocess.run([str(VENV_BIN / "alembic"), "upgrade", "head"], cwd=REPO, env=self.ours_env(),
                                 capture_output=True, text=True, timeout=120)
        if migrate.returncode != 0:
            raise SystemExit(f"alembic upgrade head failed:\n{migrate.stdout}\n{migrate.stderr}")
        rows = seed_rows()
        seed_ours(self.ours_dsn, rows)
        self.bench_ids = [r["id"] for r in rows if r["user_id"] == BENCH_USER]
        if not self.args.no_floor:
            recreate_database(self.admin_dsn, FLOOR_DB)
            seed_floor(self.floor_dsn, (self.floor_dir / "floor_schema.sql").read_text(), rows)
        tags = sum(len(r["tags"]) for r in rows)
        log(f"seeded {len(rows):,} tasks ({SEED_USERS:,} users x {TASKS_PER_USER} + {BENCH_USER} x {BENCH_TASKS} "
            f"+ {TREE_USER} x {TREE_TASKS} in a tree), "
            f"{tags:,} tag rows, in {time.monotonic() - t0:.1f}s")
        writers = [f"user_{u:04d}" for u in range(1, WRITERS + 1)]
        self.tokens = {
            "ours": {"bench": self.auth.ours(BENCH_USER), "writer": self.auth.ours(WRITER_USER), "tree": self.auth.ours(TREE_USER),
                     "writers": ",".join(self.auth.ours(user) for user in writers)},
            "floor": {"bench": self.auth.hs256(BENCH_USER), "writer": self.auth.hs256(WRITER_USER), "tree": self.auth.hs256(TREE_USER),
                      "writers": ",".join(self.auth.hs256(user) for user in writers)},
        }

    def ours_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("NEON_DB_URL",)}
        env.update(
            DATABASE_URL=self.ours_url_db,
            BETTER_AUTH_SECRET=self.auth.secret if self.auth.mode == "hs256" else "",
            BETTER_AUTH_URL="",
            JWKS_URL=self.auth.jwks_url or "",
            RATE_LIMIT_PER_MINUTE=str(self.args.rate_limit),
            PYTHONDONTWRITEBYTECODE="1",
        )
        if self.args.log_level:
            env["LOG_LEVEL"] = self.args.log_level
        return env

    def start_ours(self) -> None:
        port = free_port()
        self.ours_base = f"http://127.0.0.1:{port}"
        # The canonical start, as the Dockerfile and the README run it.
        command = (f'"{VENV_BIN}/alembic" upgrade head && exec "{VENV_BIN}/uvicorn" main:app --host 127.0.0.1 '
                   f"--port {port} --workers {self.args.workers} --no-access-log")
        log_path = self.logs / "ours.log"
        self.ours_proc = self.procs.start("ours", ["sh", "-c", command], env=self.ours_env(), cwd=REPO, log_path=log_path)
        wait_ready(self.ours_base + "/health/ready", None, self.ours_proc, "ours", log_path)
        self.wait_workers(self.ours_proc, self.args.workers, "ours")

    def start_floor(self) -> None:
        port = free_port()
        self.floor_base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "BETTER_AUTH_SECRET": self.auth.secret, "FLOOR_DSN": self.floor_dsn}
        cmd = [str(VENV_BIN / "uvicorn"), "floor:app", "--app-dir", str(self.floor_dir), "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(self.args.floor_workers), "--no-access-log"]
        log_path = self.logs / "floor.log"
        self.floor_proc = self.procs.start("floor", cmd, env=env, cwd=REPO, log_path=log_path)
        wait_ready(self.floor_base + "/api/tasks", self.tokens["floor"]["bench"], self.floor_proc, "floor", log_path)
        self.wait_workers(self.floor_proc, self.args.floor_workers, "floor")

    def ours_workers(self) -> list[int]:
        """The pids that serve requests: the master's children, or the master itself with --workers 1."""
        return [self.ours_proc.pid] if self.args.workers == 1 else worker_pids(self.ours_proc.pid)

    @staticmethod
    def wait_workers(proc: subprocess.Popen, count: int, name: str) -> None:
        deadline = time.monotonic() + 30
        if count == 1:
            return  # uvicorn serves in the master process itself
        while len(worker_pids(proc.pid)) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"{name}: expected {count} workers, found {worker_pids(proc.pid)}")
            time.sleep(0.2)

    def check_routes(self) -> None:
        """One request per route on each server: right status, right size. Fails fast on a setup error."""
        tid = self.bench_ids[0]
        o, f = self.tokens["ours"], self.tokens["floor"]
        checks = [
            ("ours list", "GET", self.ours_base + "/api/tasks", o["bench"], None, 200, BENCH_TASKS),
            ("ours list_query", "GET", self.ours_base + "/api/tasks" + LIST_QUERY, o["bench"], None, 200, None),
            ("ours list_tree", "GET", self.ours_base + "/api/tasks" + LIST_TREE, o["tree"], None, 200, TREE_TASKS),
            ("ours get_one", "GET", f"{self.ours_base}/api/tasks/{tid}", o["bench"], None, 200, None),
            ("ours update", "PATCH", f"{self.ours_base}/api/tasks/{tid}", o["bench"], {"description": "check"}, 200, None),
            ("ours toggle", "POST", f"{self.ours_base}/api/tasks/{tid}/toggle", o["bench"], None, 200, None),
            ("ours toggle", "POST", f"{self.ours_base}/api/tasks/{tid}/toggle", o["bench"], None, 200, None),
            ("ours create", "POST", self.ours_base + "/api/tasks", o["writer"], {"title": "check", "tags": ["a"]}, 201, None),
        ]
        if self.floor_proc:
            checks += [
                ("floor list", "GET", self.floor_base + "/api/tasks", f["bench"], None, 200, BENCH_TASKS),
                ("floor get_one", "GET", f"{self.floor_base}/api/tasks/{tid}", f["bench"], None, 200, None),
                ("floor create", "POST", self.floor_base + "/api/tasks", f["writer"], {"title": "check", "tags": ["a"]}, 201, None),
            ]
        for name, method, url, token, body, want, size in checks:
            status, payload = http(method, url, token, body)
            if status != want or (size is not None and len(payload) != size):
                raise SystemExit(f"pre-flight {name}: {method} {url} gave {status} "
                                 f"({len(payload) if isinstance(payload, list) else payload!r}), expected {want}")
        _, found = http("GET", self.ours_base + "/api/tasks" + LIST_QUERY, o["bench"])
        self.ours_requests += sum(1 for check in checks if check[0].startswith("ours")) + 1
        log(f"pre-flight ok: list returns {BENCH_TASKS} tasks on both; list_query returns {len(found)} tasks")

    def warm_up(self) -> None:
        seconds = self.args.warmup
        if seconds <= 0:
            return
        for route in ("list", "get_one", "update"):
            self.drive("ours", route, seconds)
            if self.floor_proc:
                self.drive("floor", route, seconds)

    def drive(self, side: str, route: str, duration: float, **kwargs) -> dict:
        script, path, who, uses_ids = ROUTES[route][side]
        return self.drive_script(side, script, path, who, uses_ids, duration, **kwargs)

    def drive_script(self, side: str, script: str, path: str, who: str, uses_ids: bool, duration: float, **kwargs) -> dict:
        base = self.ours_base if side == "ours" else self.floor_base
        proc = self.ours_proc if side == "ours" else self.floor_proc
        server0, pg0 = cpu_ticks([proc.pid, *worker_pids(proc.pid)]), cpu_ticks(postgres_pids())  # [pid] alone with 1 worker
        wrk0, busy0, t0 = children_cpu_seconds(), machine_busy_seconds(), time.monotonic()
        result = self.wrk.run(base, script, path, self.tokens[side][who], self.bench_ids if uses_ids else [], duration, **kwargs)
        elapsed = time.monotonic() - t0
        server = cpu_delta(server0, cpu_ticks([proc.pid, *worker_pids(proc.pid)]))
        pg = cpu_delta(pg0, cpu_ticks(postgres_pids()))
        wrk_cpu = children_cpu_seconds() - wrk0
        busy = machine_busy_seconds() - busy0
        requests = max(result["requests"], 1)
        result["cpu_cores"] = {  # average cores busy during the run, by whom
            "server": round(server / elapsed, 2), "postgres": round(pg / elapsed, 2), "wrk": round(wrk_cpu / elapsed, 2),
            "other": round(max(0.0, busy - server - pg - wrk_cpu) / elapsed, 2), "machine": round(busy / elapsed, 2),
        }
        result["wall_s"] = round(elapsed, 3)
        result["server_cpu_us_per_req"] = round(server / requests * 1e6, 1)
        result["postgres_cpu_us_per_req"] = round(pg / requests * 1e6, 1)
        if side == "ours":
            self.ours_requests += result["requests"]
        return result

    # ---- phases
    # ---- memory: RSS of each of our workers after its first 1,000 requests and after 100,000.
    # The rounds' own requests count; the mixed script (every route in turn) tops up the rest.
    def rss_sample(self, label: str) -> None:
        workers = self.ours_workers()
        sample = {"label": label, "requests": self.ours_requests, "rss_kib": {str(pid): rss_kib(pid) for pid in workers}}
        self.rss.append(sample)
        log(f"memory: {self.ours_requests:>7,} requests ({label}): RSS per worker "
            + "  ".join(f"{kib / 1024:.1f}" for kib in sample["rss_kib"].values()) + " MiB")

    def mixed(self, requests: int, duration: float) -> dict:
        extra = {"BENCH_WRITER_TOKEN": self.tokens["ours"]["writer"], "BENCH_LIST_QUERY": LIST_QUERY}
        return self.drive_script("ours", "mixed.lua", "/api/tasks", "bench", True, duration, limit=requests, extra_env=extra)

    def memory_first(self) -> None:
        self.rss_sample("fresh workers")
        result = self.mixed(1000 - self.ours_requests, 60)
        self.memory_errors = result["non2xx"] + result["socket_errors"]
        self.rss_sample("first 1,000")

    def memory_finish(self, deadline: float) -> dict:
        target = self.args.memory_requests
        while self.ours_requests < target * 0.995:
            left = deadline - time.monotonic()
            if left < 2:
                log(f"memory: time budget spent at {self.ours_requests:,} of {target:,} requests")
                break
            chunk = min(target - self.ours_requests, max(10_000, target // 4))
            result = self.mixed(chunk, left)
            self.memory_errors += result["non2xx"] + result["socket_errors"]
            if self.ours_requests < target * 0.995:
                self.rss_sample("mixed")
        self.rss_sample("last")
        first = next(s for s in self.rss if s["label"] == "first 1,000")
        last = self.rss[-1]
        workers = {}
        for pid, start_kib in self.rss[0]["rss_kib"].items():
            a, b = first["rss_kib"].get(pid), last["rss_kib"].get(pid)
            if a is None or b is None:
                log(f"memory: WARNING worker {pid} is gone (restarted?)")
                continue
            workers[pid] = {"rss_start_kib": start_kib, "rss_after_first_kib": a, "rss_after_last_kib": b, "growth": round((b - a) / a, 4)}
        reached = last["requests"] >= target * 0.99
        return {"requests_first": first["requests"], "requests_last": last["requests"], "target_requests": target,
                "reached_target": reached, "samples": self.rss, "workers": workers,
                "non2xx_or_errors_mixed": self.memory_errors,
                "pass": reached and bool(workers) and all(w["growth"] <= MEMORY_GROWTH_TARGET for w in workers.values())}

    def rounds(self) -> dict:
        results = {name: {"ours": [], "floor": []} for name in self.args.routes}
        for r in range(1, self.args.rounds + 1):
            for name in self.args.routes:
                ours = self.drive("ours", name, self.args.duration)
                results[name]["ours"].append(ours)
                line = f"[round {r}/{self.args.rounds}] {name:<11} ours {ours['rps']:8.0f} rps p99 {ours['p99_ms']:6.1f} ms"
                if self.floor_proc:
                    floor = self.drive("floor", name, self.args.duration)
                    results[name]["floor"].append(floor)
                    line += f" | floor {floor['rps']:8.0f} rps p99 {floor['p99_ms']:6.1f} ms | ratio {ours['rps'] / floor['rps']:.2f}"
                other = max(run["cpu_cores"]["other"] for run in (ours, floor if self.floor_proc else ours))
                if other >= 0.25:
                    line += f"  [other processes busy: {other:.1f} cores]"
                bad = ours["non2xx"] + ours["socket_errors"]
                log(line + (f"  non-2xx/errors {bad} {ours['statuses']}" if bad else ""))
            if self.rss:
                self.rss_sample(f"after round {r}")
        return {name: summarise(name, runs) for name, runs in results.items()}

    # ---- profile
    def profile(self) -> dict:
        py_spy = shutil.which("py-spy") or str(VENV_BIN / "py-spy")
        if not Path(py_spy).exists():
            raise SystemExit("py-spy is missing: .venv/bin/pip install py-spy")
        out = RESULTS_DIR / "profile"
        out.mkdir(parents=True, exist_ok=True)
        workers = self.ours_workers()
        seconds = self.args.profile_seconds
        report = {}
        for route in self.args.profile_routes.split(","):
            # Same load on both workers: worker 0 sampled with idle threads (wall clock: where a request
            # waits), worker 1 only while a thread holds the GIL (where Python CPU goes).
            # Non-blocking sampling, so the workers are not paused.
            files = {"wall": out / f"{route}-wall.txt", "gil": out / f"{route}-gil.txt"}
            options = {"wall": ["--idle", "--rate", "50"], "gil": ["--gil", "--rate", "100"]}
            spies = []
            for (kind, path), pid in zip(files.items(), workers):
                path.unlink(missing_ok=True)
                spies.append(self.procs.start(
                    f"py-spy {route} {kind}",
                    [py_spy, "record", "--pid", str(pid), "--duration", str(seconds), "--nonblocking", *options[kind],
                     "--format", "raw", "-o", str(path)],
                    env=dict(os.environ), cwd=REPO, log_path=out / f"{route}-{kind}.log"))
            result = self.drive("ours", route, seconds + 2)
            for spy in spies:
                try:
                    spy.wait(60)
                except subprocess.TimeoutExpired:
                    pass
                self.procs.stop(spy)
            log(f"profile {route}: {result['rps']:.0f} rps under py-spy (sampling slows it), p99 {result['p99_ms']:.1f} ms")
            sys.path.insert(0, str(BENCH_DIR))
            from profile_summary import summarise_file

            report[route] = {}
            for kind, path in files.items():
                if path.exists():
                    text, data = summarise_file(path, kind)
                    (out / f"{route}-{kind}-summary.txt").write_text(text)
                    log(f"\n=== {route}: {kind} ===\n{text}")
                    report[route][kind] = data
        log(f"profiles (collapsed stacks; open in https://www.speedscope.app or flamegraph.pl): {out}")
        return report


def summarise(name: str, runs: dict) -> dict:
    def med(side: str, key: str) -> float | None:
        values = [run[key] for run in runs[side]]
        return statistics.median(values) if values else None

    spec = ROUTES[name]
    out = {"label": spec["label"], "target_ratio": spec["target"], "runs": runs}
    for side in ("ours", "floor"):
        if runs[side]:
            out[side] = {
                "rps": round(med(side, "rps"), 1), "p50_ms": round(med(side, "p50_ms"), 2), "p99_ms": round(med(side, "p99_ms"), 2),
                "non2xx": sum(r["non2xx"] for r in runs[side]), "socket_errors": sum(r["socket_errors"] for r in runs[side]),
                "requests": sum(r["requests"] for r in runs[side]),
                "server_cpu_us_per_req": round(med(side, "server_cpu_us_per_req"), 1),
                "postgres_cpu_us_per_req": round(med(side, "postgres_cpu_us_per_req"), 1),
                "cpu_cores": {k: round(statistics.median(r["cpu_cores"][k] for r in runs[side]), 2)
                              for k in ("server", "postgres", "wrk", "other", "machine")},
            }
    if runs["floor"]:
        ratios = [o["rps"] / f["rps"] for o, f in zip(runs["ours"], runs["floor"]) if f["rps"]]
        out["ratio"] = round(statistics.median(ratios), 3)
        out["ratio_per_round"] = [round(x, 3) for x in ratios]
        # What the ratio would be if both were CPU-bound on a quiet machine: CPU per request (server
        # processes + PostgreSQL) of the floor over ours. Unlike rps, other processes barely move it.
        cost = {side: out[side]["server_cpu_us_per_req"] + out[side]["postgres_cpu_us_per_req"] for side in ("ours", "floor")}
        out["cpu_ratio"] = round(cost["floor"] / cost["ours"], 3) if cost["ours"] else None
    ours = out["ours"]
    checks = {"p99": ours["p99_ms"] < P99_TARGET_MS, "no_errors": ours["non2xx"] == 0 and ours["socket_errors"] == 0}
    if spec["target"] is not None and "ratio" in out:
        checks["ratio"] = out["ratio"] >= spec["target"]
    out["checks"] = checks
    out["pass"] = all(checks.values())
    return out


def find_floor_dir() -> Path:
    for candidate in (os.environ.get("FLOOR_DIR"), REPO.parent / "shared" / "bench"):
        if candidate and (Path(candidate) / "floor.py").exists():
            return Path(candidate).resolve()
    raise SystemExit("floor.py not found: expected ../shared/bench/ beside the repo, or set FLOOR_DIR")


def print_table(routes: dict, memory: dict | None, meta: dict) -> None:
    log("")
    if routes:
        print_routes(routes, meta)
    if memory:
        print_memory(memory)


def print_routes(routes: dict, meta: dict) -> None:
    log(f"ours: {meta['workers']} workers, auth {meta['auth'].upper()}"
        + (" (floor: HS256 always)" if meta["auth"] != "hs256" else "")
        + f" | floor: {meta['floor_workers']} workers | wrk -t{meta['threads']} -c{meta['connections']} "
        f"{meta['duration']}s x {meta['rounds']} rounds, medians")
    header = (f"{'route':<11} {'ours rps':>9} {'floor rps':>9} {'ratio':>6} {'target':>7}  {'ours p50/p99 ms':>16}  "
              f"{'floor p50/p99 ms':>16}  {'non-2xx o/f':>11}  {'CPU us/req o/f':>14} {'cpu ratio':>9}  ok")
    log(header)
    log("-" * len(header))
    for name, r in routes.items():
        o, f = r["ours"], r.get("floor")
        target = f">={r['target_ratio']:.1f}" if r["target_ratio"] is not None else "-"
        errors_o = o["non2xx"] + o["socket_errors"]
        errors_f = (f["non2xx"] + f["socket_errors"]) if f else "-"
        log(f"{name:<11} {o['rps']:>9.0f} {f['rps'] if f else float('nan'):>9.0f} {r.get('ratio', float('nan')):>6.2f} {target:>7}  "
            f"{o['p50_ms']:>7.1f} / {o['p99_ms']:>6.1f}  "
            + (f"{f['p50_ms']:>7.1f} / {f['p99_ms']:>6.1f}" if f else f"{'-':>16}")
            + f"  {str(errors_o) + '/' + str(errors_f):>11}  "
            + f"{str(round(o['server_cpu_us_per_req'])) + '/' + (str(round(f['server_cpu_us_per_req'])) if f else '-'):>14} "
            + f"{r['cpu_ratio'] if r.get('cpu_ratio') is not None else float('nan'):>9.2f}  "
            + ("PASS" if r["pass"] else "FAIL " + ",".join(k for k, v in r["checks"].items() if not v)))
    log("targets: ratio ours/floor >= 0.5 (list, get_one), >= 0.4 (create, update, toggle; floor = its POST); "
        f"p99 < {P99_TARGET_MS:.0f} ms and zero non-2xx on every route (ours).")
    log("CPU us/req: CPU time of the server's processes per request. cpu ratio: floor/ours CPU per request "
        "(server + PostgreSQL), the throughput ratio to expect when both are CPU-bound; it holds on a busy machine.")
    others = [r[side]["cpu_cores"]["other"] for r in routes.values() for side in ("ours", "floor") if r.get(side)]
    if others:
        busiest = max(others)
        log(f"background: other processes used up to {busiest:.2f} of {os.cpu_count()} cores during the runs (median per route)"
            + ("  -> WARNING: the machine was not quiet; absolute numbers are low, ratios noisier" if busiest >= 0.25 else ""))


def print_memory(memory: dict) -> None:
    log("")
    log(f"memory: RSS per worker after the first {memory['requests_first']:,} requests and after {memory['requests_last']:,} "
        f"(all routes; non-2xx/errors in the mixed runs: {memory['non2xx_or_errors_mixed']})"
        + ("" if memory["reached_target"] else f"  -> target of {memory['target_requests']:,} NOT reached in the time budget"))
    for pid, w in memory["workers"].items():
        log(f"  worker {pid}: {w['rss_after_first_kib'] / 1024:7.1f} MiB -> {w['rss_after_last_kib'] / 1024:7.1f} MiB  "
            f"({w['growth'] * 100:+.1f}%, target <= +{MEMORY_GROWTH_TARGET * 100:.0f}%)  [at start {w['rss_start_kib'] / 1024:.1f} MiB]")
    if memory["reached_target"]:
        log(f"  memory: {'PASS' if memory['pass'] else 'FAIL'}")
    else:
        within = all(w["growth"] <= MEMORY_GROWTH_TARGET for w in memory["workers"].values())
        log(f"  memory: INCOMPLETE ({memory['requests_last']:,} of {memory['target_requests']:,} requests in the time budget; "
            f"growth so far {'within' if within else 'OVER'} target). Full check: .venv/bin/python bench/run.py --memory-only --budget 600")


def git_state() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                    capture_output=True, text=True).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except OSError:
        return {}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--auth", choices=["hs256", "eddsa"], default="hs256", help="token kind for ours (the floor is HS256 always)")
    p.add_argument("--workers", type=int, default=2, help="uvicorn workers for ours")
    p.add_argument("--floor-workers", type=int, default=2)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--duration", type=float, default=5, help="seconds per wrk run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per server and route before the rounds")
    p.add_argument("--routes", default=",".join(ROUTES), help="comma-separated subset of: " + ", ".join(ROUTES))
    p.add_argument("--memory-requests", type=int, default=100_000)
    p.add_argument("--budget", type=float, default=315,
                   help="seconds for the whole run; the memory top-up stops when it is spent")
    p.add_argument("--no-memory", action="store_true", help="skip the memory check")
    p.add_argument("--memory-only", action="store_true", help="only the memory check (no floor, no rounds)")
    p.add_argument("--no-floor", action="store_true", help="ours only (no ratios)")
    p.add_argument("--profile", action="store_true", help="py-spy profile of ours under list and get_one load, then stop")
    p.add_argument("--profile-seconds", type=int, default=10)
    p.add_argument("--profile-routes", default="list,get_one", help="with --profile: the routes to profile, comma-separated")
    p.add_argument("--rate-limit", type=int, default=0,
                   help="RATE_LIMIT_PER_MINUTE for ours; 0 = off (one user at thousands of req/s would be limited)")
    p.add_argument("--log-level", default="", help="LOG_LEVEL for ours (default: the service's own, as in production)")
    p.add_argument("--wrk-timeout", type=int, default=5, help="wrk --timeout seconds (slower responses count as errors)")
    p.add_argument("--pg", default=os.environ.get("BENCH_PG", "host=127.0.0.1 port=5432 user=postgres"),
                   help="libpq DSN of the PostgreSQL server (databases taskapi_bench and floor_bench are recreated)")
    p.add_argument("--output", type=Path, default=None,
                   help="JSON results (default bench/results/latest.json, and latest-<auth>.json beside it; "
                        "with --profile: bench/results/profile/profile.json)")
    args = p.parse_args(argv)
    args.routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    unknown = set(args.routes) - set(ROUTES)
    if unknown:
        p.error(f"unknown routes: {', '.join(sorted(unknown))}")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.memory_only or args.profile:
        args.no_floor = True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed. Install it with: sudo apt-get update && sudo apt-get install -y wrk")
    host = parse_dsn(args.pg).get("host", "127.0.0.1")
    if host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("/"):
        raise SystemExit(f"the bench only runs against a local PostgreSQL (got host={host})")
    started_at, t0 = dt.datetime.now(dt.timezone.utc), time.monotonic()
    if not (args.memory_only or args.profile):
        planned = len(args.routes) * args.rounds * args.duration * (1 if args.no_floor else 2) + 6 * args.warmup
        log(f"plan: {len(args.routes)} routes x {args.rounds} rounds x {args.duration:g}s x "
            f"{'1' if args.no_floor else '2'} servers (~{planned:.0f}s of wrk)"
            + ("" if args.no_memory else f", then the memory top-up to {args.memory_requests:,} requests")
            + f"; budget {args.budget:.0f}s")
    bench = Bench(args)

    def on_term(_signum, _frame):
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_term)
    memory = routes = profile = None
    try:
        bench.auth.start_jwks()
        bench.prepare()
        bench.start_ours()
        if not args.no_floor:
            bench.start_floor()
        log(f"ours: {bench.ours_base} (pid {bench.ours_proc.pid}, workers {bench.ours_workers()}, "
            f"auth {args.auth}{', JWKS ' + bench.auth.jwks_url if bench.auth.jwks_url else ''})"
            + (f" | floor: {bench.floor_base} (HS256)" if bench.floor_proc else ""))
        deadline = t0 + args.budget - 8  # leave time to stop the servers
        # The workers are fresh: "after the first 1,000 requests" is literal.
        if not args.no_memory and not args.profile:
            bench.memory_first()
        bench.check_routes()
        if args.profile:
            bench.warm_up()
            profile = bench.profile()
        else:
            if not args.memory_only:
                bench.warm_up()
                routes = bench.rounds()
            if not args.no_memory:
                memory = bench.memory_finish(deadline)
    finally:
        bench.procs.stop_all()
        bench.auth.stop_jwks()
    elapsed = round(time.monotonic() - t0, 1)
    meta = {"started": started_at.isoformat(timespec="seconds"), "elapsed_s": elapsed, "auth": args.auth,
            "floor_auth": "hs256", "workers": args.workers, "floor_workers": args.floor_workers,
            "connections": args.connections, "threads": args.threads, "duration": args.duration, "rounds": args.rounds,
            "rate_limit_per_minute": args.rate_limit, "cpus": os.cpu_count(), "git": git_state(),
            "seed": {"users": SEED_USERS, "tasks_per_user": TASKS_PER_USER, "bench_tasks": BENCH_TASKS,
                     "tree_tasks": TREE_TASKS},
            "list_query": LIST_QUERY, "list_tree": LIST_TREE}
    document = {"meta": meta, "routes": routes, "memory": memory, "profile": profile}
    if routes is not None:
        document["pass"] = all(r["pass"] for r in routes.values()) and (memory is None or memory["pass"])
        print_table(routes, memory, meta)
    elif memory is not None:
        document["pass"] = memory["pass"]
        print_table({}, memory, meta)
    text = json.dumps(document, indent=2)
    if args.output is None:
        args.output = RESULTS_DIR / "profile" / "profile.json" if args.profile else RESULTS_DIR / "latest.json"
        if not args.profile:
            (RESULTS_DIR / f"latest-{'memory' if args.memory_only else args.auth}.json").write_text(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    log(f"\n{'overall: ' + ('PASS' if document.get('pass') else 'FAIL') + ' | ' if 'pass' in document else ''}"
        f"wrote {args.output} in {elapsed}s total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
