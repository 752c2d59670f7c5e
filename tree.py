"""Subtasks and manual order: where a new or moved task (or list) goes, subtree walks, the tree listing.

Positions are fractional-indexing keys: strings that sort between their neighbours', compared
byte-wise (`COLLATE "C"` on PostgreSQL). Siblings (same list, same parent) in manual order are
sorted by position, then id. A move writes one key between the two neighbours at the destination,
never renumbering the others; two moves into one gap at the same moment both land there, in id order.

Trees are at most MAX_DEPTH levels deep, so every recursive walk here is bounded.
"""
import functools
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import psycopg

import sqlalchemy as sa
from fractional_indexing import generate_key_between
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

import access
from db import Connection, Row
from errors import ApiError, Conflict, ValidationFailed
from models import MAX_ID, POSITION_LENGTH, Task

task_table: sa.Table = Task.__table__
member_table: sa.Table = access.member_table
MAX_DEPTH = 4
# Between the parts of a tree path: below every character of a position (0-9A-Za-z), so a position
# sorts before a longer one it prefixes, exactly as the positions themselves do.
SEPARATOR = sa.literal_column("' '", sa.String)
ID_WIDTH = 10  # ids are below 2**31: ten digits, zero-padded so they compare as numbers
# Namespace of the advisory locks that order structural changes (any fixed int4).
STRUCTURE_LOCK_NAMESPACE = 7_270_737

SiblingKind = Literal["list", "top", "child"]


# ----------------------------------------------------------------------------- SQL helpers


class byte_order(FunctionElement):  # noqa: N801 (a SQL function, spelt like one)
    """The expression, compared byte-wise: `COLLATE "C"` on PostgreSQL; SQLite's BINARY already is."""

    type = sa.String()
    inherit_cache = True
    name = "byte_order"


@compiles(byte_order)
def _byte_order(element: byte_order, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(byte_order, "postgresql")
def _byte_order_postgresql(element: byte_order, compiler: Any, **kw: Any) -> str:
    return f'({compiler.process(element.clauses, **kw)}) COLLATE "C"'


class padded_id(FunctionElement):  # noqa: N801
    """An integer as ID_WIDTH zero-padded digits, so ids compare as text the way they do as numbers."""

    type = sa.String()
    inherit_cache = True
    name = "padded_id"


@compiles(padded_id, "postgresql")
def _padded_id_postgresql(element: padded_id, compiler: Any, **kw: Any) -> str:
    return f"lpad(CAST({compiler.process(element.clauses, **kw)} AS TEXT), {ID_WIDTH}, '0')"


@compiles(padded_id, "sqlite")
def _padded_id_sqlite(element: padded_id, compiler: Any, **kw: Any) -> str:
    return f"printf('%0{ID_WIDTH}d', {compiler.process(element.clauses, **kw)})"


def _path_part(position: sa.ColumnElement, entity_id: sa.ColumnElement) -> sa.ColumnElement:
    return position + SEPARATOR + padded_id(entity_id)


def subtree(anchor: sa.Select, name: str = "subtree") -> sa.CTE:
    """The anchor's tasks (columns `id`, `depth` = 1) and all their descendants, by depth below it."""
    cte = anchor.cte(name, recursive=True)
    child = task_table.alias(f"{name}_child")
    return cte.union_all(
        sa.select(child.c.id, cte.c.depth + 1).where(child.c.parent_id == cte.c.id, cte.c.depth < MAX_DEPTH)
    )


def subtree_of(condition: sa.ColumnElement[bool], name: str = "subtree") -> sa.CTE:
    """The tasks meeting `condition` and all their descendants."""
    anchor = sa.select(task_table.c.id, sa.literal_column("1", sa.Integer).label("depth")).where(condition)
    return subtree(anchor, name)


def locked_in_id_order(tasks: sa.CTE, name: str) -> sa.CTE:
    """The ids of `tasks`, their rows locked in id order (PostgreSQL; SQLite's single writer needs no
    row locks). Every write of several tasks of a subtree (a cascade completion, a delete, a move with
    its subtree) locks them in this one order before it writes any, so two of them on the same
    subtree wait for each other instead of deadlocking: each would otherwise lock rows in the order
    its plan meets them."""
    return (
        sa.select(task_table.c.id)
        .where(task_table.c.id.in_(sa.select(tasks.c.id)))
        .order_by(task_table.c.id)
        .with_for_update()
        .cte(name)
    )


@functools.lru_cache(maxsize=8)
def tree_order(in_one_list: bool, first_roots: bool = False) -> sa.CTE:
    """Every top-level task of the caller's lists (of one list: `list_id`) and its descendants, with
    `path`: the positions and ids of its list (in the caller's own order of their lists) and its
    ancestors down to itself. Sorting by `path` gives the manual order as a tree: lists in their
    order, each task followed by its subtasks depth first, siblings by position then id.

    `first_roots`: only the first `roots` top-level tasks in that order, and their descendants. The
    first n rows of the whole tree are among them (each task comes before its subtasks), so a page
    reads its own part of the tree instead of all of it (a list of 11,000 tasks: 76 -> 5 ms)."""
    t, member = task_table, member_table
    top_path = byte_order(_path_part(member.c.position, member.c.list_id) + SEPARATOR + _path_part(t.c.position, t.c.id))
    anchor = (
        sa.select(t.c.id, top_path.label("path"), sa.literal_column("1", sa.Integer).label("depth"))
        .select_from(t.join(member, member.c.list_id == t.c.list_id))
        .where(member.c.user_id == sa.bindparam("caller"), t.c.parent_id.is_(None))
    )
    if in_one_list:
        anchor = anchor.where(member.c.list_id == sa.bindparam("list_id"))
    if first_roots:
        # In one list, the order of its top-level index (ix_task_top_level_position); the same as by path.
        order = [t.c.position, t.c.id] if in_one_list else [top_path]
        anchor = sa.select(anchor.order_by(*order).limit(sa.bindparam("roots")).subquery("roots"))
    cte = anchor.cte("tree", recursive=True)
    child = t.alias("tree_child")
    path = byte_order(cte.c.path + SEPARATOR + _path_part(child.c.position, child.c.id))
    return cte.union_all(
        sa.select(child.c.id, path, cte.c.depth + 1).where(child.c.parent_id == cte.c.id, cte.c.depth < MAX_DEPTH)
    )


LOCK_STRUCTURE = sa.select(
    sa.func.pg_advisory_xact_lock(STRUCTURE_LOCK_NAMESPACE, sa.func.hashtext(sa.bindparam("lock_name", type_=sa.Text)))
)


async def _lock(connection: Connection, names: list[str]) -> None:
    if connection.dialect == "postgresql":
        for name in sorted(set(names)):  # always in one order: two of them never wait on each other
            await connection.fetch_value(LOCK_STRUCTURE, {"lock_name": name})


async def lock_lists(connection: Connection, list_ids: list[int]) -> None:
    """Inside a transaction: one structural change (a move, a subtask) of these lists' trees at a
    time, so two concurrent ones cannot make a cycle, nest too deep, or leave a subtask behind its
    parent. SQLite's single writer (BEGIN IMMEDIATE) already orders them."""
    await _lock(connection, [f"list:{list_id}" for list_id in list_ids])


async def lock_lists_of(connection: Connection, user_id: str) -> None:
    """Inside a transaction: one change of a user's own order of lists (and of how many they own)
    at a time."""
    await _lock(connection, [f"user:{user_id}"])


def _is_foreign_key_violation(error: BaseException) -> bool:
    if isinstance(error, psycopg.errors.ForeignKeyViolation):
        return True
    return isinstance(error, sqlite3.IntegrityError) and "FOREIGN KEY" in str(error)


@contextmanager
def references_checked(error: Callable[[], ApiError]) -> Iterator[None]:
    """A list or parent checked a moment ago was deleted by a concurrent request before this write
    committed (or a subtask was added under a task being deleted): the database refuses the
    reference; the client gets `error()` and a clean rollback, not a 500."""
    try:
        yield
    except Exception as exc:
        if _is_foreign_key_violation(exc):
            raise error() from None
        raise


# ----------------------------------------------------------------------------- positions among siblings


@dataclass(frozen=True)
class Spot:
    """Where among its siblings: right after or right before one of them, or at the top or bottom."""

    after_id: int | None = None
    before_id: int | None = None
    to: Literal["top", "bottom"] = "bottom"


BOTTOM = Spot()


def _sibling_table(kind: SiblingKind) -> sa.Table:
    return member_table if kind == "list" else task_table


def _sibling_id(kind: SiblingKind) -> sa.ColumnElement:
    return member_table.c.list_id if kind == "list" else task_table.c.id


def _sibling_conditions(kind: SiblingKind) -> list[sa.ColumnElement[bool]]:
    """Siblings of the entity `moving` (0 for a new one): the lists of the caller (in their own order:
    their membership rows), or the tasks of list `scope_list` at the top level or under `scope_parent`.

    Tasks are found by their list alone: every caller has checked that `scope_list` is one the caller
    may change. Another condition here would let PostgreSQL, with statistics older than the list's
    growth, intersect two indexes instead of reading one entry of the list's own position index."""
    if kind == "list":
        c = member_table.c
        return [c.user_id == sa.bindparam("caller"), c.list_id != sa.bindparam("moving")]
    c = task_table.c
    parent = c.parent_id.is_(None) if kind == "top" else c.parent_id == sa.bindparam("scope_parent")
    return [c.list_id == sa.bindparam("scope_list"), parent, c.id != sa.bindparam("moving")]


@functools.lru_cache(maxsize=32)
def _neighbour_statement(kind: SiblingKind, what: str) -> sa.Select:
    c = _sibling_table(kind).c
    conditions = _sibling_conditions(kind)
    pos = sa.bindparam("pos", type_=sa.String)
    if what == "reference":
        return sa.select(c.position).where(*conditions, _sibling_id(kind) == sa.bindparam("reference"))
    # ORDER BY ... LIMIT 1, not min()/max(): the planner then walks the position index from one end
    # whatever its row estimates say (with max() and stale statistics it read every sibling: 2.7 ms
    # per create in a list of 7,000 tasks).
    if what == "next":  # the first position after `pos` (ties of `pos` itself stay before the new key)
        return sa.select(c.position).where(*conditions, c.position > pos).order_by(c.position).limit(1)
    if what == "previous":
        return sa.select(c.position).where(*conditions, c.position < pos).order_by(c.position.desc()).limit(1)
    if what == "first":
        return sa.select(c.position).where(*conditions).order_by(c.position).limit(1)
    return sa.select(c.position).where(*conditions).order_by(c.position.desc()).limit(1)  # last


async def position_at(connection: Connection, kind: SiblingKind, scope: dict[str, Any], spot: Spot) -> str:
    """A new key for `spot` among the siblings `scope` names (caller, moving, scope_list, scope_parent)."""
    if spot.after_id is not None:
        low = await _reference(connection, kind, scope, spot.after_id, "after_id")
        high = await connection.fetch_value(_neighbour_statement(kind, "next"), {**scope, "pos": low})
    elif spot.before_id is not None:
        high = await _reference(connection, kind, scope, spot.before_id, "before_id")
        low = await connection.fetch_value(_neighbour_statement(kind, "previous"), {**scope, "pos": high})
    elif spot.to == "top":
        low, high = None, await connection.fetch_value(_neighbour_statement(kind, "first"), scope)
    else:
        low, high = await connection.fetch_value(_neighbour_statement(kind, "last"), scope), None
    key = generate_key_between(low, high)
    if len(key) > POSITION_LENGTH:
        raise Conflict(
            "This exact spot has been used for thousands of moves and has no room left between its two "
            "neighbours. Move one of the neighbours elsewhere and back, then retry."
        )
    return key


async def _reference(connection: Connection, kind: SiblingKind, scope: dict[str, Any], reference: int, field: str) -> str:
    what = "list" if kind == "list" else "task"
    if reference == scope["moving"]:
        raise ValidationFailed([{"field": field, "message": f"names the {what} being moved; name one of its neighbours"}])
    position = None
    if 1 <= reference <= MAX_ID:
        position = await connection.fetch_value(_neighbour_statement(kind, "reference"), {**scope, "reference": reference})
    if position is None:
        where = "one of your lists" if kind == "list" else "a task at the destination (same list and same parent)"
        raise ValidationFailed([{"field": field, "message": f"{what} {reference} is not {where}"}])
    return position


def sibling_scope(user_id: str, moving: int, list_id: int | None = None, parent_id: int | None = None) -> tuple[SiblingKind, dict[str, Any]]:
    """The kind and bind values of a task's sibling group (a list's, when list_id is None)."""
    scope: dict[str, Any] = {"caller": user_id, "moving": moving}
    if list_id is None:
        return "list", scope
    scope["scope_list"] = list_id
    if parent_id is None:
        return "top", scope
    scope["scope_parent"] = parent_id
    return "child", scope


# ----------------------------------------------------------------------------- destinations


_up = (
    sa.select(task_table.c.id, task_table.c.parent_id, task_table.c.list_id, sa.literal_column("1", sa.Integer).label("depth"))
    .where(task_table.c.id == sa.bindparam("start"), access.may(access.SEE, task_table.c.list_id))
    .cte("ancestry", recursive=True)
)
_ancestor = task_table.alias("ancestor")
_up = _up.union_all(
    sa.select(_ancestor.c.id, _ancestor.c.parent_id, _ancestor.c.list_id, _up.c.depth + 1).where(
        _ancestor.c.id == _up.c.parent_id, _up.c.depth <= MAX_DEPTH
    )
)
# A task the caller sees and its ancestors (in its list), itself first: its depth is the number of rows.
ANCESTRY = sa.select(_up.c.id, _up.c.list_id).order_by(_up.c.depth)

_below = subtree_of(task_table.c.id == sa.bindparam("task_id"))
# Levels in a task's subtree, itself included (1 for a task without subtasks).
SUBTREE_HEIGHT = sa.select(sa.func.max(_below.c.depth))
_locked_below = locked_in_id_order(_below, "locked")
LOCK_SUBTREE = sa.select(sa.func.count()).select_from(_locked_below)


async def lock_subtree(connection: Connection, task_id: int) -> None:
    """Inside a transaction: the task and its subtree locked in id order (see locked_in_id_order),
    before a move writes them."""
    await connection.fetch_value(LOCK_SUBTREE, {"task_id": task_id})


@dataclass(frozen=True)
class Destination:
    list_id: int
    parent_id: int | None


async def parent_chain(connection: Connection, user_id: str, parent_id: int) -> list[Row]:
    """The parent and its ancestors (parent first), in a list where the caller may put tasks, or a
    422 naming parent_id."""
    chain = await connection.fetch_all(ANCESTRY, {"start": parent_id, "caller": user_id}) if 1 <= parent_id <= MAX_ID else []
    if not chain:
        raise ValidationFailed([{"field": "parent_id", "message": f"task {parent_id} is not one of your tasks"}])
    await access.require_body_list(connection, user_id, chain[0]["list_id"], field="parent_id")
    return chain


def _too_deep(levels: int) -> ValidationFailed:
    return ValidationFailed([{
        "field": "parent_id",
        "message": f"tasks nest at most {MAX_DEPTH} levels deep (a task, its subtask and two more below); "
        f"this would make {levels}",
    }])


async def destination_of_new_task(
    connection: Connection, user_id: str, list_id: int | None, parent_id: int | None
) -> Destination:
    """Where a new task goes, checked: the caller's list and parent, not too deep. `list_id` None
    (no parent either) is the caller's default list, which the caller resolves."""
    if parent_id is None:
        assert list_id is not None
        return Destination(list_id, None)
    chain = await parent_chain(connection, user_id, parent_id)
    if len(chain) + 1 > MAX_DEPTH:
        raise _too_deep(len(chain) + 1)
    return Destination(_parent_list(chain, list_id), parent_id)


def _parent_list(chain: list[Row], list_id: int | None) -> int:
    parent_list = chain[0]["list_id"]
    if list_id is not None and list_id != parent_list:
        raise ValidationFailed([{
            "field": "list_id",
            "message": f"a subtask is in its parent's list ({parent_list}); leave list_id out or send that one",
        }])
    return parent_list


@dataclass(frozen=True)
class Move:
    """A requested move. `parent_given` tells `parent_id: null` (top level) from no parent_id at all."""

    list_id: int | None = None
    parent_id: int | None = None
    parent_given: bool = False
    spot: Spot = BOTTOM
    # False for list_id / parent_id in PATCH and PUT: the task moves (to the end) only when that is
    # another place, so a form that sends them back unchanged moves nothing.
    explicit: bool = True


async def destination_of_move(connection: Connection, user_id: str, task: Row, move: Move) -> Destination:
    """Where the task goes, checked: the caller's list and parent, not under itself, not too deep."""
    if move.parent_given and move.parent_id is not None:
        chain = await parent_chain(connection, user_id, move.parent_id)
        if any(row["id"] == task["id"] for row in chain):
            raise ValidationFailed([{
                "field": "parent_id", "message": "a task cannot move under itself or one of its own subtasks",
            }])
        height = await connection.fetch_value(SUBTREE_HEIGHT, {"task_id": task["id"]}) or 1
        if len(chain) + height > MAX_DEPTH:
            raise _too_deep(len(chain) + height)
        return Destination(_parent_list(chain, move.list_id), move.parent_id)
    list_id = task["list_id"] if move.list_id is None else move.list_id
    if list_id != task["list_id"]:
        await access.require_body_list(connection, user_id, list_id)
    if move.parent_given or list_id != task["list_id"]:
        return Destination(list_id, None)  # `parent_id: null`, or another list without a parent: top level
    return Destination(list_id, task["parent_id"])
