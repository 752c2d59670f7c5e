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
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
from psycopg2.extensions import parse_dsn

from clients import Auth, Wrk, http, wait_ready  # bench/, beside this file
import profiling
from processes import (
    Processes, children_cpu_seconds, cpu_delta, cpu_ticks, free_port, machine_busy_seconds, postgres_pids, rss_kib,
    worker_pids,
)
from report import MEMORY_GROWTH_TARGET, log, print_table, summarise
from seed import (
    BENCH_TASKS, BENCH_USER, SEED_USERS, TASKS_PER_USER, TREE_LIST_ID, TREE_TASKS, TREE_USER, WRITER_USER,
    drop_indexes, floor_schema, recreate_database, seed_floor, seed_ours, seed_rows,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SHARED_FLOOR_DIR = REPO.parent / "shared" / "bench"  # the floor: ../shared/bench beside the repository
RESULTS_DIR = BENCH_DIR / "results"
VENV_BIN = Path(sys.executable).parent if (Path(sys.executable).parent / "uvicorn").exists() else REPO / ".venv" / "bin"

OURS_DB, FLOOR_DB = "taskapi_bench", "floor_bench"
WRITERS = 64  # seeded users whose tokens the create_users route takes in turn
LIST_TREE = f"?list_id={TREE_LIST_ID}&sort=position&limit=500"
# Filter + search + a non-default sort; PATCH and toggle never touch tags or titles, so this
# route's result (5 tasks) stays the same through the run.
LIST_QUERY = "?tag=work&q=report&sort=due_date"

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
                   ours=("patch.lua", "/api/tasks", "bench", True), floor=("create.lua", "/api/tasks", "writer", False),
                   fastapi_floor=("patch.lua", "/api/tasks", "bench", True)),
    "toggle": dict(label="POST /api/tasks/{id}/toggle  (floor: POST)", target=0.4,
                   ours=("toggle.lua", "/api/tasks", "bench", True), floor=("create.lua", "/api/tasks", "writer", False),
                   fastapi_floor=("toggle.lua", "/api/tasks", "bench", True)),
    "list_query": dict(label=f"GET /api/tasks{LIST_QUERY}  (floor: plain list)", target=None,
                       ours=("get.lua", "/api/tasks" + LIST_QUERY, "bench", False), floor=("get.lua", "/api/tasks", "bench", False)),
    "list_tree": dict(label=f"GET /api/tasks{LIST_TREE}  ({TREE_TASKS} tasks, 3 levels; floor: plain list)", target=None,
                      ours=("get.lua", "/api/tasks" + LIST_TREE, "tree", False), floor=("get.lua", "/api/tasks", "bench", False),
                      fastapi_floor=("get.lua", "/api/tasks" + LIST_TREE, "tree", False)),
}
# The least FastAPI app (FLOOR_DIR=bench/fastapi_floor) has the routes the floor lacks: `fastapi_floor`
# above is how it is driven for them (the same request as ours), instead of the floor's stand-in.
FASTAPI_FLOOR_DIR = BENCH_DIR / "fastapi_floor"


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
        if self.args.drop_index:
            drop_indexes(self.ours_dsn, self.args.drop_index)
            log(f"dropped {len(self.args.drop_index)} indexes of ours: {', '.join(self.args.drop_index)}")
        self.bench_ids = [r["id"] for r in rows if r["user_id"] == BENCH_USER]
        if not self.args.no_floor:
            recreate_database(self.admin_dsn, FLOOR_DB)
            seed_floor(self.floor_dsn, floor_schema(self.floor_dir, SHARED_FLOOR_DIR), rows)
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
        spec = ROUTES[route]
        like_ours = side == "floor" and self.floor_dir == FASTAPI_FLOOR_DIR.resolve() and "fastapi_floor" in spec
        script, path, who, uses_ids = spec["fastapi_floor" if like_ours else side]
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
        return {name: summarise(ROUTES[name], runs) for name, runs in results.items()}


def find_floor_dir() -> Path:
    for candidate in (os.environ.get("FLOOR_DIR"), SHARED_FLOOR_DIR):
        if candidate and (Path(candidate) / "floor.py").exists():
            return Path(candidate).resolve()
    raise SystemExit("floor.py not found: expected ../shared/bench/ beside the repo, or set FLOOR_DIR")


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
    p.add_argument("--drop-index", default="", metavar="NAMES",
                   help="comma-separated indexes to drop after seeding ours: what they cost the writes")
    p.add_argument("--output", type=Path, default=None,
                   help="JSON results (default bench/results/latest.json, and latest-<auth>.json beside it; "
                        "with --profile: bench/results/profile/profile.json)")
    args = p.parse_args(argv)
    args.routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    args.drop_index = [name.strip() for name in args.drop_index.split(",") if name.strip()]
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
            + (f" | floor: {bench.floor_base} (HS256, {bench.floor_dir}/floor.py)" if bench.floor_proc else ""))
        if bench.floor_proc and bench.floor_dir == FASTAPI_FLOOR_DIR.resolve():
            log("the least FastAPI app answers update, toggle and list_tree itself: the labels' '(floor: ...)' do not apply")
        deadline = t0 + args.budget - 8  # leave time to stop the servers
        # The workers are fresh: "after the first 1,000 requests" is literal.
        if not args.no_memory and not args.profile:
            bench.memory_first()
        bench.check_routes()
        if args.profile:
            bench.warm_up()
            profile = profiling.record(bench, VENV_BIN)
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
            "floor": str(bench.floor_dir / "floor.py"), "floor_auth": "hs256",
            "workers": args.workers, "floor_workers": args.floor_workers,
            "connections": args.connections, "threads": args.threads, "duration": args.duration, "rounds": args.rounds,
            "rate_limit_per_minute": args.rate_limit, "dropped_indexes": args.drop_index, "cpus": os.cpu_count(),
            "git": git_state(),
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
