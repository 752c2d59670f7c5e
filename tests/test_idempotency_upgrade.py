"""An Idempotency-Key stored by an earlier version replays after an upgrade (issue 23, #12), on both
databases. Earlier versions stored SHA-256 of the create model's full dump, which changed with every
field the model gained: an identical retry across a deploy was a 422 IDEMPOTENCY_KEY_REUSED.

The rows below are written as those versions wrote them: the hash of their full dump (spelt out
here field by field, as each version's model dumped the request) and the response they sent.
"""
import hashlib
import uuid
from datetime import datetime, timezone

import orjson
import pytest
import sqlalchemy as sa

import fingerprints
import idempotency
from schemas import ListCreate, TaskCreate
from store import utc_now

UTC = timezone.utc


def old_fingerprint(full_dump: dict) -> str:
    return hashlib.sha256(orjson.dumps(full_dump, option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z)).hexdigest()


def store_old_key(engine: sa.Engine, user_id: str, full_dump: dict, created_id: int, response_body: str) -> str:
    key = str(uuid.uuid4())
    with engine.begin() as connection:
        connection.execute(
            sa.insert(idempotency.key_table).values(
                user_id=user_id, key=key, request_hash=old_fingerprint(full_dump), task_id=created_id,
                response_body=response_body, created_at=utc_now(),
            )
        )
    return key


def old_task_response(task_id: int, user_id: str, title: str) -> str:
    """A task as the round-1 version showed it (no list, no dates fields): what a replay returns."""
    return (f'{{"id":{task_id},"user_id":"{user_id}","title":"{title}","description":null,"completed":false,'
            '"priority":"medium","tags":["home"],"due_date":"2026-12-01T00:00:00Z","completed_at":null,'
            '"created_at":"2026-11-30T10:00:00Z","updated_at":"2026-11-30T10:00:00Z"}')


ROUND_1 = {"title": "pay rent", "description": None, "completed": False, "priority": "medium", "tags": ["home"]}


def retried_requests(default_list: int) -> list[tuple[dict, dict]]:
    """(the full dump a version hashed, the request a client retries), one per earlier version."""
    round_2 = {**ROUND_1, "due_date": None, "list_id": default_list, "parent_id": None}
    return [
        # round 1: due_date was a moment only, and "2026-12-01" parsed as midnight UTC
        ({**ROUND_1, "due_date": datetime(2026, 12, 1, tzinfo=UTC)},
         {"title": "pay rent", "tags": ["home"], "due_date": "2026-12-01"}),
        # round 2: lists and subtasks
        (round_2, {"title": " pay rent ", "tags": ["home", "HOME"], "list_id": default_list}),
        # round 3: dates, recurrence, reminders (the version before this fix)
        ({**round_2, "list_id": None, "due_date": datetime(2026, 12, 1, 9, tzinfo=UTC), "time_zone": None,
          "recurrence": {"rrule": "FREQ=WEEKLY", "from": "due"}, "reminders": [{"before_minutes": 30, "at": None}]},
         {"title": "pay rent", "tags": ["home"], "due_date": "2026-12-01T10:00:00+01:00",
          "recurrence": {"rrule": "RRULE:FREQ=WEEKLY"}, "reminders": [{"before_minutes": 30}]}),
    ]


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_key_stored_by_an_earlier_version_replays_its_stored_response(alice, sql_engine, version):
    task = alice.create_task(title="pay rent", tags=["home"])  # what the earlier version created
    default_list = alice.get("/api/lists").json()[0]["id"]
    full_dump, retry = retried_requests(default_list)[version - 1]
    stored = old_task_response(task["id"], alice.user_id, "pay rent")
    key = store_old_key(sql_engine, alice.user_id, full_dump, task["id"], stored)

    replay = alice.post("/api/tasks", json=retry, headers={"Idempotency-Key": key})

    assert replay.status_code == 201, replay.text
    assert replay.content == stored.encode()  # byte for byte, as that version answered
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["Location"].endswith(f"/api/tasks/{task['id']}")
    assert len(alice.get("/api/tasks").json()) == 1  # nothing created


@pytest.mark.parametrize("other", [{"title": "pay rent", "tags": ["work"]}, {"title": "pay rent", "priority": "high"},
                                   {"title": "pay rent", "tags": ["home"], "time_zone": "UTC"}])
def test_a_key_stored_by_an_earlier_version_with_another_body_is_422(alice, sql_engine, other):
    task = alice.create_task(title="pay rent", tags=["home"])
    full_dump = {**ROUND_1, "due_date": None}
    key = store_old_key(sql_engine, alice.user_id, full_dump, task["id"], old_task_response(task["id"], alice.user_id, "x"))
    reused = alice.post("/api/tasks", json=other, headers={"Idempotency-Key": key})
    assert reused.status_code == 422 and reused.json()["error_code"] == "IDEMPOTENCY_KEY_REUSED"
    assert len(alice.get("/api/tasks").json()) == 1


def test_a_list_key_stored_by_an_earlier_version_replays(alice, sql_engine):
    created = alice.post("/api/lists", json={"name": "Groceries"}).json()
    stored = f'{{"id":{created["id"]},"name":"Groceries","color":null}}'
    key = store_old_key(sql_engine, alice.user_id, {"__kind__": "list", "name": "Groceries", "color": None}, created["id"], stored)
    replay = alice.post("/api/lists", json={"name": "Groceries "}, headers={"Idempotency-Key": key})
    assert replay.status_code == 201 and replay.content == stored.encode()
    assert alice.post("/api/lists", json={"name": "Shops"}, headers={"Idempotency-Key": key}).status_code == 422
    # One key never creates both a task and a list.
    assert alice.post("/api/tasks", json={"title": "Groceries"}, headers={"Idempotency-Key": key}).status_code == 422


def test_a_key_stored_now_replays_and_refuses_another_body(alice):
    key = str(uuid.uuid4())
    first = alice.post("/api/lists", json={"name": "Errands", "color": "#16A34A"}, headers={"Idempotency-Key": key})
    again = alice.post("/api/lists", json={"color": "#16a34a", "name": " Errands"}, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 201 and again.content == first.content
    other = alice.post("/api/lists", json={"name": "Errands"}, headers={"Idempotency-Key": key})
    assert other.status_code == 422


class TaskCreateLater(TaskCreate):
    """TaskCreate after a later version adds an optional field."""

    colour: str | None = None


class ListCreateLater(ListCreate):
    icon: str | None = None


def test_a_field_added_later_leaves_the_fingerprint_of_a_request_without_it_unchanged():
    body = {"title": "pay rent", "tags": ["home"], "due_date": "2026-12-01", "reminders": [{"before_minutes": 5}]}
    now = fingerprints.of("task", TaskCreate(**body))
    assert fingerprints.of("task", TaskCreateLater(**body)) == now
    assert fingerprints.matches(now, "task", TaskCreateLater(**body))
    assert fingerprints.of("task", TaskCreateLater(**body, colour="red")) != now
    assert fingerprints.of("list", ListCreateLater(name="a")) == fingerprints.of("list", ListCreate(name="a"))
    assert len(now) <= 64  # idempotency_key.request_hash is VARCHAR(64)
