"""Moving a task (with its subtree) to another place: another spot among its siblings, another parent,
another list (§7, §8, §12). store.py's change runs it in its transaction; tree.py knows where a place is.

A move to another list needs the editor or owner role on both lists. Its subtree follows it, with the
tag rows (so the destination's readers find them) and the reminders (their recipient may change); an
assignee who may not work on the destination list's tasks loses the assignment. Each member of either
list sees the move as what it is for them: a task.updated when they see both lists, a task.deleted
when it left their sight, a task.created when it came into it.
"""
from dataclasses import dataclass, field
from typing import Any

import access
import events
import reminders
import tree
from db import Connection, Row
from errors import TaskNotFound
from task_sql import FIND_TASK, public, RELIST_SUBTREE, RELIST_TAGS

UNCHANGED: Any = ...  # the assignee is not part of the change


@dataclass
class Placement:
    """Where a move puts the task: the columns to write ({} when a PATCH names the place it is in)."""

    columns: dict[str, Any] = field(default_factory=dict)
    source: int = 0
    destination: int = 0

    @property
    def relisted(self) -> bool:
        return bool(self.columns) and self.destination != self.source


async def place(connection: Connection, user_id: str, task_id: int, move: tree.Move, assignee: Any = UNCHANGED) -> Placement:
    """The new list_id / parent_id / position of the task, checked: the caller may edit it and the
    destination, the parent is theirs to use, no cycle, not too deep. Takes the structure locks of
    both lists and locks the subtree (in id order) first, so concurrent moves and subtasks wait."""
    source = await connection.fetch_value(access.TASK_LIST, {"task_id": task_id}) or 0
    await tree.lock_lists(connection, [source] + ([move.list_id] if move.list_id is not None else []))
    await tree.lock_subtree(connection, task_id)
    current = await connection.fetch_one(FIND_TASK, {"task_id": task_id, "caller": user_id})
    if current is None:
        raise TaskNotFound()
    await access.require(connection, user_id, current["list_id"], access.EDIT_TASKS, missing=TaskNotFound())
    if current["list_id"] != source:  # it moved to another list a moment ago
        await tree.lock_lists(connection, [current["list_id"]])
    destination = await tree.destination_of_move(connection, user_id, current, move)
    placement = Placement(source=current["list_id"], destination=destination.list_id)
    if not move.explicit and (destination.list_id, destination.parent_id) == (current["list_id"], current["parent_id"]):
        return placement
    kind, scope = tree.sibling_scope(user_id, task_id, destination.list_id, destination.parent_id)
    position = await tree.position_at(connection, kind, scope, move.spot)
    placement.columns = {"list_id": destination.list_id, "parent_id": destination.parent_id, "position": position}
    if assignee is not UNCHANGED:
        await access.check_assignee(connection, destination.list_id, assignee)
    elif placement.relisted and current["assignee_id"] is not None:
        if not await connection.fetch_value(access.ASSIGNEE_ALLOWED, {"list_id": destination.list_id, "user_id": current["assignee_id"]}):
            placement.columns["assignee_id"] = None
    return placement


async def relist_subtree(connection: Connection, task: Row) -> list[Row]:
    """After the task moved to another list: its subtasks (all levels) follow it there, with its and
    their tag rows and reminders. The subtasks written."""
    values = {"task_id": task["id"], "new_list_id": task["list_id"], "now": task["updated_at"]}
    followed = await connection.fetch_all(RELIST_SUBTREE, values)
    await connection.execute(RELIST_TAGS, values)
    await reminders.readdress_subtree(connection, task["id"])
    return followed


async def record(connection: Connection, actor: str, placement: Placement, written: list[Row], created: list[Row]) -> None:
    """The events of a move to another list, member by member (see the module's docstring)."""
    before = await access.members(connection, placement.source)
    after = await access.members(connection, placement.destination)
    changes = []
    for row in written:
        for user in sorted(before.keys() | after.keys()):
            if user not in after:
                changes.append(events.to_user(user, events.TASK_DELETED, row["id"], None))
            else:
                seen = events.TASK_UPDATED if user in before else events.TASK_CREATED
                changes.append(events.to_user(user, seen, row["id"], public(row)))
    changes += [events.to_members(row["list_id"], events.TASK_CREATED, row["id"], public(row)) for row in created]
    await events.record(connection, actor, changes)
