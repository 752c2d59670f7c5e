"""What the chat tests share: the scripted model, an app configured with it (on each database),
users of that app, and readers of what the model was sent and of a UI message stream.

    from chat_support import chat_app, chat_client, chatter, model  # noqa: F401 (fixtures)
"""
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import ApiUser, make_settings, mint_token
from fake_model_server import ScriptedModel
from main import create_app

CHAT_TIMEOUT = 2.0  # seconds: a hanging model costs a test this long


@pytest.fixture(scope="session")
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as scripted:
        yield scripted


@pytest.fixture(autouse=True)
def fresh_script(model: ScriptedModel) -> None:
    model.script()


def chat_settings(database_url: str, base_url: str | None, **overrides: Any):
    values: dict[str, Any] = {
        "openai_base_url": base_url, "openai_api_key": None, "chat_timeout_seconds": CHAT_TIMEOUT,
        "chat_rate_limit_per_minute": 0, "chat_model": "scripted-model",
    }
    return make_settings(database_url, **{**values, **overrides})


@pytest.fixture(scope="session")
def chat_app(database_url: str, model: ScriptedModel):
    return create_app(chat_settings(database_url, model.base_url))


@pytest.fixture(scope="session")
def chat_client(chat_app) -> Iterator[TestClient]:
    with TestClient(chat_app, raise_server_exceptions=False) as test_client:
        yield test_client


def user_of(client: TestClient, prefix: str = "user") -> ApiUser:
    user_id = f"{prefix}_{uuid.uuid4().hex[:10]}"
    return ApiUser(client, user_id, mint_token(user_id))


@pytest.fixture
def chatter(chat_client: TestClient):
    """A factory of users of the chat app: `alice = chatter("alice")`."""
    return lambda prefix="user": user_of(chat_client, prefix)


def say(user: ApiUser, message: str, conversation_id: int | None = None, **kwargs: Any):
    body: dict[str, Any] = {"message": message}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    return user.post("/api/chat", json=body, **kwargs)


def sent_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    """What one model call was sent, without the instructions (the system message)."""
    return [message for message in request["messages"] if message["role"] != "system"]


def instructions_of(request: dict[str, Any]) -> str:
    return next(message["content"] for message in request["messages"] if message["role"] == "system")


def stream_parts(body: str) -> list[Any]:
    """The `data:` parts of a UI message stream, in order ([DONE] as the string)."""
    parts = []
    for event in body.split("\n\n"):
        for line in event.splitlines():
            if line.startswith("data: "):
                data = line[len("data: "):]
                parts.append(data if data == "[DONE]" else json.loads(data))
    return parts


def messages_of(user: ApiUser, conversation_id: int) -> list[dict[str, Any]]:
    response = user.get(f"/api/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    return response.json()["messages"]


def titles(user: ApiUser, **query: Any) -> list[str]:
    response = user.get("/api/tasks", params={"sort": "title", **query})
    assert response.status_code == 200, response.text
    return [task["title"] for task in response.json()]
