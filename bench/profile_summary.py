"""Summarise a py-spy raw (collapsed-stack) profile of the service by where the time goes.

    .venv/bin/python bench/profile_summary.py bench/results/profile/list-gil.txt [--top 15]

Each sample is attributed to a category (auth, FastAPI routing/dependencies, pydantic, SQLAlchemy,
psycopg2/DB calls, JSON, threadpool, middleware, logging, uvicorn/asyncio, our code): "own" goes to
the innermost frame that belongs to a known category, "total" counts a category once per sample
whose stack passes through it. Samples of idle threads (with py-spy --idle: threadpool threads
waiting for work, the event loop waiting in epoll) are counted apart, not in the percentages.
"""
from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# The DB driver runs in C under these SQLAlchemy frames: a sample whose innermost frame is one of
# them is time in psycopg2/libpq (the network round trip, or PostgreSQL's answer being parsed).
DB_CALLS = {"do_execute", "do_executemany", "do_execute_no_params", "do_commit", "do_rollback", "do_close",
            "_fetchall_impl", "_fetchone_impl", "_fetchmany_impl"}
PING_CALLS = {"do_ping"}

# (category, test on the frame file) in order: the first that matches wins.
CATEGORIES = [
    ("auth (PyJWT, our auth.py)", lambda f: f.endswith("auth.py") and "/" not in f or f.startswith(("jwt/", "cryptography/"))),
    ("logging (access log)", lambda f: f in ("logs.py",) or f.startswith("logging/")),
    ("middleware (ours + Starlette CORS/exceptions)", lambda f: f == "middleware.py" or f.startswith(("starlette/middleware/", "starlette/_exception_handler.py"))),
    ("JSON (orjson render, responses)", lambda f: f in ("responses.py",) or f.startswith(("orjson", "json/", "starlette/responses.py"))),
    ("pydantic validation", lambda f: f.startswith(("pydantic/", "pydantic_core/", "pydantic_settings/", "annotated_types/"))),
    ("FastAPI routing + dependency solving", lambda f: f.startswith(("fastapi/", "starlette/routing.py", "starlette/requests.py", "starlette/datastructures.py", "fastapi_offline/"))),
    ("SQLAlchemy/SQLModel (Python side)", lambda f: f.startswith(("sqlalchemy/", "sqlmodel/"))),
    ("psycopg2 (Python side)", lambda f: f.startswith("psycopg2/")),
    ("DB driver: psycopg 3 / aiosqlite (Python side)", lambda f: f.startswith(("psycopg/", "psycopg_binary/", "aiosqlite/"))),
    ("threadpool (anyio, to_thread)", lambda f: f.startswith(("anyio/", "starlette/concurrency.py", "concurrent/futures/", "queue.py"))),
    ("uvicorn / asyncio / HTTP parsing", lambda f: f.startswith(("uvicorn/", "asyncio/", "httptools/", "h11/", "uvloop/"))),
    ("our code (routes, store, schemas)", lambda f: f.startswith("routes/") or f in ("store.py", "schemas.py", "errors.py", "db.py", "models.py", "main.py", "config.py")),
    ("starlette (other)", lambda f: f.startswith("starlette/")),
]
DB = "psycopg2/libpq call (DB round trip + row parsing, C)"
PING = "pool pre-ping (SELECT 1 round trip, C)"
CONNECT = "new DB connection (psycopg2.connect: pool overflow)"
IDLE_POOL = "idle: threadpool thread waiting for work"
IDLE_LOOP = "idle: event loop in epoll / C (uvloop, httptools)"
IDLE_PING = "idle: uvicorn worker's supervisor-ping thread"
OTHER = "other (stdlib, typing, ...)"


def parse(path: Path) -> list[tuple[list[tuple[str, str]], int]]:
    samples = []
    for raw in path.read_text(errors="replace").splitlines():
        raw = raw.strip()
        if not raw:
            continue
        stack, _, count = raw.rpartition(" ")
        frames = []
        for part in stack.split(";"):
            match = FRAME.match(part.strip())
            frames.append((match["func"], match["file"]) if match else (part.strip(), ""))
        samples.append((frames, int(count)))
    return samples


def category_of_file(file: str) -> str | None:
    for name, test in CATEGORIES:
        if test(file):
            return name
    return None


def own_category(frames: list[tuple[str, str]]) -> str:
    func, file = frames[-1]
    if file.startswith("sqlalchemy/") and func.split(".")[-1] in DB_CALLS:
        return DB
    if file.startswith("sqlalchemy/") and func.split(".")[-1] in PING_CALLS:
        return PING
    if idle_kind(frames):
        return idle_kind(frames)
    if file.startswith("psycopg2/") and func == "connect":
        return CONNECT
    for func, file in reversed(frames):
        found = category_of_file(file)
        if found:
            return found
    return OTHER


def idle_kind(frames: list[tuple[str, str]]) -> str | None:
    func, file = frames[-1]
    files = {f for _, f in frames}
    short = func.split(".")[-1]
    if any(f.startswith("uvicorn/supervisors/") for f in files) and file.startswith("multiprocessing/"):
        return IDLE_PING
    if any(f.startswith(("anyio/", "concurrent/futures/")) for f in files) and (
        (file == "threading.py" and short in ("wait", "acquire")) or (file.startswith("queue.py") and short == "get")
        or (file.startswith("anyio/") and short in ("run",)) or (file.startswith("concurrent/futures/") and short == "_worker")
    ):
        return IDLE_POOL
    if file.startswith("asyncio/runners.py") or (file.startswith("asyncio/") and short in ("run_forever", "run_until_complete", "select")) \
            or file == "selectors.py" or (file.startswith("uvicorn/") and short in ("run", "serve", "main", "_serve")):
        return IDLE_LOOP
    if len(frames) <= 3 and file in ("<module>", "") or func == "<module>" and len(frames) == 1:
        return IDLE_LOOP
    return None


def summarise(samples, kind: str, top: int = 12) -> tuple[str, dict]:
    own, total, idle = Counter(), Counter(), Counter()
    func_own, func_total = Counter(), Counter()
    busy = 0
    for frames, count in samples:
        category = own_category(frames)
        if category.startswith("idle:"):
            idle[category] += count
            continue
        busy += count
        own[category] += count
        seen = {category}
        for func, file in frames:
            found = category_of_file(file)
            if found:
                seen.add(found)
        for name in seen:
            total[name] += count
        leaf = f"{frames[-1][0]} ({frames[-1][1]})"
        func_own[leaf] += count
        for name in {f"{func} ({file})" for func, file in frames}:
            func_total[name] += count
    pct = (lambda n: 100.0 * n / busy) if busy else (lambda n: 0.0)
    view = {"gil": "CPU: samples holding the GIL", "cpu": "on-CPU: running threads only (py-spy default)"}.get(
        kind, "wall clock: every thread not idle, incl. waiting for the GIL or the DB")
    lines = [f"{view}; {busy:,} busy samples" + (f", {sum(idle.values()):,} idle apart" if idle else ""), "",
             f"{'category':<56} {'own %':>6} {'total %':>8}"]
    for name, n in own.most_common():
        lines.append(f"{name:<56} {pct(n):6.1f} {pct(total[name]):8.1f}")
    for name, n in idle.most_common():
        lines.append(f"{name:<56} {'(' + format(n, ',') + ' samples)':>15}")
    lines += ["", "top functions by own time (innermost frame):"]
    for name, n in func_own.most_common(top):
        lines.append(f"  {pct(n):5.1f}%  {name}")
    lines += ["", "top functions by total time (on the stack), framework and app frames:"]
    shown = 0
    for name, n in func_total.most_common():
        func = name.split(" (", 1)[0]
        if func.endswith(("__call__", "<module>", "_bootstrap", "_bootstrap_inner", "run")) or any(
            skip in name for skip in ("(threading.py)", "(asyncio/", "(anyio/", "(concurrent/", "(uvicorn/", "(contextlib.py)",
                                      "(multiprocessing/", "(fastapi/telemetry/", "(starlette/_exception_handler.py)")):
            continue
        lines.append(f"  {pct(n):5.1f}%  {name}")
        shown += 1
        if shown >= top:
            break
    data = {"busy_samples": busy, "idle_samples": dict(idle),
            "own_pct": {k: round(pct(v), 1) for k, v in own.most_common()},
            "total_pct": {k: round(pct(v), 1) for k, v in total.most_common()},
            "top_own": [[k, round(pct(v), 1)] for k, v in func_own.most_common(top)]}
    return "\n".join(lines) + "\n", data


def summarise_file(path: Path, kind: str, top: int = 12) -> tuple[str, dict]:
    return summarise(parse(Path(path)), kind, top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--kind", choices=["cpu", "gil", "wall"], help="default: from the file name (…-cpu.txt, …-wall.txt)")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    kind = args.kind or next((k for k in ("cpu", "gil", "wall") if k in args.path.name), "cpu")
    print(summarise_file(args.path, kind, args.top)[0])


if __name__ == "__main__":
    main()
