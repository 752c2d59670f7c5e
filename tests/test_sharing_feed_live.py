"""Changes with sharing over real HTTP (contract §12 on §10): the real service (`uvicorn main:app`,
two workers) on SQLite and PostgreSQL. Open /api/events streams follow membership (a removed
member's stream gets `list.deleted` and nothing of the list after); webhooks deliver each member's
event (`subject` = that member, `actor` in `data`); several members writing at once on one shared
list while a polling reader per member follows /api/changes: each feed has no gap, no duplicate, is
in commit order, and replays into the list exactly as GET shows it; a join racing those writes too."""
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from conftest import TEST_SECRET
from live_server import LiveServer, run_in_threads
from sharing_helpers import (
    LiveUser,
    accept,
    create_list,
    cursor_now,
    invitation,
    join,
    read_feed,
    remove_member,
    replay,
    share_list,
    tasks_by_id,
)
from sse_client import SseStream
from test_webhooks import receiver, webhook_env  # noqa: F401 (receiver is a fixture)

pytestmark = pytest.mark.slow
DELIVERY_SECONDS = 2.0


@pytest.fixture(scope="module")
def live(backend, scratch_database) -> Iterator[LiveServer]:
    with LiveServer(scratch_database(backend), secret=TEST_SECRET, workers=2, env={"LOG_LEVEL": "WARNING"}) as server:
        yield server


@pytest.fixture
def people(live):
    """A factory of LiveUsers on the live server, closed at the end."""
    made: list[LiveUser] = []

    def make(prefix: str) -> LiveUser:
        made.append(LiveUser(live.url, prefix))
        return made[-1]

    yield make
    for user in made:
        user.close()


def stream_of(live: LiveServer, user: LiveUser) -> SseStream:
    return SseStream(live.url + "/api/events", params={"access_token": user.token})


def next_change(stream: SseStream) -> dict:
    event = stream.next_event(timeout=DELIVERY_SECONDS)
    assert event is not None, "the stream ended"
    change = json.loads(event["data"])
    assert event["event"] == change["type"] and event["id"] == change["cursor"]
    return change


def changes_until(stream: SseStream, done) -> list[dict]:
    """The stream's changes up to and including the first for which done(change) holds."""
    seen = []
    while True:
        seen.append(next_change(stream))
        if done(seen[-1]):
            return seen


# ----------------------------------------------------------------------------- /api/events


def test_events_a_members_stream_receives_the_other_members_changes(live, people):
    owner, viewer = people("owner"), people("viewer")
    list_id = share_list(owner, viewer, "viewer")
    cursor_now(viewer)
    with stream_of(live, viewer) as stream:
        assert stream.status_code == 200
        time.sleep(0.3)
        task = owner.create_task(list_id=list_id, title="for everyone")
        change = next_change(stream)
        assert (change["type"], change["id"], change["actor"], change["data"]) == ("task.created", task["id"], owner.user_id, task)


@pytest.mark.parametrize("how", ["removed", "left"])
def test_events_a_removed_members_open_stream_gets_list_deleted_and_nothing_of_the_list_after(live, people, how):
    owner, member = people("owner"), people("member")
    list_id = share_list(owner, member, "editor")
    seen_task = owner.create_task(list_id=list_id, title="seen")
    cursor_now(member)  # the member's default list exists before the stream opens
    with stream_of(live, member) as stream:
        time.sleep(0.3)
        owner.patch(f"/api/tasks/{seen_task['id']}", json={"title": "seen live"})
        assert next_change(stream)["data"]["title"] == "seen live"
        by = owner if how == "removed" else member
        assert remove_member(by, list_id, member.user_id).status_code == 204
        changes_until(stream, lambda change: (change["type"], change["id"]) == ("list.deleted", list_id))
        owner.create_task(list_id=list_id, title="unseen")
        owner.patch(f"/api/tasks/{seen_task['id']}", json={"title": "unseen rename"})
        owner.patch(f"/api/lists/{list_id}", json={"name": "unseen list name"})
        time.sleep(0.5)
        own = member.create_task(title="my own, after")
        following = next_change(stream)  # the next thing the stream carries is the member's own write
        assert (following["type"], following["id"]) == ("task.created", own["id"]), following


# ----------------------------------------------------------------------------- webhooks


def test_webhooks_deliver_each_members_event_with_the_member_as_subject(backend, scratch_database, receiver):  # noqa: F811
    with LiveServer(scratch_database(backend), secret=TEST_SECRET, env=webhook_env(receiver)) as server:
        owner, member = LiveUser(server.url, "owner"), LiveUser(server.url, "member")
        try:
            list_id = share_list(owner, member, "viewer")
            cursors = {user.user_id: cursor_now(user) for user in (owner, member)}
            task = owner.create_task(list_id=list_id, title="hooked")
            owner.patch(f"/api/tasks/{task['id']}", json={"title": "hooked again"})
            feeds = {user.user_id: read_feed(user, cursors[user.user_id]) for user in (owner, member)}

            def delivered(user_id: str) -> list[dict]:
                wanted = {change["cursor"] for change in feeds[user_id]}
                return [r.event for r in receiver.acknowledged() if r.event["subject"] == user_id and r.event["data"]["cursor"] in wanted]

            receiver.wait_for(lambda: all(len(delivered(u)) == len(feeds[u]) for u in feeds), timeout=30)
        finally:
            owner.close()
            member.close()
    for user_id, feed in feeds.items():
        assert [(c["type"], c["id"]) for c in feed] == [("task.created", task["id"]), ("task.updated", task["id"])]
        events = delivered(user_id)
        assert [event["data"] for event in events] == feed  # exactly the member's /api/changes, in order
        assert all(event["subject"] == user_id and event["data"]["actor"] == owner.user_id for event in events)
    assert len({event["id"] for user_id in feeds for event in delivered(user_id)}) == 4  # one CloudEvent per feed row


# ----------------------------------------------------------------------------- concurrent writers

WRITES_EACH = 16


def write_on_the_list(writer: LiveUser, list_id: int, seeds: list[int], index: int, acknowledged: dict) -> None:
    """A mix of every kind of task write on the shared list; each acknowledged rename recorded."""
    mine: list[int] = []
    for n in range(WRITES_EACH):
        step = n % 4
        if step == 0 or not mine:
            response = writer.post("/api/tasks", json={"title": f"w{index} new {n}", "list_id": list_id})
            assert response.status_code == 201, response.text
            mine.append(response.json()["id"])
        elif step == 1:
            title = f"w{index} rename {n}"
            response = writer.patch(f"/api/tasks/{seeds[(index + n) % len(seeds)]}", json={"title": title})
            assert response.status_code == 200, response.text
            acknowledged[title] = int(response.headers["ETag"].strip('"').split(".")[1])
        elif step == 2:
            response = writer.post("/api/tasks", json={"title": f"w{index} sub {n}", "parent_id": mine[-1]})
            assert response.status_code == 201, response.text
            assert writer.post(f"/api/tasks/{mine[-1]}/toggle").status_code == 200
        else:
            assert writer.delete(f"/api/tasks/{mine.pop(0)}").status_code == 204


def follow(user: LiveUser, since: str, done: threading.Event, into: list) -> None:
    """A polling reader on its own connection: the member's feed, page by page, until the writers are
    done and it is drained."""
    cursor = since
    with httpx.Client(base_url=user.http.base_url, headers=user.http.headers, timeout=30) as http:
        while True:
            finished = done.is_set()
            response = http.get("/api/changes", params={"since": cursor, "limit": 5})
            assert response.status_code == 200, response.text
            page = response.json()
            into.extend(page["changes"])
            cursor = page["cursor"]
            if finished and not page["has_more"] and not page["changes"]:
                return


def test_changes_of_members_writing_at_once_reach_every_member_whole_and_in_order(live, people):
    owner, first, second, viewer = people("owner"), people("editor1"), people("editor2"), people("viewer")
    list_id = create_list(owner, "Busy")
    for member, role in ((first, "editor"), (second, "editor"), (viewer, "viewer")):
        join(owner, list_id, member, role)
    readers = [owner, first, second, viewer]
    starts = {user.user_id: cursor_now(user) for user in readers}
    seeds = [owner.create_task(list_id=list_id, title=f"seed {i}")["id"] for i in range(3)]
    polled: dict[str, list] = {user.user_id: [] for user in readers}
    done = threading.Event()
    threads = [threading.Thread(target=follow, args=(u, starts[u.user_id], done, polled[u.user_id])) for u in readers]
    for thread in threads:
        thread.start()
    acknowledged: dict[str, int] = {}
    writers = [owner, first, second]
    barrier = threading.Barrier(len(writers))

    def write(index: int) -> None:
        barrier.wait(timeout=30)
        write_on_the_list(writers[index], list_id, seeds, index, acknowledged)

    try:
        run_in_threads(len(writers), write, timeout=120)
    finally:
        done.set()
        for thread in threads:
            thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a reader never drained its feed"

    for user in readers:
        seen = polled[user.user_id]
        assert len({change["cursor"] for change in seen}) == len(seen), "a change came twice"
        assert seen == read_feed(user, starts[user.user_id]), "the reader missed a change or saw them out of order"
        renames = [c["data"]["title"] for c in seen if c["type"] == "task.updated" and "rename" in c["data"]["title"]]
        assert Counter(renames) == Counter(acknowledged.keys())  # every acknowledged rename exactly once
        for seed in seeds:  # the renames of one task arrive in the order they committed
            versions = [acknowledged[c["data"]["title"]] for c in seen if c["id"] == seed and c["data"] and "rename" in c["data"]["title"]]
            assert versions == sorted(versions)
        assert {c["actor"] for c in seen} == {writer.user_id for writer in writers}
        assert replay(seen).tasks_of(list_id) == tasks_by_id(user, list_id=list_id)


JOIN_ROUNDS = 4


def test_changes_a_join_racing_writes_gives_the_newcomer_a_feed_that_reproduces_the_list(live, people):
    owner, editor = people("owner"), people("editor")
    for _ in range(JOIN_ROUNDS):
        list_id = create_list(owner, "Racing")
        join(owner, list_id, editor, "editor")
        parent = owner.create_task(list_id=list_id, title="parent")
        seeds = [parent["id"], owner.create_task(parent_id=parent["id"], title="child")["id"]]
        newcomer = people("newcomer")
        pending = invitation(owner, list_id, newcomer, "viewer")
        since = cursor_now(newcomer)
        barrier = threading.Barrier(3)
        acknowledged: dict[str, int] = {}

        def act(index: int) -> None:
            barrier.wait(timeout=30)
            if index == 2:
                assert accept(newcomer, pending["id"]).status_code == 200
            else:
                write_on_the_list((owner, editor)[index], list_id, seeds, index, acknowledged)

        run_in_threads(3, act, timeout=120)
        mirror = replay(read_feed(newcomer, since))
        assert mirror.tasks_of(list_id) == tasks_by_id(newcomer, list_id=list_id)
        assert mirror.lists[list_id]["role"] == "viewer"
