"""The listing gives the same pages whichever way it reaches the caller's lists (queries.py, IN_SCOPE /
EACH_LIST / one branch per list): a small user's, and a user with many tasks (forced here), whose
lists are named one by one, up to MAX_LIST_BRANCHES of them, and past that read through the join.
Their own lists and lists shared with them, every sort, filters, pages by offset and by cursor."""
import pytest
from sqlalchemy.dialects import postgresql

import listing_sql
import queries
from sharing_helpers import person, share_list  # noqa: F401 (person is a fixture)
from test_db import run_with_database

QUERIES = [
    {},
    {"sort": "title"},
    {"sort": "due_date"},
    {"sort": "due_date", "order": "desc"},
    {"sort": "priority", "order": "asc"},
    {"sort": "updated_at"},
    {"completed": "false"},
    {"status": "completed", "sort": "title", "order": "desc"},
    {"priority": ["high", "low"]},
    {"tag": ["home"]},
    {"tag": ["home", "work"]},
    {"tag": ["home"], "completed": "false", "sort": "title"},
    {"q": "milk"},
    {"overdue": "true"},
    {"parent_id": "none"},
    {"assignee": "none"},
    {"offset": "3"},
    {"limit": "4", "sort": "due_date", "order": "desc", "offset": "5"},
    {"priority": ["high", "low"], "sort": "due_date"},
    {"q": "milk", "sort": "due_date", "order": "desc"},
    {"count": "false"},
    {"completed": "false", "count": "false"},
    {"tag": ["home"], "count": "false", "sort": "title"},
    {"priority": ["high", "low"], "count": "false", "sort": "due_date"},
    {"q": "milk", "count": "false"},
]


@pytest.fixture
def reader(person):
    """A member of four lists, their own two and two shared with them, each with assorted tasks."""
    me, owner = person("reader"), person("owner")
    mine = me.post("/api/lists", json={"name": "Mine"}).json()["id"]
    edited, viewed = share_list(owner, me, "editor", name="Edited"), share_list(owner, me, "viewer", name="Viewed")
    for author, list_id in ((me, None), (me, mine), (owner, edited), (owner, viewed)):
        for n in range(5):
            task = author.create_task(
                title=f"{'milk' if n % 2 else 'bread'} {list_id} {n}",
                priority=("low", "medium", "high")[n % 3],
                tags=[["home"], ["home", "work"], [], ["work"], ["HOME"]][n],
                due_date=None if n == 4 else f"202{5 + n % 2}-0{n + 1}-1{n}T10:00:00Z",
                **({"list_id": list_id} if list_id else {}),
            )
            if n == 2:
                author.create_task(title=f"milk under {task['id']}", parent_id=task["id"])
            if n == 3:
                author.post(f"/api/tasks/{task['id']}/toggle")
    return me


def pages(user, params: dict) -> tuple[list[int], str | None]:
    """Every task of the listing, following rel="next" (by cursor, or by offset), and the total."""
    response = user.get("/api/tasks", params={"limit": 3, **params})
    seen, total = [], response.headers.get("X-Total-Count")
    while True:
        assert response.status_code == 200, response.text
        seen += [task["id"] for task in response.json()]
        if "next" not in response.links:
            return seen, total
        response = user.get(response.links["next"]["url"])


@pytest.fixture(params=["small_user", "each_list_named", "few_read_at_once", "many_walked", "past_the_branches"])
def scope(request, monkeypatch, backend):
    """How the listings read the lists. A big user's filtered listing with a count counts first and
    chooses (queries._read_way): here "each_list_named" always plans each list for its values,
    "few_read_at_once" always reads the matches at once, "many_walked" always walks each list; each
    checks that it did."""
    way = {"few_read_at_once": listing_sql.AtOnce, "many_walked": listing_sql.Walked}.get(request.param)
    if request.param != "small_user":
        async def many(connection, user_id):
            return 10**6

        monkeypatch.setattr(queries, "_tasks_seen_by", many)
    if request.param == "past_the_branches":
        monkeypatch.setattr(queries, "MAX_LIST_BRANCHES", 2)
    monkeypatch.setattr(queries, "_read_way", lambda shape, matches, page_end, tasks, lists: way(lists) if way else lists)
    scopes_read = record_scopes(monkeypatch)
    yield request.param
    filtered_listings_asked = request.node.name.startswith("test_every_listing") and backend == "postgres"
    for kind in (listing_sql.AtOnce, listing_sql.Walked):
        read_so = any(isinstance(scope, kind) for scope in scopes_read)
        assert read_so == (kind is way and filtered_listings_asked), kind


def record_scopes(monkeypatch) -> list:
    """The scope of every page statement built from now on (how it reached the lists), in order."""
    scopes = []
    usual = listing_sql.page_statement

    def page_statement(shape, sort, ascending, start="offset", scope=listing_sql.IN_SCOPE):
        scopes.append(scope)
        return usual(shape, sort, ascending, start, scope)

    monkeypatch.setattr(listing_sql, "page_statement", page_statement)
    return scopes


def subtask_queries(user) -> list[dict]:
    """The subtasks of each task that has some (in the reader's lists and in those shared with them)."""
    tasks = user.get("/api/tasks", params={"limit": 100}).json()
    parents = sorted({task["parent_id"] for task in tasks if task["parent_id"]})
    assert len(parents) == 4
    return [{"parent_id": str(parent)} for parent in parents] + [{"parent_id": str(parents[-1]), "q": "milk", "sort": "title"}]


def test_every_listing_is_the_same_whichever_way_it_reads_the_lists(reader, scope, monkeypatch):
    queries_asked = QUERIES + subtask_queries(reader)
    found = {str(params): pages(reader, params) for params in queries_asked}
    monkeypatch.undo()  # the small user's way, as the reference
    for params in queries_asked:
        assert found[str(params)] == pages(reader, params), params
    assert len(found["{}"][0]) == 24 and found["{}"][1] == "24"
    assert all(len(found[str(params)][0]) == 1 for params in queries_asked[len(QUERIES):])  # each parent's one subtask


def test_a_page_far_down_read_by_its_ids_first_is_the_same_page(reader, scope, monkeypatch):
    """Past listing_sql.DEEP_OFFSET (lowered here to 2) an unfiltered page reads the ids of its rows
    first; the pages are those read the usual way."""
    deep_pages = []
    usual_deep_offset = listing_sql.deep_offset

    def deep_offset(*args):
        deep_pages.append(usual_deep_offset(*args))
        return deep_pages[-1]

    monkeypatch.setattr(listing_sql, "deep_offset", deep_offset)
    asked = [
        {"sort": sort, "order": order, "offset": offset, "limit": 4, **extra}
        for sort in listing_sql.DEEP_SORTS for order in ("asc", "desc") for offset in (2, 9, 21)
        for extra in ({}, {"list_id": reader.get("/api/lists").json()[1]["id"]})
    ]

    def ids(params: dict) -> tuple[list[int], str]:
        response = reader.get("/api/tasks", params=params)
        assert response.status_code == 200, response.text
        return [task["id"] for task in response.json()], response.headers["X-Total-Count"]

    monkeypatch.setattr(listing_sql, "DEEP_OFFSET", 2)
    found = [ids(params) for params in asked]
    assert all(deep_pages) and len(deep_pages) == len(asked)
    monkeypatch.setattr(listing_sql, "DEEP_OFFSET", 10**9)
    assert found == [ids(params) for params in asked]
    assert not any(deep_pages[len(asked):])
    assert asked[4]["offset"] == 21 and len(found[4][0]) == 3 and found[4][1] == "24"  # the last 3 of 24 tasks


def test_a_big_users_listing_is_planned_for_its_values_only_where_they_decide_the_plan():
    """PostgreSQL plans a big user's filtered listing for its values on every call (how many tasks a
    word, a tag or a date range holds decides between walking the order's index and sorting the
    matches); a listing filtered by nothing but its list, the top level or a parent is walked
    whatever the values, so it is prepared (planned once per connection, 1-2 ms less per page)."""

    def prepared(**filters) -> bool:
        shape = queries.TaskFilter("someone", **{"many_tasks": True, **filters}).shape()
        return all(
            statement.get_execution_options().get("prepare", True)
            for statement in (
                listing_sql.page_statement(shape, "created_at", False, "offset", 3),
                listing_sql.page_statement(shape, "title", True, "after", listing_sql.EACH_LIST),
                listing_sql.segments_statement(shape, "due_date", True, ("dated", "undated"), 3),
            )
        )

    assert prepared() and prepared(top_level_only=True) and prepared(parent_id=7) and prepared(list_id=1)
    for filters in ({"text": "report"}, {"tags": ["home"]}, {"completed": True}, {"priorities": ["high"]},
                    {"overdue": True}, {"assignee": "someone"}, {"top_level_only": True, "tags": ["home"]}):
        assert not prepared(**filters), filters
    assert queries.TaskFilter("someone").shape()[-1] is False and prepared(tags=["home"], many_tasks=False)


def test_a_users_size_is_the_tasks_of_their_lists_their_own_and_those_shared_with_them(person, database_url):
    """How big a user is (their listings read their lists one by one past queries.SEARCH_INDEX_FROM
    tasks) counts the tasks of every list they are a member of, and nobody else's."""
    me, owner, stranger = person("sized"), person("sharer"), person("stranger")
    shared = share_list(owner, me, "viewer", name="Shared")
    for n in range(2):
        me.create_task(title=f"mine {n}")
    for n in range(3):
        owner.create_task(title=f"shared {n}", list_id=shared)
    owner.create_task(title="the sharer's own, unshared")
    stranger.create_task(title="a stranger's")
    me.post(f"/api/tasks/{me.create_task(title='done')['id']}/toggle")

    async def sizes(database):
        async with database.connect() as connection:
            return [await queries._tasks_seen_by(connection, user.user_id) for user in (me, owner, stranger)]

    assert run_with_database(database_url, sizes) == [6, 4, 1]


def test_a_walked_listing_is_prepared_and_leaves_no_index_but_the_orders_to_its_filters():
    """Walked (many matches, counted first): every filter in one condition no index serves, and each
    tag probed per task (OFFSET 0: never all of the tag's rows read into a hash first), so the only
    plan is the walk of the order's index, and the statement is prepared for every value."""
    walked = listing_sql.Walked(3)
    for filters in ({"text": "report"}, {"tags": ["home", "work"]}, {"completed": True, "priorities": ["high"]},
                    {"overdue": True}, {"assignee": "someone"}):
        shape = queries.TaskFilter("someone", many_tasks=True, **filters).shape()
        for statement, segments in ((listing_sql.page_statement(shape, "title", True, "offset", walked), 1),
                                    (listing_sql.segments_statement(shape, "due_date", False, ("dated_after", "undated"), walked), 2)):
            assert statement.get_execution_options().get("prepare", True), filters
            sql = str(statement.compile(dialect=postgresql.dialect()))
            assert sql.count(") IS true") == sql.count("task.list_id = %(scope_list_") == 3 * segments, filters  # a branch per list
            assert sql.count("OFFSET 0") == shape[3] * 3 * segments, filters
            assert "CAST(task.list_id AS BIGINT)" not in sql and "ARRAY[task.list_id]" not in sql


def test_a_counted_page_reads_few_matches_at_once_walks_many_and_plans_rare_tags_per_list():
    """queries._read_way for a user with 100,000 tasks in 9 lists, a first page of 100 (101 rows read)."""
    untagged = queries.TaskFilter("someone", many_tasks=True, text="report").shape()
    tagged = queries.TaskFilter("someone", many_tasks=True, tags=["home", "work"]).shape()
    # The bench-scale seed's matches: a week of due dates 1,269, the word "report" 18,786, two tags 1,783.
    assert queries._read_way(untagged, 1_269, 101, 100_000, 9) == listing_sql.AtOnce(9)
    assert queries._read_way(untagged, 0, 101, 100_000, 9) == listing_sql.AtOnce(9)
    assert queries._read_way(untagged, 18_786, 101, 100_000, 9) == listing_sql.Walked(9)
    assert queries._read_way(untagged, 18_786, 90_101, 100_000, 9) == listing_sql.AtOnce(9)  # far down
    assert queries._read_way(tagged, 1_783, 101, 100_000, 9) == listing_sql.Walked(9)
    assert queries._read_way(tagged, 300, 101, 100_000, 9) == 9  # each list planned for a rare pair
