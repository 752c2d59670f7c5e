"""A big user's listing names the lists their last listing found, without looking them up again
(queries.py, listing_sql.Remembered), and its page reads them only if they are still exactly the
caller's lists (access.sees_exactly): a list joined, left, removed from, created or deleted since is
in, or out of, the very next page, on whichever worker. Lists remembered wrongly (as if forged) read
nothing that is not the caller's.

PostgreSQL remembers (for users with many tasks: forced here, but for the real service's two
workers in the last test); SQLite looks the lists up every time, and must show the same."""

import httpx
import pytest
import sqlalchemy as sa

import listing_sql
import queries
from config import Settings
from conftest import TEST_SECRET
from live_server import LiveServer, released_together
from sharing_helpers import LiveUser, create_list, default_list_id, join, person, remove_member, share_list  # noqa: F401 (person: a fixture)
from test_listing_scopes import record_scopes
from test_search_counts import SEED, ok, sql


@pytest.fixture
def big(monkeypatch, backend):
    """Every reader counts as a user with many tasks; the scopes their pages are read with."""

    async def many(connection, user_id):
        return queries.SEARCH_INDEX_FROM + 1

    monkeypatch.setattr(queries, "_tasks_seen_by", many)
    return record_scopes(monkeypatch)


def listed(user, **params) -> tuple[set[int], str | None]:
    response = user.get("/api/tasks", params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    return {task["id"] for task in response.json()}, response.headers.get("X-Total-Count")


def sees(user, expected: set[int]) -> None:
    """Every way a page may name remembered lists shows exactly `expected`: uncounted, counted by the
    kept counts, sorted by due date (two segments), by offset, by cursor."""
    assert listed(user, count="false") == (expected, None)
    assert listed(user) == (expected, str(len(expected)))
    assert listed(user, sort="due_date", order="asc") == (expected, str(len(expected)))
    in_order = [task["id"] for task in user.get("/api/tasks", params={"limit": 100}).json()]
    assert [task["id"] for task in user.get("/api/tasks", params={"offset": 1, "limit": 100}).json()] == in_order[1:]
    first = user.get("/api/tasks", params={"limit": 1, "count": "false"})
    assert [task["id"] for task in first.json()] == in_order[:1]
    if len(expected) > 1:
        assert [task["id"] for task in user.get(first.links["next"]["url"]).json()] == in_order[1:2]


def test_a_big_users_pages_follow_every_change_of_their_lists_at_once(person, big, backend):
    me, owner = person("reader"), person("owner")
    mine = {me.create_task(title=f"mine {n}", due_date=f"2027-01-0{n}T10:00:00Z")["id"] for n in range(1, 4)}
    shared = share_list(owner, me, "viewer")
    theirs = {owner.create_task(title=f"theirs {n}", list_id=shared)["id"] for n in range(2)}
    sees(me, mine | theirs)
    if backend == "postgres":
        assert any(isinstance(scope, listing_sql.Remembered) for scope in big)

    assert remove_member(owner, shared, me.user_id).status_code == 204
    sees(me, mine)
    join(owner, shared, me, "editor")
    sees(me, mine | theirs)
    assert me.delete(f"/api/lists/{shared}/members/{me.user_id}").status_code == 204  # leaving
    sees(me, mine)

    extra = create_list(me, "Extra")
    in_extra = me.create_task(title="in extra", list_id=extra)["id"]
    sees(me, mine | {in_extra})
    assert me.delete(f"/api/lists/{extra}", params={"cascade": "true"}).status_code == 204
    sees(me, mine)
    assert listed(owner) == (theirs, "2")


def test_an_uncounted_filtered_page_is_read_the_way_its_kept_count_chooses(person, big, backend):
    """`count=false` sends no count, but where the writes keep it (state, priority, one tag) it is read
    anyway (a few rows) to choose how the page reads the lists, as a counted page's count does; the
    lists are looked up for it, not remembered."""
    me = person("reader")
    done = [me.create_task(title=f"done {n}", completed=True)["id"] for n in range(3)]
    open_ids = {me.create_task(title=f"open {n}")["id"] for n in range(4)}
    sees(me, open_ids | set(done))
    reads = len(big)
    assert listed(me, completed="false", count="false") == (open_ids, None)
    assert listed(me, completed="true", count="false", sort="title") == (set(done), None)
    if backend == "postgres":
        assert all(isinstance(scope, (listing_sql.AtOnce, listing_sql.Walked)) for scope in big[reads:]), big[reads:]


def test_lists_remembered_wrongly_read_nothing_that_is_not_the_callers(person, big, backend):
    """As if the memory were forged: a stranger's list in place of one of the caller's, or beside
    them. The page reads none of it, and the caller's own tasks all the same."""
    if backend != "postgres":
        pytest.skip("lists are remembered on PostgreSQL only")
    me, stranger = person("reader"), person("stranger")
    mine = {me.create_task(title=f"mine {n}")["id"] for n in range(3)}
    other = create_list(me, "Other")
    mine.add(me.create_task(title="in other", list_id=other)["id"])
    secret_list = default_list_id(stranger)
    secret = stranger.create_task(title="secret")["id"]
    sees(me, mine)

    for forged in (sorted([default_list_id(me), secret_list]), sorted([default_list_id(me), other, secret_list])):
        queries._lists_seen[me.user_id] = forged
        reads = len(big)
        assert listed(me, count="false") == (mine, None)
        assert any(isinstance(scope, listing_sql.Remembered) for scope in big[reads:])
        assert queries._lists_seen[me.user_id] == sorted([default_list_id(me), other])  # looked up again
        assert secret not in listed(me)[0]


# ------------------------------------------------ two workers, membership changes racing listings

ROUNDS = 100
SEEDED = queries.SEARCH_INDEX_FROM + 100  # a user with many tasks, for real


@pytest.mark.slow
def test_two_workers_list_exactly_the_lists_the_caller_has_after_every_change(scratch_database, postgres_server_url):
    """Each round, released together by a barrier: the owner removes the reader from the shared list
    (or shares it again), and the reader lists their tasks; then four listings on fresh connections
    (both workers, each remembering the reader's lists) show the shared list's tasks exactly when the
    reader is a member."""
    url = scratch_database("postgres")
    engine = sa.create_engine(Settings.normalise_database_url(url))
    with LiveServer(url, secret=TEST_SECRET, workers=2, env={"LOG_LEVEL": "WARNING"}) as server:
        reader, owner = LiveUser(server.url, "reader"), LiveUser(server.url, "owner")
        sql(engine, SEED, user=reader.user_id, list_id=default_list_id(reader), tasks=SEEDED)
        shared = share_list(owner, reader, "viewer")
        theirs = {owner.create_task(title=f"theirs {n}", list_id=shared)["id"] for n in range(3)}

        def shown() -> set[int]:
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {reader.token}"}, timeout=30) as fresh:
                page = ok(fresh.get("/api/tasks", params={"count": "false", "limit": 20}))
            return {task["id"] for task in page} & theirs

        def removed(response: httpx.Response) -> None:
            assert response.status_code == 204, response.text

        member, stale, during = True, [], []
        for round_number in range(ROUNDS):
            if member:
                change = lambda: removed(remove_member(owner, shared, reader.user_id))  # noqa: E731
            else:
                change = lambda: join(owner, shared, reader, "viewer")  # noqa: E731
            work = [change, lambda: during.append(len(shown()))]
            released_together(work)
            member = not member
            stale += [round_number for _ in range(4) if shown() != (theirs if member else set())]
        reader.close()
        owner.close()
    engine.dispose()
    assert stale == [], f"{len(stale)} of {4 * ROUNDS} listings stale"
    assert len(during) == ROUNDS and set(during) <= {0, len(theirs)}, during
