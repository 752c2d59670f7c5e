"""The chat routes (contract §13) from the outside, on SQLite and PostgreSQL: conversations are per
user (another user's is a 404), both path spellings, bad input is a 422 naming the field, an
unconfigured server answers CHAT_NOT_CONFIGURED while the rest works, and the OpenAPI document
describes it all."""
import pytest
from fastapi.testclient import TestClient

from chat_support import (  # noqa: F401 (fixtures)
    chat_app, chat_client, chat_settings, chatter, fresh_script, messages_of, model, say, stream_parts, user_of,
)
from fake_model_server import ScriptedModel, text, tool_calls
from main import create_app


def test_conversations_are_listed_newest_first_read_and_deleted(chatter, model: ScriptedModel):
    alice = chatter("alice")
    model.script(text("hello"), text("second"), text("again"))
    first = say(alice, "First conversation\nwith a second line").json()["conversation_id"]
    second = say(alice, "Second conversation").json()["conversation_id"]
    say(alice, "back to the first", first)  # moves it up
    listed = alice.get("/api/conversations").json()
    assert [(c["id"], c["title"]) for c in listed] == [(first, "First conversation"), (second, "Second conversation")]
    assert listed[0]["updated_at"] >= listed[1]["updated_at"]
    assert [c["id"] for c in alice.get("/api/conversations", params={"limit": 1, "offset": 1}).json()] == [second]
    detail = alice.get(f"/api/conversations/{first}").json()
    assert [(m["role"], m["content"]) for m in detail["messages"]] == [
        ("user", "First conversation\nwith a second line"), ("assistant", "hello"),
        ("user", "back to the first"), ("assistant", "again"),
    ]
    assert set(detail["messages"][0]) == {"id", "role", "content", "tool_calls", "created_at"}
    assert alice.delete(f"/api/conversations/{first}").status_code == 204
    assert alice.get(f"/api/conversations/{first}").json()["error_code"] == "CONVERSATION_NOT_FOUND"
    assert alice.delete(f"/api/conversations/{first}").status_code == 404
    assert [c["id"] for c in alice.get("/api/conversations").json()] == [second]


def test_deleting_a_conversation_keeps_the_tasks_it_made(chatter, model: ScriptedModel):
    alice = chatter("alice")
    model.script(tool_calls(("add_task", {"title": "Buy milk"})), text("Added."))
    conversation_id = say(alice, "add buy milk").json()["conversation_id"]
    assert alice.delete(f"/api/conversations/{conversation_id}").status_code == 204
    assert [t["title"] for t in alice.get("/api/tasks").json()] == ["Buy milk"]


def test_another_users_conversation_is_not_found(chatter, model: ScriptedModel):
    alice, bob = chatter("alice"), chatter("bob")
    model.script(text("a secret answer"))
    conversation_id = say(alice, "my secret").json()["conversation_id"]
    for response in (
        bob.get(f"/api/conversations/{conversation_id}"),
        bob.delete(f"/api/conversations/{conversation_id}"),
        say(bob, "let me in", conversation_id),
    ):
        assert response.status_code == 404 and response.json()["error_code"] == "CONVERSATION_NOT_FOUND", response.text
    assert bob.get("/api/conversations").json() == []
    assert model.calls == 1  # bob's turn never reached the model
    assert len(messages_of(alice, conversation_id)) == 2


@pytest.mark.parametrize("conversation_id", [999_999_999, 2**31, 2**63])
def test_a_conversation_id_that_names_nothing_is_404(chatter, conversation_id):
    alice = chatter("alice")
    assert say(alice, "hi", conversation_id).json()["error_code"] == "CONVERSATION_NOT_FOUND"
    assert alice.get(f"/api/conversations/{conversation_id}").status_code == 404


def test_the_hackathon_spelling_with_the_user_id_in_the_path(chatter, model: ScriptedModel):
    alice, bob = chatter("alice"), chatter("bob")
    model.script(tool_calls(("add_task", {"title": "Buy milk"})), text("Added."))
    answer = alice.post(f"/api/{alice.user_id}/chat", json={"message": "add buy milk"})
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"conversation_id", "response", "tool_calls"}
    conversation_id = answer.json()["conversation_id"]
    assert alice.get(f"/api/{alice.user_id}/conversations").json() == alice.get("/api/conversations").json()
    assert alice.get(f"/api/{alice.user_id}/conversations/{conversation_id}").status_code == 200
    for response in (
        alice.post(f"/api/{bob.user_id}/chat", json={"message": "as bob"}),
        alice.get(f"/api/{bob.user_id}/conversations"),
        alice.delete(f"/api/{bob.user_id}/conversations/{conversation_id}"),
    ):
        assert response.status_code == 403 and response.json()["error_code"] == "FORBIDDEN"
    assert alice.delete(f"/api/{alice.user_id}/conversations/{conversation_id}").status_code == 204


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"message": ""}, "message"),
        ({"message": "   \n "}, "message"),
        ({"message": "x" * 4001}, "message"),
        ({"message": "nul \x00 inside"}, "message"),
        ({"message": 42}, "message"),
        ({}, "message"),
        ({"message": "hi", "conversation_id": "12"}, "conversation_id"),
        ({"message": "hi", "conversation_id": 0}, "conversation_id"),
        ({"message": "hi", "user_id": "someone"}, "user_id"),
        ({"message": "hi", "messages": []}, "messages"),
    ],
)
def test_bad_input_is_422_naming_the_field_and_reaches_no_model(chatter, model: ScriptedModel, body, field):
    response = chatter("alice").post("/api/chat", json=body)
    assert response.status_code == 422, response.text
    assert field in [error["field"] for error in response.json()["errors"]]
    assert model.calls == 0


def test_a_message_of_4000_characters_after_trimming_is_accepted(chatter, model: ScriptedModel):
    response = say(chatter("alice"), "  " + "x" * 4000 + "  ")
    assert response.status_code == 200, response.text
    assert model.requests[0]["messages"][-1]["content"] == "x" * 4000


def test_without_a_model_chat_is_503_chat_not_configured_and_the_rest_works(database_url):
    app = create_app(chat_settings(database_url, None))
    with TestClient(app, raise_server_exceptions=False) as client:
        alice = user_of(client, "alice")
        for response in (say(alice, "hi"), say(alice, "hi", headers={"Accept": "text/event-stream"}),
                         client.post("/chatkit", headers=alice.auth, json={"type": "threads.list", "params": {}})):
            assert response.status_code == 503, response.text
            assert response.json()["error_code"] == "CHAT_NOT_CONFIGURED"
            assert "OPENAI_API_KEY" in response.json()["detail"] and "OPENAI_BASE_URL" in response.json()["detail"]
        assert alice.get("/api/conversations").json() == []
        assert alice.post("/api/tasks", json={"title": "still works"}).status_code == 201


def test_chat_needs_a_token(chat_client: TestClient):
    for response in (chat_client.post("/api/chat", json={"message": "hi"}), chat_client.get("/api/conversations"),
                     chat_client.post("/chatkit", json={"type": "threads.list", "params": {}})):
        assert response.status_code == 401 and response.json()["error_code"] == "UNAUTHORIZED"


def test_the_openapi_document_describes_the_chat_routes(chat_client: TestClient):
    document = chat_client.get("/openapi.json").json()
    post = document["paths"]["/api/chat"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChatRequest")
    assert {"200", "404", "409", "422", "429", "503"} <= set(post["responses"])
    assert "text/event-stream" in post["responses"]["200"]["content"]
    assert "CHAT_UNAVAILABLE" in post["responses"]["503"]["description"]
    assert "/api/{user_id}/chat" in document["paths"]
    for path in ("/api/conversations", "/api/conversations/{conversation_id}", "/api/{user_id}/conversations"):
        assert path in document["paths"]
    assert document["paths"]["/api/conversations/{conversation_id}"]["get"]["responses"]["404"]
    schemas = document["components"]["schemas"]
    assert schemas["ChatRequest"]["properties"]["message"]["maxLength"] == 4000
    assert set(schemas["ChatAnswer"]["properties"]) == {"conversation_id", "response", "tool_calls"}
    assert "/chatkit" in document["paths"]


def test_a_streamed_turn_is_a_ui_message_stream(chatter, model: ScriptedModel):
    alice = chatter("alice")
    model.script(tool_calls(("add_task", {"title": "Buy milk"})), text("Added Buy milk."))
    response = say(alice, "add buy milk", headers={"Accept": "text/event-stream"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    parts = stream_parts(response.text)
    types = [p if p == "[DONE]" else p["type"] for p in parts]
    assert types == ["start", "data-conversation", "tool-input-available", "tool-output-available", "text-start",
                     "text-delta", "text-delta", "text-delta", "text-end", "finish", "[DONE]"]
    assert parts[2]["toolName"] == "add_task" and parts[2]["input"] == {"title": "Buy milk"}
    assert parts[3]["toolCallId"] == parts[2]["toolCallId"] and parts[3]["output"]["status"] == "created"
    assert "".join(p["delta"] for p in parts if p != "[DONE]" and p["type"] == "text-delta") == "Added Buy milk."
    assert model.requests[-1]["stream"] is True
    conversation_id = parts[1]["data"]["conversation_id"]
    assert messages_of(alice, conversation_id)[-1]["content"] == "Added Buy milk."


def test_every_tools_result_matches_the_documented_answer(chatter, model: ScriptedModel):
    """The answer's tool results are typed in the OpenAPI document (a union of the tools' results):
    a turn that runs every tool, and fails one, validates against it."""
    from chat_schemas import ChatAnswer, TaskPage, TaskResult, ToolError

    alice = chatter("alice")
    task = alice.create_task(title="Existing")
    calls = [
        ("add_task", {"title": "New", "tags": ["a"], "reminders": [{"before_minutes": 5}], "due_date": "2030-01-01T09:00:00Z"}),
        ("list_tasks", {"q": "e"}), ("get_task", {"task_id": task["id"]}), ("update_task", {"task_id": task["id"], "priority": "high"}),
        ("complete_task", {"task_id": task["id"]}), ("task_stats", {}), ("list_lists", {}), ("delete_task", {"task_id": task["id"]}),
        ("get_task", {"task_id": task["id"]}),
    ]
    model.script(tool_calls(*calls), text("Done."))
    answer = ChatAnswer.model_validate(say(alice, "everything").json())
    kinds = [type(call.result).__name__ for call in answer.tool_calls]
    assert kinds == ["TaskResult", "TaskPage", "TaskResult", "TaskResult", "TaskResult", "TaskStats", "ListsResult",
                     "TaskResult", "ToolError"]
    assert isinstance(answer.tool_calls[1].result, TaskPage) and isinstance(answer.tool_calls[0].result, TaskResult)
    assert isinstance(answer.tool_calls[-1].result, ToolError) and answer.tool_calls[-1].result.error_code == "TASK_NOT_FOUND"
