"""The counts the writes keep (migration 0015: `list_task_count`, `list_tag_count`) stay exactly what
the rows say, through every kind of write, on SQLite and PostgreSQL; and what reads them (stats,
/api/tags, a list's counts, X-Total-Count) agrees with the tasks listed.

The concurrent test runs the real service (two worker processes) with writers released together by
a barrier, a hundred rounds on PostgreSQL: writes that change the same list's counts in crossing
orders (tags a -> b beside b -> a, subtree deletions, cascaded completions, moves between two lists)
all succeed (no deadlock), and the counts are exact afterwards.
"""
import threading
import uuid

import httpx
import pytest
import sqlalchemy as sa

from config import Settings
from conftest import TEST_SECRET, mint_token
from live_server import LiveServer
from sharing_helpers import person, share_list  # noqa: F401 (person: a fixture)

COUNTERS = [f"{state}_{priority}" for state in ("open", "done") for priority in ("low", "medium", "high")]
RECOUNT_TASKS = "SELECT list_id, " + ", ".join(
    f"sum(CASE WHEN {'NOT ' if name.startswith('open') else ''}completed AND priority = '{name.split('_')[1]}' THEN 1 ELSE 0 END)"
    for name in COUNTERS
) + " FROM task GROUP BY list_id"
KEPT_TASKS = f"SELECT list_id, {', '.join(f'sum({name})' for name in COUNTERS)} FROM list_task_count GROUP BY list_id"
RECOUNT_TAGS = "SELECT list_id, tag_key, tag, count(*) FROM task_tag GROUP BY list_id, tag_key, tag"
KEPT_TAGS = ("SELECT list_id, tag_key, tag, sum(tasks) FROM list_tag_count GROUP BY list_id, tag_key, tag"
             " HAVING sum(tasks) <> 0")


def assert_counts_exact(engine: sa.Engine) -> None:
    """Every list's kept counts equal a count of its rows (lists without tasks: all zero)."""
    with engine.connect() as connection:
        recounted = {row[0]: tuple(row[1:]) for row in connection.exec_driver_sql(RECOUNT_TASKS)}
        kept = {row[0]: tuple(row[1:]) for row in connection.exec_driver_sql(KEPT_TASKS) if any(row[1:]) or row[0] in recounted}
        tags_recounted = {tuple(row[:3]): row[3] for row in connection.exec_driver_sql(RECOUNT_TAGS)}
        tags_kept = {tuple(row[:3]): row[3] for row in connection.exec_driver_sql(KEPT_TAGS)}
        # The listing's tag filter reads a tag's rows by their list: each row carries its task's.
        strays = connection.exec_driver_sql(
            "SELECT count(*) FROM task_tag JOIN task ON task.id = task_tag.task_id WHERE task_tag.list_id <> task.list_id"
        ).scalar()
    assert kept == recounted
    assert tags_kept == tags_recounted
    assert strays == 0


def ok(response: httpx.Response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json() if response.content else {}


def new_list(user, name: str) -> int:
    return ok(user.post("/api/lists", json={"name": name}), 201)["id"]


def test_counts_follow_every_kind_of_write(alice, sql_engine):
    home, work = new_list(alice, "Home"), new_list(alice, "Work")
    parent = alice.create_task(title="parent", list_id=home, priority="high", tags=["Home", "urgent"])
    children = [alice.create_task(title=f"child {n}", parent_id=parent["id"], priority=p, tags=["home"])
                for n, p in enumerate(("low", "medium"))]
    loose = alice.create_task(title="loose", list_id=home, tags=["HOME", "errand"], completed=True)
    alice.create_task(title="inbox task", tags=["inbox"])
    assert_counts_exact(sql_engine)

    steps = [
        lambda: alice.patch(f"/api/tasks/{children[0]['id']}", json={"priority": "high"}),  # one statement
        lambda: alice.patch(f"/api/tasks/{parent['id']}", json={"completed": True}),  # cascades to the subtasks
        lambda: alice.post(f"/api/tasks/{parent['id']}/toggle"),
        lambda: alice.patch(f"/api/tasks/{loose['id']}", json={"tags": ["errand", "Shop"]}),  # tags replaced
        lambda: alice.patch(f"/api/tasks/{parent['id']}", json={"list_id": work}),  # the subtree follows
        lambda: alice.post(f"/api/tasks/{children[1]['id']}/move", json={"list_id": home, "parent_id": None}),
        lambda: alice.patch(f"/api/tasks/{children[1]['id']}", json={"title": "renamed only"}),  # nothing counted changes
        lambda: alice.delete(f"/api/tasks/{parent['id']}"),  # with what is left below it
        lambda: alice.delete("/api/tasks", params={"list_id": home, "completed": "true"}),  # clear completed
        lambda: alice.delete(f"/api/lists/{home}", params={"cascade": "true"}),  # the list's rows go with it
    ]
    for step in steps:
        response = step()
        assert response.status_code in (200, 204), response.text
        assert_counts_exact(sql_engine)


def test_a_completed_occurrence_and_its_next_one_are_counted(alice, sql_engine):
    task = alice.create_task(title="weekly", due_date="2026-12-01T09:00:00Z", recurrence={"rrule": "FREQ=WEEKLY", "from": "due"},
                             tags=["chores"], priority="low")
    ok(alice.patch(f"/api/tasks/{task['id']}/complete"))
    assert_counts_exact(sql_engine)
    stats = ok(alice.get("/api/tasks/stats"))
    assert (stats["total"], stats["completed"], stats["by_priority"]["low"]) == (2, 1, 2)
    assert ok(alice.get("/api/tags")) == [{"tag": "chores", "count": 2}]


def test_what_reads_the_counts_agrees_with_the_tasks_listed(person, sql_engine):
    alice, bob = person("alice"), person("bob")
    shared = share_list(bob, alice, "editor", name="Team")
    bob.create_task(title="bob's", list_id=shared, priority="low", tags=["Work"])
    bob.create_task(title="bob's done", list_id=shared, completed=True, tags=["work", "home"])
    bob.create_task(title="bob's own, not shared", tags=["work"])
    alice.create_task(title="alice's", priority="high", tags=["work"])
    alice.create_task(title="alice's done", completed=True, priority="high")

    def listed(**params) -> tuple[int, int]:
        response = alice.get("/api/tasks", params={"limit": 1, **params})
        assert response.status_code == 200
        everything = ok(alice.get("/api/tasks", params={"limit": 500, **params}))
        return int(response.headers["X-Total-Count"]), len(everything)

    for params in ({}, {"completed": "true"}, {"status": "pending"}, {"priority": ["high", "low"]},
                   {"completed": "false", "priority": "high"}, {"list_id": shared}, {"tag": "WORK"},
                   {"tag": "work", "list_id": shared}, {"tag": ["work", "home"]}, {"tag": "none-such"}):
        total, counted = listed(**params)
        assert total == counted, params
    assert listed() == (4, 4) and listed(tag="work") == (3, 3)  # bob's own list is not alice's
    stats = ok(alice.get("/api/tasks/stats"))
    assert (stats["total"], stats["completed"], stats["pending"]) == (4, 2, 2)
    assert stats["by_priority"] == {"low": 1, "medium": 1, "high": 2}
    assert ok(alice.get("/api/tags")) == [{"tag": "Work", "count": 3}, {"tag": "home", "count": 1}]
    lists = {entry["id"]: entry for entry in ok(alice.get("/api/lists"))}
    assert (lists[shared]["task_count"], lists[shared]["completed_count"]) == (2, 1)
    assert_counts_exact(sql_engine)


# ---------------------------------------------------------------- two workers, writes racing

ROUNDS = {"postgres": 100, "sqlite": 20}
WRITERS = 4


@pytest.fixture(scope="module")
def live(backend, scratch_database):
    url = scratch_database(backend)
    with LiveServer(url, secret=TEST_SECRET, workers=2, env={"LOG_LEVEL": "WARNING"}) as server:
        engine = sa.create_engine(Settings.normalise_database_url(url))
        yield server, engine
        engine.dispose()


@pytest.mark.slow
def test_writes_that_cross_on_one_list_keep_exact_counts_and_never_deadlock(backend, live):
    server, engine = live
    owner = f"counts_{uuid.uuid4().hex[:8]}"
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {mint_token(owner)}"}, timeout=30.0)
    first = ok(http.post("/api/lists", json={"name": "One"}), 201)["id"]
    second = ok(http.post("/api/lists", json={"name": "Two"}), 201)["id"]
    statuses: list[int] = []

    def task(**fields) -> int:
        return ok(http.post("/api/tasks", json={"title": "t", **fields}), 201)["id"]

    for round_number in range(ROUNDS[backend]):
        a = task(list_id=first, tags=["a"], priority="low")
        b = task(list_id=first, tags=["b"], priority="high")
        tree = task(list_id=first, tags=["b", "a"])
        for tags in (["a"], ["b"], ["a", "b"]):
            task(parent_id=tree, tags=tags, priority="high")
        mover = task(list_id=first, tags=["a", "b"])
        task(parent_id=mover, tags=["b"])
        racing = [
            ("PATCH", f"/api/tasks/{a}", {"tags": ["b"]}),  # a -> b
            ("PATCH", f"/api/tasks/{b}", {"tags": ["a"], "completed": True}),  # b -> a
            ("DELETE", f"/api/tasks/{tree}", None),  # a subtree's tags: b and a
            ("PATCH", f"/api/tasks/{mover}", {"list_id": second if round_number % 2 else first}),
        ]
        barrier = threading.Barrier(WRITERS)

        def write(index: int) -> None:
            method, path, body = racing[index]
            with httpx.Client(base_url=server.url, headers=http.headers, timeout=30.0) as own:
                own.get("/health")
                barrier.wait(timeout=30)
                statuses.append(own.request(method, path, json=body).status_code)

        threads = [threading.Thread(target=write, args=(index,)) for index in range(WRITERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        if round_number % 10 == 9:
            assert_counts_exact(engine)
    http.close()
    assert sorted(set(statuses)) == [200, 204], {status: statuses.count(status) for status in set(statuses)}
    assert len(statuses) == WRITERS * ROUNDS[backend]
    assert_counts_exact(engine)


def test_a_spelling_added_on_one_slot_and_removed_on_another_is_not_in_use(alice, sql_engine):
    """On PostgreSQL a list's counts are spread over rows by the writing connection (migration 0015's
    SLOTS): a tag added through one and removed through another leaves +1 and -1. Only the sum says
    whether a spelling is in use; here "Home" (first in order, were rows read alone) is not."""
    list_id = new_list(alice, "Slots")
    alice.create_task(title="t", list_id=list_id, tags=["home"])
    with sql_engine.begin() as connection:
        for slot, tasks in ((5, 1), (6, -1)):
            connection.execute(sa.text("INSERT INTO list_tag_count (list_id, tag_key, tag, slot, tasks) VALUES (:l, 'home', 'Home', :s, :t)"),
                               {"l": list_id, "s": slot, "t": tasks})
    assert ok(alice.get("/api/tags")) == [{"tag": "home", "count": 1}]
    response = alice.get("/api/tasks", params={"tag": "HOME"})
    assert response.headers["X-Total-Count"] == "1"
    assert_counts_exact(sql_engine)
