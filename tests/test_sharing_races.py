"""Membership changes racing writes on the same list (contract §12 on §10), through two worker
processes: members keep writing (renames, completions, new tasks, deletes: single statements and
transactions) while someone joins, or is removed. Each round checks what the feed promises:

- the new member's feed (the join snapshot, then every change) replays into exactly the list GET
  shows: no change that committed around the join is in neither;
- a removed member's feed has nothing of the list after its `list.deleted`, and a write they sent
  during their removal either came before it or was refused.

The races had a window of a write's duration; PostgreSQL runs ROUNDS rounds (without the ordering
of access.membership_change, both failed within the first few rounds), SQLite's single writer
orders every write, so fewer rounds there.
"""
import threading
import time

import pytest

from sharing_helpers import LiveUser, accept, create_list, cursor_now, invitation, join, read_feed, remove_member, replay, tasks_by_id
from test_sharing_feed_live import live, people  # noqa: F401 (fixtures: the live server, its users)

pytestmark = pytest.mark.slow
ROUNDS = {"postgres": 30, "sqlite": 6}
WRITERS = 3


class Writers:
    """Members writing on a list without pause, each on their own connection, until stopped."""

    def __init__(self, writers: list[LiveUser], list_id: int, task_ids: list[int]):
        self.writers, self.list_id, self.task_ids = writers, list_id, task_ids
        self.stop = threading.Event()
        self.refused: list[int] = []
        self.threads = [threading.Thread(target=self._write, args=(index,)) for index in range(len(writers))]

    def __enter__(self) -> "Writers":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in self.threads), "a writer hung"

    def _write(self, index: int) -> None:
        writer, n = self.writers[index], 0
        while not self.stop.is_set():
            task_id = self.task_ids[(index + n) % len(self.task_ids)]
            step = n % 4
            if step == 0:
                response = writer.patch(f"/api/tasks/{task_id}", json={"title": f"w{index} rename {n}"})
            elif step == 1:
                response = writer.post(f"/api/tasks/{task_id}/toggle")
            elif step == 2:
                response = writer.post("/api/tasks", json={"title": f"w{index} new {n}", "list_id": self.list_id})
            else:
                response = writer.patch(f"/api/tasks/{task_id}", json={"tags": [f"t{n % 3}"], "priority": "high"})
            if response.status_code in (403, 404, 422):
                self.refused.append(response.status_code)  # a member removed meanwhile
            else:
                assert response.status_code in (200, 201), response.text
            n += 1


def test_a_member_who_joins_while_others_write_gets_a_feed_that_reproduces_the_list(backend, people):
    owner, editor = people("owner"), people("editor")
    for _ in range(ROUNDS[backend]):
        list_id = create_list(owner, "Busy")
        join(owner, list_id, editor, "editor")
        task_ids = [owner.create_task(list_id=list_id, title=f"seed {n}")["id"] for n in range(3)]
        newcomer = people("newcomer")
        pending = invitation(owner, list_id, newcomer, "viewer")
        since = cursor_now(newcomer)
        with Writers([owner, editor, editor][:WRITERS], list_id, task_ids):
            time.sleep(0.05)
            assert accept(newcomer, pending["id"]).status_code == 200
            time.sleep(0.05)
        mirror = replay(read_feed(newcomer, since))
        assert mirror.tasks_of(list_id) == tasks_by_id(newcomer, list_id=list_id)


def test_a_removed_member_sees_nothing_of_the_list_after_its_removal(backend, people):
    owner, other = people("owner"), people("other")
    for _ in range(ROUNDS[backend]):
        list_id = create_list(owner, "Busy")
        join(owner, list_id, other, "editor")
        leaving = people("leaving")
        join(owner, list_id, leaving, "editor")
        task_ids = [owner.create_task(list_id=list_id, title=f"seed {n}")["id"] for n in range(3)]
        since = cursor_now(leaving)
        with Writers([owner, other, leaving], list_id, task_ids):
            time.sleep(0.05)
            assert remove_member(owner, list_id, leaving.user_id).status_code == 204
            time.sleep(0.05)
        feed = read_feed(leaving, since)
        about_the_list = [c for c in feed if c["id"] in task_ids or (c["type"].startswith("list.") and c["id"] == list_id)
                          or (c["data"] or {}).get("list_id") == list_id]
        assert about_the_list[-1]["type"] == "list.deleted", about_the_list[-3:]
        assert leaving.get(f"/api/lists/{list_id}").status_code == 404
