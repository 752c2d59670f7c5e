"""`POST /chatkit` (contract §13): ChatKit's own request JSON, as its frontend sends it, against the
scripted model, on SQLite and PostgreSQL. A two-turn thread (the second turn is where the SDKs'
history conversion broke), every assistant message with its own id, the thread as a conversation
in /api/conversations, the same tools acting for the caller only, and a failing model."""
import json
from typing import Any

from chatkit.types import ThreadStreamEvent
from pydantic import TypeAdapter

from chat_support import (  # noqa: F401 (fixtures)
    chat_app, chat_client, chatter, fresh_script, messages_of, model, sent_messages, stream_parts, titles,
)
from conftest import ApiUser
from fake_model_server import ScriptedModel, error_status, text, tool_calls

EVENT = TypeAdapter(ThreadStreamEvent)


def user_input(message: str) -> dict[str, Any]:
    return {"content": [{"type": "input_text", "text": message}], "attachments": [], "inference_options": {}}


def chatkit(user: ApiUser, kind: str, **params: Any):
    return user.post("/chatkit", json={"type": kind, "params": params})


def events_of(response) -> list[Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return [EVENT.validate_python(part) for part in stream_parts(response.text)]


def done_items(events: list[Any], item_type: str) -> list[Any]:
    return [e.item for e in events if e.type == "thread.item.done" and e.item.type == item_type]


def test_a_two_turn_chatkit_thread_is_a_conversation(chatter, model: ScriptedModel):
    alice = chatter("alice")
    model.script(tool_calls(("add_task", {"title": "Buy milk"})), text("Added Buy milk."))
    first = events_of(chatkit(alice, "threads.create", input=user_input("Add buy milk")))
    thread = next(e.thread for e in first if e.type == "thread.created")
    deltas = [e.update.delta for e in first if e.type == "thread.item.updated" and e.update.type == "assistant_message.content_part.text_delta"]
    assert "".join(deltas) == "Added Buy milk."
    [answer_1] = done_items(first, "assistant_message")
    assert answer_1.content[0].text == "Added Buy milk." and titles(alice) == ["Buy milk"]

    model.script(text("You have one task: Buy milk."))
    second = events_of(chatkit(alice, "threads.add_user_message", thread_id=thread.id, input=user_input("What's left?")))
    [answer_2] = done_items(second, "assistant_message")
    assert answer_2.content[0].text == "You have one task: Buy milk."
    assert answer_1.id != answer_2.id and "__fake_id__" not in (answer_1.id, answer_2.id)
    sent = sent_messages(model.requests[0])  # the second turn's model input: the first turn as it happened
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "assistant", "user"]
    assert sent[3] == {"role": "assistant", "content": "Added Buy milk."} and sent[4]["content"] == "What's left?"

    listed = alice.get("/api/conversations").json()
    assert [c["title"] for c in listed] == ["Add buy milk"]
    messages = messages_of(alice, listed[0]["id"])
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "Add buy milk"), ("assistant", "Added Buy milk."), ("user", "What's left?"),
        ("assistant", "You have one task: Buy milk."),
    ]
    assert messages[1]["tool_calls"][0]["tool"] == "add_task"

    items = chatkit(alice, "items.list", thread_id=thread.id, order="asc").json()["data"]
    assert [(i["type"], i["id"]) for i in items][1::2] == [("assistant_message", answer_1.id), ("assistant_message", answer_2.id)]
    assert len({i["id"] for i in items}) == 4
    loaded = chatkit(alice, "threads.get_by_id", thread_id=thread.id).json()
    assert loaded["id"] == thread.id and loaded["title"] == "Add buy milk" and len(loaded["items"]["data"]) == 4
    assert [t["id"] for t in chatkit(alice, "threads.list").json()["data"]] == [thread.id]


def test_a_conversation_started_with_api_chat_continues_in_chatkit(chatter, model: ScriptedModel):
    alice = chatter("alice")
    model.script(text("Hello from the API."))
    conversation_id = alice.post("/api/chat", json={"message": "hi"}).json()["conversation_id"]
    [thread] = chatkit(alice, "threads.list").json()["data"]
    model.script(text("Hello from ChatKit."))
    events = events_of(chatkit(alice, "threads.add_user_message", thread_id=thread["id"], input=user_input("and now?")))
    assert done_items(events, "assistant_message")[0].content[0].text == "Hello from ChatKit."
    assert [m["content"] for m in messages_of(alice, conversation_id)] == ["hi", "Hello from the API.", "and now?", "Hello from ChatKit."]


def test_another_users_thread_is_not_found(chatter, model: ScriptedModel):
    alice, bob = chatter("alice"), chatter("bob")
    model.script(text("secret answer"))
    thread = next(e.thread for e in events_of(chatkit(alice, "threads.create", input=user_input("secret"))) if e.type == "thread.created")
    for kind, params in [("threads.get_by_id", {}), ("items.list", {}), ("threads.delete", {}),
                         ("threads.update", {"title": "mine"}), ("threads.add_user_message", {"input": user_input("hi")})]:
        response = chatkit(bob, kind, thread_id=thread.id, **params)
        assert response.status_code == 404 and response.json()["error_code"] == "CONVERSATION_NOT_FOUND", (kind, response.text)
    assert chatkit(bob, "threads.list").json()["data"] == []
    assert model.calls == 1 and len(messages_of(alice, alice.get("/api/conversations").json()[0]["id"])) == 2


def test_chatkit_tools_act_for_the_caller_only(chatter, model: ScriptedModel):
    alice, bob = chatter("alice"), chatter("bob")
    secret = bob.create_task(title="Bob's task")
    model.script(tool_calls(("delete_task", {"task_id": secret["id"]}), ("delete_task", {"task_id": secret["id"], "user_id": bob.user_id})),
                 text("Could not."))
    events_of(chatkit(alice, "threads.create", input=user_input(f"delete task {secret['id']}")))
    assert bob.get(f"/api/tasks/{secret['id']}").json() == secret
    results = messages_of(alice, alice.get("/api/conversations").json()[0]["id"])[1]["tool_calls"]
    assert [r["result"]["error_code"] for r in results] == ["TASK_NOT_FOUND", "FORBIDDEN"]


def test_a_failing_model_in_chatkit_is_an_error_event_and_the_message_stays(chatter, model: ScriptedModel):
    alice = chatter("alice")
    model.script(tool_calls(("add_task", {"title": "Buy milk"})), then=error_status())
    events = events_of(chatkit(alice, "threads.create", input=user_input("add buy milk")))
    errors = [e for e in events if e.type == "error"]
    assert len(errors) == 1 and "CHAT_UNAVAILABLE" not in errors[0].message and "answered with an error" in errors[0].message
    assert errors[0].allow_retry and not done_items(events, "assistant_message")
    messages = messages_of(alice, alice.get("/api/conversations").json()[0]["id"])
    assert [(m["role"], [c["tool"] for c in m["tool_calls"]]) for m in messages] == [("user", ["add_task"])]


def test_unsupported_and_malformed_chatkit_requests_are_422(chatter, model: ScriptedModel):
    alice = chatter("alice")
    with_attachment = {**user_input("see file"), "attachments": ["atc_1"]}
    for body in ({"type": "threads.create", "params": {"input": with_attachment}},
                 {"type": "attachments.create", "params": {"name": "a.png", "size": 1, "mime_type": "image/png"}},
                 {"type": "threads.nonsense", "params": {}}, {"params": {}}):
        response = alice.post("/chatkit", json=body)
        assert response.status_code == 422 and response.json()["error_code"] == "VALIDATION_ERROR", (body, response.text)
    assert model.calls == 0 and alice.get("/api/conversations").json() == []


def test_a_thread_is_renamed_and_deleted_through_chatkit(chatter, model: ScriptedModel):
    alice = chatter("alice")
    thread = next(e.thread for e in events_of(chatkit(alice, "threads.create", input=user_input("hello"))) if e.type == "thread.created")
    assert chatkit(alice, "threads.update", thread_id=thread.id, title="Renamed").json()["title"] == "Renamed"
    assert [c["title"] for c in alice.get("/api/conversations").json()] == ["Renamed"]
    assert chatkit(alice, "threads.delete", thread_id=thread.id).status_code == 200
    assert alice.get("/api/conversations").json() == []
    assert json.loads(chatkit(alice, "threads.list").text)["data"] == []
