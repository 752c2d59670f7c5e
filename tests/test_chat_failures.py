"""A failing model (contract §13): an error status, a refused connection, a timeout, an answer that
is not Chat Completions JSON. Each is 503 CHAT_UNAVAILABLE with Retry-After, never a 500, as JSON
or (after the stream started) as an `error` part; what happened stays true (the user's message and
the tool calls that ran are stored, no answer is). And the chat limits: Idempotency-Key and
CHAT_RATE_LIMIT_PER_MINUTE. On SQLite and PostgreSQL."""
import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from chat_support import (  # noqa: F401 (fixtures)
    CHAT_TIMEOUT, chat_app, chat_client, chat_settings, chatter, fresh_script, messages_of, model, say, sent_messages,
    stream_parts, titles, user_of,
)
from fake_model_server import ScriptedModel, error_status, hang, invalid_json, refused_url, text, tool_calls
from main import create_app

FAILURES = {"error status": error_status, "timeout": hang, "invalid JSON": invalid_json}
STREAM = {"Accept": "text/event-stream"}


def assert_unavailable(response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error_code"] == "CHAT_UNAVAILABLE"
    assert int(response.headers["Retry-After"]) > 0


def only_conversation(user) -> dict[str, Any]:
    listed = user.get("/api/conversations").json()
    assert len(listed) == 1
    return listed[0]


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failing_model_is_503_and_the_message_and_tools_that_ran_stay(chatter, model: ScriptedModel, failure):
    alice = chatter("alice")
    model.script(tool_calls(("add_task", {"title": "Buy milk"})), then=FAILURES[failure]())
    started = time.monotonic()
    response = say(alice, "add buy milk")
    assert_unavailable(response)
    if failure == "timeout":
        assert CHAT_TIMEOUT <= time.monotonic() - started < CHAT_TIMEOUT + 2
    assert titles(alice) == ["Buy milk"]  # the tool ran before the model failed: it is not undone
    messages = messages_of(alice, only_conversation(alice)["id"])
    assert [(m["role"], m["content"]) for m in messages] == [("user", "add buy milk")]  # no answer stored
    assert [(c["tool"], c["result"]["status"]) for c in messages[0]["tool_calls"]] == [("add_task", "created")]


def test_a_model_nothing_listens_on_is_503_and_the_message_stays(database_url):
    app = create_app(chat_settings(database_url, refused_url()))
    with TestClient(app, raise_server_exceptions=False) as client:
        alice = user_of(client, "alice")
        assert_unavailable(say(alice, "hello?"))
        conversation_id = only_conversation(alice)["id"]
        assert_unavailable(say(alice, "still there?", conversation_id, headers=STREAM))  # nothing streamed: JSON
        messages = messages_of(alice, conversation_id)
        assert [(m["role"], m["content"], m["tool_calls"]) for m in messages] == [
            ("user", "hello?", []), ("user", "still there?", []),
        ]


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failure_after_the_stream_started_is_an_error_part(chatter, model: ScriptedModel, failure):
    alice = chatter("alice")
    model.script(tool_calls(("add_task", {"title": "Buy milk"})), then=FAILURES[failure]())
    response = say(alice, "add buy milk", headers=STREAM)
    assert response.status_code == 200 and response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    parts = stream_parts(response.text)
    assert [p if p == "[DONE]" else p["type"] for p in parts] == [
        "start", "data-conversation", "tool-input-available", "tool-output-available", "error", "finish", "[DONE]",
    ]
    assert parts[4]["errorText"].startswith("CHAT_UNAVAILABLE: ") and parts[5]["finishReason"] == "error"
    messages = messages_of(alice, parts[1]["data"]["conversation_id"])
    assert [m["role"] for m in messages] == ["user"] and messages[0]["tool_calls"][0]["tool"] == "add_task"


def test_a_failure_before_anything_was_streamed_is_the_json_503(chatter, model: ScriptedModel):
    alice = chatter("alice")
    model.script(then=error_status(502))
    assert_unavailable(say(alice, "hi", headers=STREAM))


def test_the_next_turn_after_a_failure_sees_what_ran(chatter, model: ScriptedModel):
    alice = chatter("alice")
    model.script(tool_calls(("add_task", {"title": "Buy milk"})), then=error_status())
    assert_unavailable(say(alice, "add buy milk"))
    conversation_id = only_conversation(alice)["id"]
    model.script(text("Yes, it is on your list."))
    assert say(alice, "did it work?", conversation_id).status_code == 200
    sent = sent_messages(model.requests[0])
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user"]
    assert sent[1]["tool_calls"][0]["function"]["name"] == "add_task" and '"created"' in sent[2]["content"]


# ----------------------------------------------------------------------------------- Idempotency-Key


def test_a_retried_turn_returns_the_first_answer_and_runs_nothing_again(chatter, model: ScriptedModel):
    alice = chatter("alice")
    key = {"Idempotency-Key": "turn-1"}
    model.script(tool_calls(("add_task", {"title": "Buy milk"})), text("Added."))
    first = say(alice, "add buy milk", headers=key)
    again = say(alice, "add buy milk", headers=key)
    assert first.status_code == again.status_code == 200
    assert again.content == first.content and again.headers["Idempotent-Replayed"] == "true"
    assert model.calls == 2 and titles(alice) == ["Buy milk"]
    streamed = stream_parts(say(alice, "add buy milk", headers={**key, **STREAM}).text)  # replayed as a stream too
    assert [p["type"] for p in streamed[2:-2]] == ["tool-input-available", "tool-output-available",
                                                    "text-start", "text-delta", "text-end"]
    assert streamed[5]["delta"] == "Added." and model.calls == 2
    reused = say(alice, "something else", headers=key)
    assert reused.status_code == 422 and reused.json()["error_code"] == "IDEMPOTENCY_KEY_REUSED"
    assert len(messages_of(alice, first.json()["conversation_id"])) == 2


def test_a_retry_after_a_failure_takes_the_turn_up_without_running_its_tools_again(chatter, model: ScriptedModel):
    alice = chatter("alice")
    key = {"Idempotency-Key": "turn-2"}
    model.script(tool_calls(("add_task", {"title": "Buy milk"})), then=error_status())
    assert_unavailable(say(alice, "add buy milk", headers=key))
    model.script(text("Added Buy milk."))
    retried = say(alice, "add buy milk", headers=key)
    assert retried.status_code == 200, retried.text
    assert [call["tool"] for call in retried.json()["tool_calls"]] == ["add_task"]  # the first attempt's
    assert titles(alice) == ["Buy milk"]
    assert [m["role"] for m in sent_messages(model.requests[0])] == ["user", "assistant", "tool"]  # it saw the call
    messages = messages_of(alice, retried.json()["conversation_id"])
    assert [(m["role"], len(m["tool_calls"])) for m in messages] == [("user", 0), ("assistant", 1)]


def test_a_retry_while_the_turn_runs_is_409(chatter, model: ScriptedModel):
    alice = chatter("alice")
    key = {"Idempotency-Key": "turn-3"}
    model.script(hang(CHAT_TIMEOUT / 2), text("Done."))
    first: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: first.update(response=say(alice, "slow", headers=key)))
    worker.start()
    deadline = time.monotonic() + 5
    while model.calls == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    conflict = say(alice, "slow", headers=key)
    worker.join(10)
    assert conflict.status_code == 409 and conflict.json()["error_code"] == "CONFLICT"
    assert first["response"].status_code == 200


def test_a_bad_idempotency_key_is_422(chatter):
    response = say(chatter("alice"), "hi", headers={"Idempotency-Key": "not a key"})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "Idempotency-Key"


# -------------------------------------------------------------------------------------------- limits


def test_chat_turns_past_the_limit_are_429_and_the_rest_of_the_api_still_answers(database_url, model: ScriptedModel):
    app = create_app(chat_settings(database_url, model.base_url, chat_rate_limit_per_minute=2))
    with TestClient(app, raise_server_exceptions=False) as client:
        alice, bob = user_of(client, "alice"), user_of(client, "bob")
        assert [say(alice, "hi").status_code for _ in range(2)] == [200, 200]
        limited = say(alice, "hi")
        assert limited.status_code == 429 and limited.json()["error_code"] == "RATE_LIMITED"
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert model.calls == 2  # the refused turn never reached the model
        assert alice.get("/api/tasks").status_code == 200 and alice.get("/api/conversations").status_code == 200
        assert say(bob, "hi").status_code == 200  # per user
