"""CPU per request of the app itself: requests handed to the ASGI app in this process (no uvicorn,
no sockets, no wrk), on uvloop, against the database `make bench` seeded. Less noisy than the
bench (a few percent between runs instead of 10-20%), so a change of 5% in the request path shows:
run it before and after, alternating, a few times.

    make bench                                   # once: seeds taskapi_bench
    .venv/bin/python bench/inprocess.py get_one --requests 8000
    .venv/bin/python bench/inprocess.py update --concurrency 32

Routes: get_one, list, list_tree, update, toggle, create. Prints CPU and wall µs per request.
Writes change the benchmark users' tasks as the bench's own PATCH and toggle do."""
import argparse
import asyncio
import logging
import os
import secrets
import sys
import time
from pathlib import Path

import jwt
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
SECRET = secrets.token_urlsafe(48)
BENCH_TASK_IDS = range(20001, 20051)  # bench_user's 50 tasks (bench/seed.py)
TREE_LIST_ID = 100000  # bench_tree's list of 500 tasks (bench/seed_lists.py)
ROUTES = {
    "get_one": lambda i: ("GET", f"/api/tasks/{BENCH_TASK_IDS[i % 50]}", "bench_user", b""),
    "list": lambda i: ("GET", "/api/tasks", "bench_user", b""),
    "list_tree": lambda i: ("GET", f"/api/tasks?list_id={TREE_LIST_ID}&sort=position&limit=500", "bench_tree", b""),
    "update": lambda i: ("PATCH", f"/api/tasks/{BENCH_TASK_IDS[i % 50]}", "bench_user",
                         b'{"description":"Edited in-process (%d)","priority":"high"}' % i),
    "toggle": lambda i: ("POST", f"/api/tasks/{BENCH_TASK_IDS[i % 50]}/toggle", "bench_user", b""),
    "create": lambda i: ("POST", "/api/tasks", "bench_writer", b'{"title":"In-process %d","tags":["a","b"]}' % i),
}


def token(user: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + 3600}, SECRET, algorithm="HS256")


async def call(app, method: str, target: str, bearer: str, body: bytes) -> int:
    """One request through the whole app (middleware, routing, handler); its status."""
    path, _, query = target.partition("?")
    headers = [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {bearer}".encode())]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {},
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    statuses = []

    async def receive():
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client never disconnects

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    return statuses[0]


async def measure(route: str, requests: int, concurrency: int) -> None:
    import main  # after the environment is set: main builds its app from it

    app = main.create_app()
    logging.getLogger().handlers[0].stream = open(os.devnull, "w")  # the access log, formatted but not shown
    bearers = {user: token(user) for user in ("bench_user", "bench_writer", "bench_tree")}
    async with app.router.lifespan_context(app):
        for i in range(300):  # warm-up: connections, prepared statements, caches
            method, target, user, body = ROUTES[route](i)
            status = await call(app, method, target, bearers[user], body)
            assert status in (200, 201), f"{method} {target}: {status} (run `make bench` once to seed the database)"
        numbers = iter(range(requests))

        async def client() -> None:
            for i in numbers:
                method, target, user, body = ROUTES[route](i)
                await call(app, method, target, bearers[user], body)

        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{route}: {1e6 * cpu / requests:.0f} us CPU, {1e6 * wall / requests:.0f} us wall per request "
          f"({requests} requests, {concurrency} at a time)")


def run_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("route", choices=sorted(ROUTES))
    parser.add_argument("--requests", type=int, default=8000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/taskapi_bench")
    args = parser.parse_args()
    os.environ.update(DATABASE_URL=args.database_url, BETTER_AUTH_SECRET=SECRET, RATE_LIMIT_PER_MINUTE="0",
                      BETTER_AUTH_URL="", JWKS_URL="", LOG_LEVEL="INFO")
    uvloop.run(measure(args.route, args.requests, args.concurrency))


if __name__ == "__main__":
    run_cli()
