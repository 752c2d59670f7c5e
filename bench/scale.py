"""`make bench-scale`: the listing, stats and tags of a user with 100,000 tasks in their own lists, and
of a user with 100,000 tasks in lists shared with them, timed on PostgreSQL.

Usage (from the repository root):

    .venv/bin/python bench/scale.py [--database-url postgresql://postgres@127.0.0.1:5432/taskapi_scale]
                                    [--runs 20] [--warmups 2] [--big-tasks 100000] [--shared-tasks 100000]
                                    [--small-users 2000] [--keep] [--reuse] [--only CASE]

    .venv/bin/python bench/scale.py --reuse --keep --warmups 50 --runs 400 --only "by cursor"   # steady state

What it does, in about 3 to 6 minutes on 2 cores (seeding ~1.5 min, each of ~111 cases at most
--runs + 2 calls, every call bounded by the service's statement deadline of 5 s):

1. Recreates the scratch database in --database-url (never `test` or `postgres`: it is dropped),
   migrates it with the service's Alembic migrations, and seeds 400,000 tasks with COPY
   (bench/scale_seed.py), each list with its owner as a member (`list_member`) and every tag in
   `task_tag` with its task's list, as the service writes them:
   - `big_user`: 100,000 tasks in their Inbox and 8 lists of their own, with subtasks, tags, due
     dates (some all-day), priorities and completed ones;
   - `shared_user`: only an empty Inbox of their own, and editor of 5 lists of other users
     (`sharer_1`..`sharer_5`, one list each), 100,000 tasks between them made the way the big user's
     are (created by the list's owner or by the shared user);
   - 2,000 users with 100 tasks each, in their Inbox.
   The big user's and the small users' rows are the same with or without the shared lists (those
   draw from their own random generator). VACUUM ANALYZE. `--reuse` skips this and uses the
   database as a previous `--keep` run left it.
2. For the big user, a 100-task user and the shared user, calls the service's own functions
   (queries.list_tasks with the filters and orders routes.listing builds, queries.stats,
   queries.tag_counts; `list_id` and `parent_id` are among the tasks the user sees) --runs times
   after 2 warm-up calls, and reports p50 and p95 of the whole call (every statement it sends, the
   driver and the Python around them), PASS/FAIL against 20 ms, and the indexes PostgreSQL uses for
   the statements it sent (plain EXPLAIN of the captured SQL and parameters). A case whose first
   call fails (the statement deadline, say) is an ERROR with the plan of what it sent; one whose
   second warm-up takes over a second is timed 3 times. With 2 warm-ups a prepared statement is still
   in its first five calls on some of the pool's connections (PostgreSQL plans those for their
   values, 1-2 ms for a page of nine lists, before keeping one plan): `--warmups 50 --runs 400`
   times the steady state.
3. Writes everything to bench/results/scale.json (not committed). Exit status 1 if a case failed.
"""
import argparse
import asyncio
import json
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import explain  # noqa: E402  (bench/, beside this file)
import queries  # noqa: E402
import scale_seed  # noqa: E402
import search_counts  # noqa: E402
from config import DatabaseSettings, Settings  # noqa: E402
from db import Database, upgrade_schema  # noqa: E402
from routes.listing import ListQuery  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/taskapi_scale"
TARGET_MS = 20.0
SLOW_MS, SLOW_RUNS = 1000.0, 3  # a case whose call (the second warm-up) takes longer is timed this many times only
RESULTS = ROOT / "bench" / "results" / "scale.json"
SORTS = ("created_at", "updated_at", "due_date", "priority", "title")


@dataclass
class Case:
    name: str
    run: Callable[[Database], Awaitable[Any]]


def listing(user_id: str, **params: Any) -> Callable[[Database], Awaitable[Any]]:
    query = ListQuery.model_validate(params)
    extra = {key: params[key] for key in ("count",) if key in params}

    def run(database: Database) -> Awaitable[Any]:
        return queries.list_tasks(
            database, query.to_filter(user_id), *query.ordering(), limit=query.limit, offset=query.offset, **extra
        )

    return run


def cursor_listing(user_id: str, offset: int, **params: Any) -> Callable[[Database], Awaitable[Any]]:
    """The page at `offset`, reached through a keyset cursor (made once, from the row before it)."""
    query = ListQuery.model_validate(params)
    sort, ascending = query.ordering()
    cursor: list[Any] = []

    async def run(database: Database) -> Any:
        if not cursor:
            cursor.append(await queries.cursor_at(database, query.to_filter(user_id), sort, ascending, offset))
        return await queries.list_tasks(
            database, query.to_filter(user_id), sort, ascending, limit=query.limit, offset=0, after=cursor[0], count=False
        )

    return run


def asked_first(run: Callable[[Database], Awaitable[Any]]) -> Callable[[Database], Awaitable[Any]]:
    """The call with no count remembered: a search asked for the first time (search_counts.py; the
    case without this is the search asked again: paging through its results, a refresh)."""

    def first_time(database: Database) -> Awaitable[Any]:
        search_counts.forget()
        return run(database)

    return first_time


def after_its_count(counted: Callable[[Database], Awaitable[Any]], uncounted: Callable[[Database], Awaitable[Any]]) -> Callable[[Database], Awaitable[Any]]:
    """The uncounted listing, its count remembered by the counted one, called once first (a client
    paging with count=false after a first page with its count: search_counts.known)."""
    done: list[bool] = []

    async def run(database: Database) -> Any:
        if not done:
            await counted(database)
            done.append(True)
        return await uncounted(database)

    return run


def cases_for(user_id: str, ids: dict[str, Any], who: str, tasks: int) -> list[Case]:
    """Every case, for the user who sees `tasks` tasks (`who`: the prefix of their ids' names)."""
    list_id, parent_id = ids[f"{who}_list"], ids[f"{who}_parent"]
    deep = tasks * 9 // 10  # the page at 90% of their tasks
    day = scale_seed.busiest_day()
    week_later = (date.fromisoformat(day) + timedelta(days=7)).isoformat()
    cases = [Case("default", listing(user_id))]
    for sort in SORTS:
        for order in ("asc", "desc"):
            cases.append(Case(f"sort={sort}&order={order}", listing(user_id, sort=sort, order=order)))
    cases += [
        Case("sort=position&list_id", listing(user_id, sort="position", list_id=list_id)),
        Case("completed=true", listing(user_id, completed=True)),
        Case("completed=false", listing(user_id, completed=False)),
        Case("status=pending", listing(user_id, status="pending")),
        Case("priority=high", listing(user_id, priority=["high"])),
        Case("tag=home", listing(user_id, tag=["home"])),
        Case("tag=home&tag=work", listing(user_id, tag=["home", "work"])),
        Case("q=report (common)", listing(user_id, q="report")),
        Case(f"q={scale_seed.RARE_WORD} (rare)", listing(user_id, q=scale_seed.RARE_WORD)),
        Case("q=report (common), asked first", asked_first(listing(user_id, q="report"))),
        Case(f"q={scale_seed.RARE_WORD} (rare), asked first", asked_first(listing(user_id, q=scale_seed.RARE_WORD))),
        Case("due_after&due_before (a week)", listing(user_id, due_after=f"{day}T00:00:00Z", due_before=f"{week_later}T00:00:00Z")),
        Case("overdue=true", listing(user_id, overdue=True)),
        Case("due_on", listing(user_id, due_on=day)),
        Case("list_id", listing(user_id, list_id=list_id)),
        Case("parent_id", listing(user_id, parent_id=parent_id)),
        Case("parent_id=none", listing(user_id, parent_id="none")),
        Case(f"offset={deep}", listing(user_id, offset=deep)),
    ]
    if hasattr(queries, "cursor_at"):
        cases += [
            Case("count=false", listing(user_id, count=False)),
            Case("priority=high, count=false", listing(user_id, priority=["high"], count=False)),
            Case("q=report (common), count=false", listing(user_id, q="report", count=False)),
            Case("q=report, count=false after its count",
                 after_its_count(listing(user_id, q="report"), listing(user_id, q="report", count=False))),
            Case(f"offset={deep} by cursor", cursor_listing(user_id, deep)),
            Case(f"sort=due_date&order=desc, {deep} by cursor", cursor_listing(user_id, deep, sort="due_date", order="desc")),
            Case(f"sort=title, {deep} by cursor", cursor_listing(user_id, deep, sort="title")),
        ]
    cases += [
        Case("stats", lambda database: queries.stats(database, user_id)),
        Case("stats&list_id", lambda database: queries.stats(database, user_id, list_id)),
        Case("tags", lambda database: queries.tag_counts(database, user_id)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Timing and plans


def plan_summary(engine: sa.Engine, statements: list[tuple[str, Any]]) -> tuple[list[str], list[str]]:
    """(indexes used, tables read by a sequential scan) over the statements' plans."""
    used: list[str] = []
    seq: list[str] = []
    for sql, parameters in statements:
        if sql.lstrip().upper().startswith(("SELECT", "WITH")):
            plan = "\n".join(explain.plan_lines(engine, sql, parameters, analyze=False))
            used += explain.INDEX_IN_PLAN.findall(plan)
            seq += explain.SEQ_SCAN.findall(plan)
    return list(dict.fromkeys(used)), list(dict.fromkeys(seq))


async def time_case(
    database: Database, case: Case, runs: int, statements: list[tuple[str, Any]], warmups: int = 2,
) -> list[float]:
    """The case's timings; `statements` gets the SQL and parameters of one call (even if it fails)."""
    with explain.captured_statements() as captured:
        try:
            await case.run(database)  # warm-up (and a cursor case makes its cursor)
        except Exception:
            statements += captured  # what failed, for its plan
            raise
    with explain.captured_statements() as captured:
        started = time.perf_counter()
        try:
            await case.run(database)  # second warm-up: the statements of one call
        finally:
            statements += captured
    if (time.perf_counter() - started) * 1000 > SLOW_MS:
        runs, warmups = min(runs, SLOW_RUNS), 2
    for _ in range(warmups - 2):
        await case.run(database)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        await case.run(database)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def run_cases(
    url: str, groups: dict[str, list[Case]], runs: int, engine: sa.Engine, warmups: int = 2,
) -> list[dict[str, Any]]:
    settings = Settings(_env_file=None, database_url=url, better_auth_secret=secrets.token_urlsafe(48))
    database = Database(settings)
    results = []
    try:
        for who, cases in groups.items():
            print(f"\n{who}\n{'case':<44} {'p50 ms':>8} {'p95 ms':>8}  result  indexes (seq scans)")
            for case in cases:
                statements: list[tuple[str, Any]] = []
                failure = ""
                try:
                    timings = await time_case(database, case, runs, statements, warmups)
                except Exception as error:  # the statement deadline, say: this case fails, the others run
                    timings, failure = [], f"{type(error).__name__}: {error}"
                used, seq = plan_summary(engine, statements)
                plans = f"{', '.join(used) or '-'}" + (f" (seq scan: {', '.join(seq)})" if seq else "")
                result = {"user": who, "case": case.name, "runs": len(timings), "statements": len(statements),
                          "indexes": used, "seq_scans": seq}
                if not timings:
                    print(f"{case.name:<44} {'-':>8} {'-':>8}  ERROR   {plans}\n{'':<44} {failure}")
                    results.append({**result, "pass": False, "error": failure})
                    continue
                p50, p95 = statistics.median(timings), percentile(timings, 0.95)
                verdict = "PASS" if p50 < TARGET_MS else "FAIL"
                runs_note = f" [{len(timings)} runs]" if len(timings) < runs else ""
                print(f"{case.name:<44} {p50:>8.1f} {p95:>8.1f}  {verdict}    {plans}{runs_note}")
                results.append({**result, "p50_ms": round(p50, 2), "p95_ms": round(p95, 2), "pass": verdict == "PASS"})
    finally:
        await database.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL, help=f"a scratch database, recreated (default {DEFAULT_URL})")
    parser.add_argument("--runs", type=int, default=20, help="timed calls per case (after the warm-ups)")
    parser.add_argument("--warmups", type=int, default=2, help="untimed calls per case first (at least 2)")
    parser.add_argument("--big-tasks", type=int, default=100_000)
    parser.add_argument("--shared-tasks", type=int, default=100_000,
                        help=f"in the {scale_seed.SHARED_LISTS} lists shared with {scale_seed.SHARED_USER} (0: no such group)")
    parser.add_argument("--small-users", type=int, default=2000, help="users with 100 tasks each")
    parser.add_argument("--keep", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--reuse", action="store_true", help="use the database a --keep run left (no seeding)")
    parser.add_argument("--only", default="", help="run only the cases whose name contains this")
    args = parser.parse_args()

    url = DatabaseSettings.normalise_database_url(args.database_url)
    name = make_url(url).database
    if not url.startswith("postgresql") or name in ("test", "postgres", "template0", "template1"):
        parser.error("--database-url must be a scratch PostgreSQL database (it is dropped), not test or postgres")
    started = time.perf_counter()
    if not args.reuse:
        explain.recreate_database(url)
    upgrade_schema(url)
    if not args.reuse:
        scale_seed.seed(url, args.small_users, 100, args.big_tasks, args.shared_tasks)
    print(f"database ready in {time.perf_counter() - started:.1f} s")
    engine = sa.create_engine(url)
    ids = scale_seed.sample_ids(url)
    groups = {
        f"{scale_seed.BIG_USER} ({args.big_tasks:,} tasks)": cases_for(scale_seed.BIG_USER, ids, "big", args.big_tasks),
        f"{ids['small_user']} (100 tasks)": cases_for(ids["small_user"], ids, "small", 100),
    }
    if args.shared_tasks:
        shared = (f"{scale_seed.SHARED_USER} ({args.shared_tasks:,} tasks in {scale_seed.SHARED_LISTS} lists "
                  f"shared with them, an editor)")
        groups[shared] = cases_for(scale_seed.SHARED_USER, ids, "shared", args.shared_tasks)
    if args.only:
        groups = {who: [case for case in cases if args.only in case.name] for who, cases in groups.items()}
    results = asyncio.run(run_cases(url, groups, args.runs, engine, max(2, args.warmups)))
    engine.dispose()
    if not args.keep:
        explain.drop_database(url)
    failed = [f"{result['user']}: {result['case']}" for result in results if not result["pass"]]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"target_ms": TARGET_MS, "runs": args.runs, "results": results}, indent=2))
    print(f"\n{len(results) - len(failed)} of {len(results)} cases under {TARGET_MS:.0f} ms p50 "
          f"({time.perf_counter() - started:.0f} s in all); results in {RESULTS.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
