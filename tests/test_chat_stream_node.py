"""Our UI message stream read by the real client: the Vercel AI SDK's `ai` package (pinned in
tests/chatstream, the transport and reader `useChat` uses) against the real service (uvicorn in a
subprocess) and the scripted model, on SQLite and PostgreSQL. The assistant's message it assembles
has the text, each tool call with its input and output, and the conversation id.

Needs Node.js >= 20: skipped without it, failed under CI.
"""
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from chat_support import model  # noqa: F401 (fixture)
from conftest import TEST_SECRET, mint_token, unavailable
from fake_model_server import ScriptedModel, error_status, text, tool_calls
from live_server import LiveServer
from tests.betterauth.harness import node_available

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent / "chatstream"


@pytest.fixture(scope="session")
def ai_package() -> None:
    if not node_available():
        unavailable("Node.js >= 20 and npm are not on PATH: the stream test reads our stream with the `ai` package.")
    if not (HERE / "node_modules" / "ai").is_dir():
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def server(database_url: str, model: ScriptedModel, ai_package: None):
    env = {"OPENAI_BASE_URL": model.base_url, "OPENAI_API_KEY": "", "CHAT_TIMEOUT_SECONDS": "5",
           "CHAT_RATE_LIMIT_PER_MINUTE": "0", "CHAT_MODEL": "scripted-model"}
    with LiveServer(database_url, secret=TEST_SECRET, env=env) as live:
        yield live


def use_chat(server: LiveServer, token: str, message: str, conversation_id: int | None = None) -> dict[str, Any]:
    arguments = [server.url, token, message] + ([str(conversation_id)] if conversation_id else [])
    done = subprocess.run(["node", "read_chat.mjs", *arguments], cwd=HERE, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def parts_of(message: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [part for part in message["parts"] if part["type"] == kind]


def test_use_chat_assembles_the_text_and_tool_parts(server: LiveServer, model: ScriptedModel):
    user_id = "node_chat_user"
    token = mint_token(user_id)
    model.script(tool_calls(("add_task", {"title": "Buy milk", "priority": "high"})), text("Added Buy milk for you."))
    read = use_chat(server, token, "Add buy milk")
    assert read["errors"] == []
    message = read["message"]
    assert message["role"] == "assistant" and message["id"].startswith("msg_")
    [conversation] = parts_of(message, "data-conversation")
    conversation_id = conversation["data"]["conversation_id"]
    [tool] = parts_of(message, "tool-add_task")
    assert tool["state"] == "output-available" and tool["providerExecuted"] is True
    assert tool["input"] == {"title": "Buy milk", "priority": "high"}
    assert tool["output"]["status"] == "created" and tool["output"]["task"]["title"] == "Buy milk"
    [answer] = parts_of(message, "text")
    assert answer == {**answer, "text": "Added Buy milk for you.", "state": "done"}

    model.script(tool_calls(("list_tasks", {})), text("One task: Buy milk."))
    again = use_chat(server, token, "What is left?", conversation_id)
    assert again["errors"] == [] and parts_of(again["message"], "text")[0]["text"] == "One task: Buy milk."
    assert parts_of(again["message"], "tool-list_tasks")[0]["output"]["total"] == 1
    assert parts_of(again["message"], "data-conversation")[0]["data"]["conversation_id"] == conversation_id
    stored = httpx.get(f"{server.url}/api/conversations/{conversation_id}", headers={"Authorization": f"Bearer {token}"})
    assert [m["role"] for m in stored.json()["messages"]] == ["user", "assistant", "user", "assistant"]


def test_use_chat_reports_a_failure_after_the_stream_started(server: LiveServer, model: ScriptedModel):
    token = mint_token("node_chat_failure")
    model.script(tool_calls(("add_task", {"title": "Buy milk"})), then=error_status())
    read = use_chat(server, token, "Add buy milk")
    assert len(read["errors"]) == 1 and read["errors"][0].startswith("CHAT_UNAVAILABLE: ")
    assert parts_of(read["message"], "tool-add_task")[0]["state"] == "output-available"
    assert parts_of(read["message"], "text") == []


def test_use_chat_gets_the_json_error_before_anything_streamed(server: LiveServer, model: ScriptedModel):
    model.script(then=error_status())
    read = use_chat(server, mint_token("node_chat_down"), "hello")
    assert read["message"] is None and '"error_code":"CHAT_UNAVAILABLE"' in read["errors"][0]
