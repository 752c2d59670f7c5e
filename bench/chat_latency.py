"""The chat path's own latency: what the service adds to a chat turn, the model's time taken out.

The real service (uvicorn, one worker) on a scratch database, talking to the scripted model of the
tests (tests/fake_model_server.py), which answers at once and times each call from its request
read to its answer sent. One client sends turns one after another, ten per conversation (so the
20-message window fills); a turn's added latency is its time at the client minus the time its
model calls spent in the model. The service's CPU per turn (its process's, from /proc) is less
sensitive to a busy machine than the wall clock. Scenarios: a text answer (one model call) and a tool call then a
text answer (two model calls, one add_task), each as JSON and as the UI message stream.

    .venv/bin/python bench/chat_latency.py --turns 200                      # PostgreSQL (local, scratch db)
    .venv/bin/python bench/chat_latency.py --turns 200 --database sqlite
"""
import argparse
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import jwt
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from config import Settings  # noqa: E402
from db import upgrade_schema  # noqa: E402
from fake_model_server import ScriptedModel, text, tool_calls  # noqa: E402
from live_server import LiveServer  # noqa: E402
from processes import cpu_delta, cpu_ticks  # noqa: E402

SECRET = "chat-bench-" + uuid.uuid4().hex + uuid.uuid4().hex
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
TURNS_PER_CONVERSATION = 10
SCENARIOS = {
    "text, JSON": (False, lambda n: [text(f"Answer number {n}, in a few words.")]),
    "tool + text, JSON": (False, lambda n: [tool_calls(("add_task", {"title": f"Task {n}"})), text("Added.")]),
    "text, stream": (True, lambda n: [text(f"Answer number {n}, in a few words.")]),
    "tool + text, stream": (True, lambda n: [tool_calls(("add_task", {"title": f"Task {n}"})), text("Added.")]),
}


@contextmanager
def scratch_database(kind: str):
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            url = f"sqlite:///{directory}/chat-bench.db"
            upgrade_schema(url)
            yield url
        return
    name = f"taskapi_chatbench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(Settings.normalise_database_url(POSTGRES_ADMIN), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = POSTGRES_ADMIN.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade_schema(Settings.normalise_database_url(url))
        yield url
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def token(user: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + 7200}, SECRET, algorithm="HS256")


def run_scenario(client: httpx.Client, model: ScriptedModel, streamed: bool, script, turns: int) -> list[float]:
    """Added milliseconds per turn."""
    headers = {"Authorization": f"Bearer {token('bench_' + uuid.uuid4().hex[:8])}"}
    if streamed:
        headers["Accept"] = "text/event-stream"
    added, conversation_id = [], None
    for n in range(turns):
        if n % TURNS_PER_CONVERSATION == 0:
            conversation_id = None
        model.script(*script(n))
        body = {"message": f"Message number {n}"} | ({"conversation_id": conversation_id} if conversation_id else {})
        started = time.perf_counter()
        response = client.post("/api/chat", json=body, headers=headers)
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, response.text
        if not streamed:
            conversation_id = response.json()["conversation_id"]
        elif conversation_id is None:
            conversation_id = int(response.text.split('"conversation_id":', 1)[1].split("}", 1)[0])
        added.append(1000 * (elapsed - sum(model.seconds)))
    return added


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=200, help="turns per scenario (after 20 of warm-up)")
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    args = parser.parse_args()
    with ScriptedModel() as model, scratch_database(args.database) as url:
        env = {"OPENAI_BASE_URL": model.base_url, "OPENAI_API_KEY": "", "CHAT_RATE_LIMIT_PER_MINUTE": "0",
               "LOG_LEVEL": "WARNING", "REMINDER_POLL_SECONDS": "0"}
        with LiveServer(url, secret=SECRET, env=env) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            print(f"chat turn, added latency (ms: the client's time minus the model's), {args.database}, "
                  f"{args.turns} turns per scenario, one at a time")
            print(f"{'scenario':<22}{'p50':>8}{'p95':>8}{'mean':>8}{'CPU':>8}   model calls")
            pid = server.process.pid
            for name, (streamed, script) in SCENARIOS.items():
                run_scenario(client, model, streamed, script, 20)  # warm-up
                before = cpu_ticks([pid])
                added = run_scenario(client, model, streamed, script, args.turns)
                cpu_ms = 1000 * cpu_delta(before, cpu_ticks([pid])) / args.turns
                print(f"{name:<22}{percentile(added, 0.5):>8.1f}{percentile(added, 0.95):>8.1f}"
                      f"{statistics.mean(added):>8.1f}{cpu_ms:>8.1f}   {len(script(0))}")


if __name__ == "__main__":
    main()
