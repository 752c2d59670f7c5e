"""Task writes: create, change, complete, delete; moves are in moves.py, the SQL in task_sql.py. Who
may write is decided by access.py, inside each write: in its WHERE clause, or in its transaction.

Writes are single statements where they can be: `UPDATE ... WHERE id AND <the caller may edit the
task's list> [AND version] RETURNING` is the permission check and the compare-and-set of If-Match at
once, atomic on both databases (PostgreSQL locks the row and re-checks the WHERE after a concurrent
commit; SQLite runs one writer at a time). A write that matched nothing is explained afterwards
(access.explain_task_miss: 404, 403 or 412). Completing a task completes its open subtasks in the
same statement; deleting one deletes its subtree in the same statement. A change of tags, of the
assignee, a move (moves.py), a change of a dated field (§9: the row is read first, scheduling.py
derives the columns) and a completion that continues a recurring series run in a transaction.

Every write returns every task it wrote and records one event per task written in the feed of every
member of its list (events.record, last in the write's transaction; on PostgreSQL the one-statement
writes use events.with_event), with the caller as `actor`: task.created (next occurrences of completed
series included), task.updated (cascaded completions included), task.deleted (each task of a deleted
subtree). Rows come back as plain dicts: the routes serialise them directly.
"""
import functools
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

import access
import events
import lists
import moves
import reminders
import scheduling
import tree
from db import Connection, Database, Row
from errors import Conflict, ListNotFound, TaskNotFound, ValidationFailed
from etags import Precondition
from models import MAX_ID
from task_sql import (
    delete_statement,
    DELETE_TAGS,
    FIND_TASK,
    FIND_TASK_FOR_UPDATE,
    insert_tags_statement,
    INSERT_TASK,
    insert_task_with_event,
    LINK_NEXT_OCCURRENCE,
    numbered,
    public,
    task_json,
    task_table,
    update_statement,
)

__all__ = ["public"]

# Not a client value: `completed` is flipped in SQL, from the row's own value.
FLIP = object()

Changes = dict[str, Any]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


async def get_task(db: Database, user_id: str, task_id: int) -> dict[str, Any]:
    async with db.connect() as connection:
        task = await find(connection, user_id, task_id)
    if task is None:
        raise TaskNotFound()
    return task


async def task_occurrences(db: Database, user_id: str, task_id: int, count: int) -> list[Any]:
    async with db.connect() as connection:
        task = await find(connection, user_id, task_id)
        if task is None:
            raise TaskNotFound()
        zone_name = await scheduling.zone_name_of(connection, task["user_id"], task["time_zone"], to_write=False)
    return await scheduling.preview(task, zone_name, count)


async def create_task(db: Database, user_id: str, fields: Changes) -> dict[str, Any]:
    one_statement = (
        db.dialect == "postgresql" and not scheduling.needs_transaction(fields)
        and fields.get("parent_id") is None and fields.get("assignee_id") is None
    )
    if one_statement:
        async with db.connect(writer=user_id) as connection:  # the INSERTs and the events: one statement (events.with_event)
            return await insert_task(connection, user_id, fields, one_statement=True)
    async with db.transaction(writer=user_id) as connection:
        return await insert_task(connection, user_id, fields)


async def insert_task(connection: Connection, user_id: str, fields: Changes, one_statement: bool = False) -> dict[str, Any]:
    """The INSERTs of a new task by `user_id`, at the end of its siblings, and its events, in the
    caller's transaction (or, `one_statement` on PostgreSQL without parent, assignee nor reminders,
    as one statement, which checks the caller may put tasks in the list itself)."""
    place = await _new_place(connection, user_id, fields.get("list_id"), fields.get("parent_id"))
    fields = {**fields, **place}
    if not one_statement:
        await access.check_assignee(connection, fields["list_id"], fields.get("assignee_id"))
    columns = {**fields, **await scheduling.dated_columns(connection, user_id, None, fields)}
    task = await insert_row(connection, user_id, user_id, columns, one_statement)
    if not one_statement:
        await events.record(connection, user_id, [events.to_members(task["list_id"], events.TASK_CREATED, task["id"], public(task))])
    return task


async def insert_row(connection: Connection, caller: str, creator: str, columns: Changes, one_statement: bool = False) -> dict[str, Any]:
    """The task's rows (task, tags, reminders), if `caller` may put tasks in its list; with
    `one_statement` (PostgreSQL, no reminders) one statement that also records its task.created
    events. Other events: the caller's."""
    now = utc_now()
    task = {
        "user_id": creator,
        "description": None,
        "completed": False,
        "priority": "medium",
        "tags": [],
        **{name: None for name in scheduling.DATED_COLUMNS},
        "reminders": [],
        "next_occurrence_id": None,
        "assignee_id": None,
        **columns,
        "completed_at": now if columns.get("completed") else None,
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }
    params = {**task, "caller": caller}
    with tree.references_checked(lambda: _reference_gone("parent_id" if task["parent_id"] else "list_id")):
        if one_statement:
            statement = insert_task_with_event(len(task["tags"]))
            task["id"] = await connection.fetch_value(statement, {**params, **_tag_params(task["tags"])})
        else:
            task["id"] = await connection.fetch_value(INSERT_TASK, params)
    if task["id"] is None:  # the caller may not (or no longer) put tasks in the list
        await access.require_body_list(connection, caller, task["list_id"])
        raise Conflict("Your role in this list changed while the task was being created. Retry.")
    if not one_statement:
        await _insert_tags(connection, task)
        if task["reminders"]:
            await reminders.replace_rows(connection, task)
    return task


def _reference_gone(field: str) -> ValidationFailed:
    return ValidationFailed([{"field": field, "message": "was deleted a moment ago by another request"}])


def _subtask_added() -> Conflict:
    return Conflict("A subtask was added under this task while it was being deleted. Retry.")


async def _new_place(connection: Connection, user_id: str, list_id: int | None, parent_id: int | None) -> Changes:
    """list_id, parent_id and position of a new task: the end of its siblings in the given list or
    under the given parent (where the caller may put tasks: 422 naming the field), else the end of
    the caller's default list. A subtask waits for the structural changes of its parent's list in
    flight (a move of its parent to another list, or of an ancestor deeper), so it lands in its
    parent's list, never too deep."""
    if list_id is None and parent_id is None:
        list_id = await lists.default_list_id(connection, user_id)  # cached: no query after the first
    elif parent_id is None:
        await access.require_body_list(connection, user_id, list_id)
    if parent_id is not None:
        locked = await _list_of(connection, parent_id)
        await tree.lock_lists(connection, [locked])
    destination = await tree.destination_of_new_task(connection, user_id, list_id, parent_id)
    if parent_id is not None and destination.list_id != locked:  # the parent moved a moment before the lock
        await tree.lock_lists(connection, [destination.list_id])
        destination = await tree.destination_of_new_task(connection, user_id, list_id, parent_id)
    kind, scope = tree.sibling_scope(user_id, 0, destination.list_id, destination.parent_id)
    position = await tree.position_at(connection, kind, scope, tree.BOTTOM)
    return {"list_id": destination.list_id, "parent_id": destination.parent_id, "position": position}


async def _list_of(connection: Connection, task_id: int) -> int:
    """The list a task is in (0 when there is no such task: the check that follows says so)."""
    if not 1 <= task_id <= MAX_ID:
        return 0
    return await connection.fetch_value(access.TASK_LIST, {"task_id": task_id}) or 0


async def modify_task(db: Database, user_id: str, task_id: int, changes: Changes, if_match: Precondition) -> dict[str, Any]:
    """Apply `changes` (`completed` may be FLIP; `list_id` / `parent_id` move it to the end of
    another place); the task after the change."""
    return (await change_task(db, user_id, task_id, changes, if_match))[0]


async def move_task(db: Database, user_id: str, task_id: int, move: tree.Move, if_match: Precondition) -> dict[str, Any]:
    return (await change_task(db, user_id, task_id, {}, if_match, move))[0]


async def change_task(
    db: Database, user_id: str, task_id: int, changes: Changes, if_match: Precondition, move: tree.Move | None = None
) -> list[Row]:
    """One conditional UPDATE (404, 403 or 412 if it matches no row; without If-Match the last write
    wins). Returns every task written, the task itself first: the open subtasks a completion
    completed (same statement), the subtasks that followed it into another list (same transaction)."""
    if not 1 <= task_id <= MAX_ID:
        raise TaskNotFound()
    versions = if_match.versions(task_id)
    if move is None and ("list_id" in changes or "parent_id" in changes):
        move = tree.Move(changes.get("list_id"), changes.get("parent_id"), "parent_id" in changes, explicit=False)
    values = {field: value for field, value in changes.items() if value is not FLIP and field not in ("list_id", "parent_id")}
    completion = _completion(changes.get("completed"))
    dated = not scheduling.DATED_FIELDS.isdisjoint(values)
    completing = completion in ("set", "flip")
    several_statements = "tags" in changes or "assignee_id" in changes or move or dated
    if completing and not several_statements:
        # One statement when nothing it completes recurs; else the transaction below (§9).
        written = await _complete_unless_recurring(db, user_id, task_id, values, completion, versions)
        if written:
            return written
    if db.dialect == "postgresql" and not several_statements and not completing:
        return await _change_in_one_statement(db, user_id, task_id, values, completion, versions)
    async with db.transaction(writer=user_id) as connection:
        return await _change_in_transaction(connection, user_id, task_id, changes, values, completion, versions, move)


async def _change_in_transaction(
    connection: Connection, user_id: str, task_id: int, changes: Changes, values: Changes,
    completion: str | None, versions: list[int] | None, move: tree.Move | None,
) -> list[Row]:
    placement = None
    if move is not None:  # first: a move takes its lists' structure locks before any row lock
        placement = await moves.place(connection, user_id, task_id, move, values.get("assignee_id", moves.UNCHANGED))
    current = None
    if not scheduling.DATED_FIELDS.isdisjoint(values) or "assignee_id" in values:
        current = await _locked_for_edit(connection, user_id, task_id)
    if not scheduling.DATED_FIELDS.isdisjoint(values):
        kept = {field: value for field, value in values.items() if field not in scheduling.DATED_FIELDS}
        values = {**kept, **await scheduling.dated_columns(connection, current["user_id"], current, values)}
    if "assignee_id" in values and not (placement and placement.columns):  # a move checked it at its destination
        await access.check_assignee(connection, current["list_id"], values["assignee_id"])
    if placement is not None:
        values.update(placement.columns)
    statement = update_statement(tuple(sorted(values)), completion, _count(versions))
    params = _update_params(user_id, task_id, values, versions)
    with tree.references_checked(lambda: _reference_gone("parent_id" if move and move.parent_id else "list_id")):
        written = await connection.fetch_all(statement, params)
    task = next((row for row in written if row["id"] == task_id), None)
    if task is None:
        await access.explain_task_miss(connection, user_id, task_id, access.EDIT_TASKS)
    others = [row for row in written if row["id"] != task_id]
    if "tags" in changes:
        await connection.execute(DELETE_TAGS, {"task_id": task_id})
        await _insert_tags(connection, task)
    if not scheduling.DATED_FIELDS.isdisjoint(values) or "assignee_id" in values:
        await reminders.replace_rows(connection, task)  # whose they are follows the assignee
    if placement is not None and placement.relisted:
        others += await moves.relist_subtree(connection, task)
    created: list[Row] = []
    if completion in ("set", "flip"):
        task, others, created = await _continue_series(connection, user_id, task, others, params["now"])
    if placement is not None and placement.relisted:
        await moves.record(connection, user_id, placement, [task, *others], created)
    else:
        await events.record(connection, user_id, [
            *(events.to_members(row["list_id"], events.TASK_UPDATED, row["id"], public(row)) for row in [task, *others]),
            *(events.to_members(row["list_id"], events.TASK_CREATED, row["id"], public(row)) for row in created),
        ])
    return [task, *others, *created]


async def _locked_for_edit(connection: Connection, user_id: str, task_id: int) -> Row:
    """The task, locked, once the caller may edit it (404 / 403)."""
    await access.require_task(connection, user_id, task_id, access.EDIT_TASKS)
    current = await connection.fetch_one(FIND_TASK_FOR_UPDATE, {"task_id": task_id, "caller": user_id})
    if current is None:
        raise TaskNotFound()
    return current


async def _change_in_one_statement(
    db: Database, user_id: str, task_id: int, values: Changes, completion: str | None, versions: list[int] | None
) -> list[Row]:
    """PostgreSQL, no tags, no assignee, no move, no dated field, no completion: the UPDATE and its
    events in one statement (events.with_event), as cheap as the UPDATE alone was."""
    statement = update_statement(tuple(sorted(values)), completion, _count(versions))
    params = _update_params(user_id, task_id, values, versions)
    async with db.connect(writer=user_id) as connection:
        written = await connection.fetch_all(events.with_event(statement, events.TASK_UPDATED, task_json), params)
        task = next((row for row in written if row["id"] == task_id), None)
        if task is None:
            await access.explain_task_miss(connection, user_id, task_id, access.EDIT_TASKS)
    return [task, *(row for row in written if row["id"] != task_id)]


def _update_params(user_id: str, task_id: int, values: Changes, versions: list[int] | None) -> dict[str, Any]:
    params: dict[str, Any] = {"task_id": task_id, "caller": user_id, "now": utc_now(), **numbered("if_match", versions)}
    params.update({f"new_{field}": value for field, value in values.items()})
    return params


async def _complete_unless_recurring(
    db: Database, user_id: str, task_id: int, values: Changes, completion: str, versions: list[int] | None
) -> list[Row]:
    """The completion as one statement that writes nothing when a task it would complete recurs
    (or when it matches no row: the caller's transaction then tells 404 / 403 / 412), with an event
    per task it completed (none when it writes nothing)."""
    statement = update_statement(tuple(sorted(values)), completion, _count(versions), unless_recurring=True)
    params = _update_params(user_id, task_id, values, versions)
    if db.dialect == "postgresql":  # the UPDATE and an event per task it completed: one statement
        async with db.connect(writer=user_id) as connection:
            written = await connection.fetch_all(events.with_event(statement, events.TASK_UPDATED, task_json), params)
    else:
        async with db.transaction(writer=user_id) as connection:
            written = await connection.fetch_all(statement, params)
            await events.record(
                connection, user_id, [events.to_members(row["list_id"], events.TASK_UPDATED, row["id"], public(row)) for row in written]
            )
    task = next((row for row in written if row["id"] == task_id), None)
    return [task, *(row for row in written if row["id"] != task_id)] if task is not None else []


async def _continue_series(
    connection: Connection, user_id: str, task: Row, others: list[Row], now: datetime
) -> tuple[Row, list[Row], list[Row]]:
    """Every recurring task this write completed (the task, or its subtasks in a cascade) gets its
    next occurrence: (task, others, the occurrences created)."""
    created = []
    written = [task, *others]
    for index, row in enumerate(written):
        if row["completed"] and row["completed_at"] == now:  # completed by this write, not before
            written[index], following = await continue_series(connection, user_id, row)
            if following is not None:
                created.append(following)
    return written[0], written[1:], created


async def continue_series(connection: Connection, user_id: str, task: Row) -> tuple[Row, Row | None]:
    """After `user_id` completed `task`: if it recurs and has no next occurrence yet, create it right
    after it (same list, parent, creator and assignee) and link it, in the caller's transaction. The
    caller records the events (task.updated for `task`, task.created for the occurrence)."""
    following = await scheduling.next_occurrence(connection, task)
    if following is None:
        return task, None
    kind, scope = tree.sibling_scope(user_id, 0, task["list_id"], task["parent_id"])
    position = await tree.position_at(connection, kind, scope, tree.Spot(after_id=task["id"]))
    place = {"list_id": task["list_id"], "parent_id": task["parent_id"], "position": position, "assignee_id": task["assignee_id"]}
    created = await insert_row(connection, user_id, task["user_id"], {**following, **place})
    await connection.execute(LINK_NEXT_OCCURRENCE, {"task_id": task["id"], "next_id": created["id"]})
    return {**task, "next_occurrence_id": created["id"]}, created


async def delete_task(db: Database, user_id: str, task_id: int, if_match: Precondition) -> list[int]:
    """Delete the task and its subtree (all levels) in one statement; the ids deleted."""
    if not 1 <= task_id <= MAX_ID:
        raise TaskNotFound()
    versions = if_match.versions(task_id)
    params = {"task_id": task_id, "caller": user_id, **numbered("if_match", versions)}
    with tree.references_checked(_subtask_added):
        if db.dialect == "postgresql":  # the deletes and their events in one statement (events.with_event)
            async with db.connect(writer=user_id) as connection:
                statement = events.with_event(delete_statement(_count(versions)), events.TASK_DELETED, None)
                deleted = await connection.fetch_all(statement, params)
                if not deleted:
                    await access.explain_task_miss(connection, user_id, task_id, access.EDIT_TASKS)
            return [row["id"] for row in deleted]
        async with db.transaction(writer=user_id) as connection:  # task_tag rows go with them (ON DELETE CASCADE)
            deleted = await connection.fetch_all(delete_statement(_count(versions)), params)
            if not deleted:
                await access.explain_task_miss(connection, user_id, task_id, access.EDIT_TASKS)
            await events.record(connection, user_id, deletions(deleted))
    return [row["id"] for row in deleted]


async def complete_task(db: Database, user_id: str, task_id: int) -> dict[str, Any]:
    """Set `completed: true`; a task that is already completed is returned unchanged (no new
    version, `updated_at` and `completed_at` kept)."""
    task = await get_task(db, user_id, task_id)
    if task["completed"]:
        async with db.connect() as connection:
            await access.require_task(connection, user_id, task_id, access.EDIT_TASKS)
        return task
    return await modify_task(db, user_id, task_id, {"completed": True}, Precondition(None))


def deletions(deleted: list[Row]) -> list[events.Change]:
    """A task.deleted for each deleted task (rows with id and list_id), for its list's members."""
    return [events.to_members(row["list_id"], events.TASK_DELETED, row["id"], None) for row in deleted]


def check_ids(list_id: int | None, parent_id: int | None) -> None:
    """Ids too large for the database name nothing (and must not reach it: an overflow is an error there)."""
    if list_id is not None and not 1 <= list_id <= MAX_ID:
        raise ListNotFound()
    if parent_id is not None and not 1 <= parent_id <= MAX_ID:
        raise TaskNotFound()


async def check_scope(connection: Connection, user_id: str, list_id: int | None, parent_id: int | None) -> None:
    """After an empty answer: was the list (or parent task) asked for one the caller cannot see?"""
    if list_id is not None:
        await access.require(connection, user_id, list_id, access.SEE)
    if parent_id is not None and await find(connection, user_id, parent_id) is None:
        raise TaskNotFound("Task not found (the parent_id of this listing)")


@functools.lru_cache(maxsize=4)
def _delete_completed_statement(in_one_list: bool) -> sa.Delete:
    """Completed tasks with their whole subtrees (open subtasks too), of the lists where the caller
    may delete tasks, in one statement."""
    t = task_table.c
    roots = [access.may(access.EDIT_TASKS, t.list_id), t.completed.is_(True)]
    if in_one_list:
        roots.append(t.list_id == sa.bindparam("list_id"))
    doomed = tree.locked_in_id_order(tree.subtree_of(sa.and_(*roots), "doomed"), "locked")
    return sa.delete(task_table).where(t.id.in_(sa.select(doomed.c.id))).returning(t.id, t.list_id)


async def delete_completed(db: Database, user_id: str, list_id: int | None = None) -> list[int]:
    """The ids deleted: every completed task (of one list) and everything below it, in the lists
    where the caller may delete tasks (with `list_id`: 404 if they cannot see it, 403 if a viewer)."""
    check_ids(list_id, None)
    params = {"caller": user_id, "list_id": list_id}
    with tree.references_checked(_subtask_added):
        async with db.transaction(writer=user_id) as connection:
            if list_id is not None:
                await access.require(connection, user_id, list_id, access.EDIT_TASKS)
            deleted = await connection.fetch_all(_delete_completed_statement(list_id is not None), params)
            await events.record(connection, user_id, deletions(deleted))
    return [row["id"] for row in deleted]


async def find(connection: Connection, user_id: str, task_id: int) -> dict[str, Any] | None:
    """The task, if the user sees it."""
    if not 1 <= task_id <= MAX_ID:
        return None
    return await connection.fetch_one(FIND_TASK, {"task_id": task_id, "caller": user_id})


def _completion(completed: Any) -> str | None:
    """What a change does to completed/completed_at: flip, set (true), clear (false), or nothing."""
    if completed is FLIP:
        return "flip"
    if completed is True:
        return "set"
    if completed is False:
        return "clear"
    return None


def _count(values: list[Any] | None) -> int | None:
    return None if values is None else len(values)


async def _insert_tags(connection: Connection, task: Any) -> None:
    """All of a task's tag rows in one multi-row INSERT: one round trip."""
    if task["tags"]:
        params = {"task_id": task["id"], "list_id": task["list_id"], **_tag_params(task["tags"])}
        await connection.execute(insert_tags_statement(len(task["tags"])), params)


def _tag_params(tags: list[str]) -> dict[str, str]:
    """The values of task_sql's tag rows: each tag and its key (the tag in lower case, for filters)."""
    params = {}
    for index, tag in enumerate(tags):
        params.update({f"tag_{index}": tag, f"tag_key_{index}": tag.lower()})
    return params
