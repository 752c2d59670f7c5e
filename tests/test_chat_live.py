"""Chat on real servers (uvicorn subprocesses) and the scripted model:
- a client that goes away mid-stream ends the turn: the tool call that ran stays, no answer is
  stored, the model is not asked again, and the next turn works (SQLite and PostgreSQL);
- two instances behind one PostgreSQL and one Redis: a conversation started on one continues on
  the other (the history comes from the database), and the chat limit is shared.
"""
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from chat_support import model  # noqa: F401 (fixture)
from conftest import TEST_SECRET, mint_token
from fake_model_server import ScriptedModel, hang, text, tool_calls
from live_server import LiveServer
from test_two_instances import redis_url  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


def chat_env(model: ScriptedModel, **extra: str) -> dict[str, str]:
    return {"OPENAI_BASE_URL": model.base_url, "OPENAI_API_KEY": "", "CHAT_TIMEOUT_SECONDS": "8",
            "CHAT_RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "WARNING", **extra}


def client_for(server: LiveServer, user_id: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {mint_token(user_id)}"}, timeout=20)


@pytest.fixture(scope="module")
def server(database_url: str, model: ScriptedModel) -> Iterator[LiveServer]:
    with LiveServer(database_url, secret=TEST_SECRET, env=chat_env(model)) as live:
        yield live


def test_a_client_that_goes_away_mid_stream_ends_the_turn(server: LiveServer, model: ScriptedModel):
    user = client_for(server, f"gone_{uuid.uuid4().hex[:8]}")
    # Were the turn to go on, the hang would end in an error after 1.5 s, the client's retry would
    # get the late answer, and it would be stored.
    model.script(tool_calls(("add_task", {"title": "Buy milk"})), hang(1.5), text("A late answer."))
    with user.stream("POST", "/api/chat", json={"message": "add buy milk"}, headers={"Accept": "text/event-stream"}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if '"tool-output-available"' in line:
                break  # the tool ran; the client leaves (before or while the model is asked again)
    time.sleep(3)
    conversation = user.get("/api/conversations").json()
    messages = user.get(f"/api/conversations/{conversation[0]['id']}").json()["messages"]
    assert [(m["role"], [c["tool"] for c in m["tool_calls"]]) for m in messages] == [("user", ["add_task"])]
    assert [t["title"] for t in user.get("/api/tasks").json()] == ["Buy milk"]
    calls = model.calls
    model.script(text("Yes, it is there."))
    answer = user.post("/api/chat", json={"message": "is it there?", "conversation_id": conversation[0]["id"]})
    assert answer.status_code == 200 and answer.json()["response"] == "Yes, it is there."
    assert calls <= 2  # the gone turn made no call after the hanging one: no retry, no late answer


@pytest.fixture(scope="module")
def instances(scratch_database, redis_url: str, model: ScriptedModel) -> Iterator[tuple[LiveServer, LiveServer]]:  # noqa: F811
    database_url = scratch_database("postgres")
    env = chat_env(model, REDIS_URL=redis_url, CHAT_RATE_LIMIT_PER_MINUTE="3")
    first, second = LiveServer(database_url, secret=TEST_SECRET, env=env), LiveServer(database_url, secret=TEST_SECRET, env=env)
    try:
        first.start()
        second.start()
        yield first, second
    finally:
        first.stop()
        second.stop()


def test_a_conversation_continues_on_another_instance(instances, model: ScriptedModel):
    first, second = instances
    user_id = f"two_chat_{uuid.uuid4().hex[:8]}"
    model.script(tool_calls(("add_task", {"title": "Buy milk"})), text("Added."))
    started = client_for(first, user_id).post("/api/chat", json={"message": "add buy milk"})
    assert started.status_code == 200, started.text
    model.script(text("You have one task."))
    continued = client_for(second, user_id).post(
        "/api/chat", json={"message": "what do I have?", "conversation_id": started.json()["conversation_id"]}
    )
    assert continued.status_code == 200, continued.text
    sent = [m for m in model.requests[0]["messages"] if m["role"] != "system"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "assistant", "user"]


def test_the_chat_limit_is_shared_by_the_instances(instances, model: ScriptedModel):
    first, second = instances
    user_id = f"two_limit_{uuid.uuid4().hex[:8]}"
    statuses = [client_for(server, user_id).post("/api/chat", json={"message": "hi"}).status_code
                for server in (first, second, first, second)]
    if statuses[-1] != 429:  # the four straddled a minute boundary: once more, in a fresh window
        user_id += "_again"
        statuses = [client_for(server, user_id).post("/api/chat", json={"message": "hi"}).status_code
                    for server in (first, second, first, second)]
    assert statuses == [200, 200, 200, 429]
