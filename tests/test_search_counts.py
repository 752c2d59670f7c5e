"""A search's count is remembered while the lists it counted have no new change (search_counts.py,
migration 0017's `list_task_count.changes`), and stays exactly what the tasks say through every kind
of write, whichever process makes it: here writes through the service and straight in SQL (as
another worker's would be, of which this process hears nothing).

The changes themselves are kept on both databases; the counts are remembered on PostgreSQL, for a
user with many tasks (forced here, but for the real service's two workers, racing: the last test)."""
import uuid

import httpx
import pytest
import sqlalchemy as sa

import listing_sql
import queries
import search_counts
from config import Settings
from conftest import TEST_SECRET, mint_token
from live_server import LiveServer, released_together
from sharing_helpers import default_list_id, person, remove_member, share_list  # noqa: F401 (person: a fixture)
from test_listing_scopes import record_scopes
from test_metrics import samples

CHANGES_OF = "SELECT coalesce(sum(changes), 0) FROM list_task_count WHERE list_id = :list_id"


def changes(sql_engine: sa.Engine, list_id: int) -> int:
    with sql_engine.connect() as connection:
        return connection.execute(sa.text(CHANGES_OF), {"list_id": list_id}).scalar()


def ok(response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


def test_every_write_that_can_change_a_search_adds_to_its_lists_changes_and_no_other(person, sql_engine):
    me = person("writer")
    first, second = default_list_id(me), ok(me.post("/api/lists", json={"name": "Second"}), 201)["id"]
    task = me.create_task(title="milk")
    before = {first: changes(sql_engine, first), second: changes(sql_engine, second)}

    def grew(*lists: int) -> set[int]:
        now = {list_id: changes(sql_engine, list_id) for list_id in before}
        grown = {list_id for list_id in before if now[list_id] > before[list_id]}
        assert all(now[list_id] >= before[list_id] for list_id in before), "changes never go down"
        before.update(now)
        return grown

    path = f"/api/tasks/{task['id']}"
    ok(me.patch(path, json={"title": "oat milk"}))
    assert grew() == {first}
    ok(me.patch(path, json={"description": "two cartons"}))
    assert grew() == {first}
    ok(me.post(f"{path}/toggle"))
    assert grew() == {first}
    ok(me.patch(path, json={"priority": "high"}))
    assert grew() == {first}
    # What no search filter of a remembered count reads: nothing added.
    ok(me.patch(path, json={"due_date": "2027-01-01T10:00:00Z", "tags": ["home"]}))
    other = me.create_task(title="bread")
    assert grew() == {first}  # the insert
    ok(me.post(f"{path}/move", json={"after_id": other["id"]}))
    assert grew() == set()
    ok(me.patch(path, json={"title": "oat milk"}))  # the same title: nothing changed
    assert grew() == set()
    ok(me.post(f"{path}/move", json={"list_id": second}))
    assert grew() == {first, second}
    assert me.delete(path).status_code == 204
    assert grew() == {second}
    ok(me.post("/api/tasks", json={"title": "bad", "priority": "urgent"}), 422)  # refused: nothing written
    assert grew() == set()


@pytest.fixture
def many_tasks(monkeypatch, backend):
    """The reader counts as a user with many tasks (queries.SEARCH_INDEX_FROM), and every count of a
    search over their lists that is sent, rather than remembered, is counted here."""
    if backend != "postgres":
        pytest.skip("counts are remembered on PostgreSQL only (for users with many tasks)")

    async def many(connection, user_id):
        return queries.SEARCH_INDEX_FROM + 1

    monkeypatch.setattr(queries, "_tasks_seen_by", many)
    sent = []
    usual = search_counts._count_with_changes

    def counted(shape, scope):
        sent.append(shape)
        return usual(shape, scope)

    monkeypatch.setattr(search_counts, "_count_with_changes", counted)
    search_counts.forget()
    yield sent
    search_counts.forget()


def total(user, **params) -> int:
    response = user.get("/api/tasks", params={"limit": 1, **params})
    assert response.status_code == 200, response.text
    return int(response.headers["X-Total-Count"])


def sql(sql_engine: sa.Engine, statement: str, **values) -> None:
    with sql_engine.begin() as connection:
        connection.execute(sa.text(statement), values)


def test_a_search_is_counted_once_while_nothing_changes_and_exactly_after_every_change(person, many_tasks, sql_engine):
    me, owner = person("reader"), person("owner")
    shared = share_list(owner, me, "editor")
    mine = [me.create_task(title=f"report {n}") for n in range(3)] + [me.create_task(title="other")]
    theirs = owner.create_task(title="Report of theirs", list_id=shared)
    before = me.get("/metrics").text
    assert total(me, q="report") == 4
    assert total(me, q="report") == 4 and total(me, q="report", offset=2) == 4  # again, and its next page
    assert len(many_tasks) == 1
    after = me.get("/metrics").text
    for outcome, grew in (("counted", 1), ("remembered", 2)):
        metric = "task_api_search_counts_total"
        assert samples(after, metric, outcome=outcome) - samples(before, metric, outcome=outcome) == grew, outcome
    assert total(me, q="report", completed="false") == 4 and len(many_tasks) == 2  # another filter: its own count

    # Straight in SQL, as another process would: each is seen at once.
    sql(sql_engine, "UPDATE task SET title = 'renamed' WHERE id = :id", id=mine[0]["id"])
    assert total(me, q="report") == 3
    sql(sql_engine, "UPDATE task SET description = 'the report' WHERE id = :id", id=mine[3]["id"])
    assert total(me, q="report") == 4
    # Tags add no change, so a search with a tag is counted every time: it follows a tag's change.
    assert total(me, q="report", tag="home") == 0
    ok(me.patch(f"/api/tasks/{mine[3]['id']}", json={"tags": ["home"]}))
    assert total(me, q="report", tag="home") == 1
    sql(sql_engine, "UPDATE task SET completed = true WHERE id = :id", id=mine[1]["id"])
    assert total(me, q="report", completed="false") == 3
    assert total(me, q="report", priority="high") == 0
    sql(sql_engine, "UPDATE task SET priority = 'high' WHERE id = :id", id=mine[2]["id"])
    assert total(me, q="report", priority="high") == 1
    sql(sql_engine, "UPDATE task SET list_id = :shared WHERE id = :id", shared=shared, id=mine[2]["id"])
    assert total(me, q="report", priority="high") == 1  # moved to another of the reader's lists
    # Through the service: the owner's writes to the shared list, then the reader's removal from it.
    owner.create_task(title="another report", list_id=shared)
    assert total(me, q="report") == 5
    assert owner.delete(f"/api/tasks/{theirs['id']}").status_code == 204
    assert total(me, q="report") == 4
    remove_member(owner, shared, me.user_id)
    assert total(me, q="report") == 2  # the reader's own two
    assert total(owner, q="report") == 2  # the shared list's: the moved task and the owner's new one
    sent = len(many_tasks)
    assert total(me, q="report") == 2 and total(owner, q="report") == 2 and len(many_tasks) == sent


def test_a_table_of_counts_made_again_forgets_what_was_counted_from_the_old_one(person, many_tasks, sql_engine):
    """The same rows in a new file of the table (TRUNCATE and the rows put back, as a restore would):
    the sums mean nothing any more, and the search is counted again."""
    me = person("reader")
    me.create_task(title="report")
    assert total(me, q="report") == 1 and len(many_tasks) == 1
    with sql_engine.begin() as connection:
        rows = [dict(row) for row in connection.execute(sa.text("SELECT * FROM list_task_count")).mappings()]
        connection.execute(sa.text("TRUNCATE list_task_count"))
        columns = ", ".join(rows[0])
        connection.execute(sa.text(f"INSERT INTO list_task_count ({columns}) VALUES ({', '.join(f':{c}' for c in rows[0])})"), rows)
    assert total(me, q="report") == 1 and len(many_tasks) == 2


def test_an_uncounted_page_of_a_search_is_read_the_way_its_remembered_count_chooses(person, many_tasks, monkeypatch):
    """`count=false` counts nothing, but a count remembered for the same search (its earlier pages)
    chooses how the page is read (few matches at once, many walked), as a counted page's does; the
    page is the same, and a change since leaves it to the usual way."""
    me = person("reader")
    wanted = [me.create_task(title=f"report {n}")["id"] for n in range(4)] + [me.create_task(title="other")["id"]]
    scopes = record_scopes(monkeypatch)

    def page(**params) -> list[int]:
        return [task["id"] for task in ok(me.get("/api/tasks", params={"q": "report", "limit": 3, **params}))]

    usual = page(count="false")
    assert isinstance(scopes[-1], int) and len(many_tasks) == 0  # nothing remembered yet: each list planned
    assert page() == usual and len(many_tasks) == 1  # counted, so remembered
    assert page(count="false") == usual and isinstance(scopes[-1], listing_sql.AtOnce)
    monkeypatch.setattr(queries, "_read_way", lambda shape, matches, page_end, tasks, lists: listing_sql.Walked(lists))
    assert page(count="false") == usual and isinstance(scopes[-1], listing_sql.Walked)
    newest = me.create_task(title="the newest report")["id"]
    assert page(count="false") == [newest, *usual[:2]] and isinstance(scopes[-1], int)
    assert len(many_tasks) == 1 and wanted[-1] not in usual


# ------------------------------------------------ two workers, each remembering, writes racing reads

ROUNDS = 100
SEEDED = queries.SEARCH_INDEX_FROM + 100  # a user with many tasks, for real


@pytest.mark.slow
def test_two_workers_count_a_search_exactly_after_every_acknowledged_write(scratch_database, postgres_server_url):
    """Each round, released together by a barrier: a new matching task, another task renamed to
    match, and a count read; then the count from both workers (fresh connections) is what the rows
    say: two more than before the round."""
    url = scratch_database("postgres")
    engine = sa.create_engine(Settings.normalise_database_url(url))
    user = f"searcher_{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {mint_token(user)}"}
    with LiveServer(url, secret=TEST_SECRET, workers=2, env={"LOG_LEVEL": "WARNING"}) as server:
        with httpx.Client(base_url=server.url, headers=headers, timeout=30.0) as http:
            inbox = next(found for found in ok(http.get("/api/lists")) if found["is_default"])["id"]
            sql(engine, SEED, user=user, list_id=inbox, tasks=SEEDED)
            with engine.connect() as connection:
                notes = connection.execute(sa.text("SELECT id FROM task WHERE title LIKE 'note%' ORDER BY id")).scalars().all()

            def matches() -> int:
                with engine.connect() as connection:
                    return connection.execute(sa.text(MATCHES), {"list_id": inbox}).scalar()

            def counted() -> int:
                with httpx.Client(base_url=server.url, headers=headers, timeout=30.0) as fresh:
                    return total(fresh, q="report")

            during, disagreed = [], []
            for round_number in range(ROUNDS):
                before = matches()
                work = [
                    lambda: ok(http.post("/api/tasks", json={"title": f"report {round_number}"}), 201),
                    lambda: ok(http.patch(f"/api/tasks/{notes[round_number]}", json={"description": "a report"})),
                    lambda: during.append(counted() - before),
                ]
                released_together(work)
                after = matches()
                assert after == before + 2
                disagreed += [round_number for _ in range(4) if counted() != after]
    engine.dispose()
    assert disagreed == []
    assert len(during) == ROUNDS and set(during) <= {0, 1, 2}, during


SEED = """
INSERT INTO task (user_id, title, completed, priority, tags, created_at, updated_at, version, list_id, position, reminders)
SELECT :user, CASE WHEN n % 3 = 0 THEN 'report ' ELSE 'note ' END || n, false, 'medium', '[]',
       now(), now(), 1, :list_id, 'a0', '[]'
FROM generate_series(1, :tasks) AS n
"""
MATCHES = ("SELECT count(*) FROM task WHERE list_id = :list_id"
           " AND (lower(title) LIKE '%report%' OR lower(description) LIKE '%report%')")
