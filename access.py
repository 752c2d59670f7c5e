"""Who may see or do what on which list (contract §12): decided here, and only here.

A user sees everything in the lists they are a member of (their own and those shared with them);
what they may do there is their role's:

    viewer   see the list, its tasks and members; leave
    editor   that, and create, change, complete, move, delete and assign tasks
    owner    that, and rename, recolour, delete the list; invite, remove, change roles; transfer

Every path asks here, in the statement or the transaction of its read or write, never beforehand:

- reads start from `lists_of_caller(SEE)`: `task.list_id IN (the caller's lists)`, or name the lists
  `lists_of` gave, in the same snapshot or checked by `sees_exactly` in their own;
- single-statement writes put `lists_of_caller(action)` in their own WHERE, so the role is checked
  by the write itself, and a write that matched nothing is explained by `explain_task_miss`
  (404 for a non-member, 403 naming the role needed for a member, else the If-Match 412);
- writes in a transaction check with `require` / `require_task` first;
- feeds fan out to `audience(list)`: everyone who may see the list gets its changes.

Membership changes (join, leave, removal, role, transfer, deleting a shared list) run in
`membership_change` transactions: on PostgreSQL such a transaction first waits for every write in
flight and holds new writes (and other membership changes) back until it commits (`LOCK TABLE event
IN SHARE ROW EXCLUSIVE MODE`; every write records events, so it holds that table's ROW EXCLUSIVE
lock from before it reads anything until it commits: db.py's BEGIN takes it for transactions, a
single statement takes it before its snapshot). Each write so either committed before the change
read anything (its changes are in the change's snapshot) or starts after it committed (and sees the
new members: a removed member's write is refused, a new member gets its event). SQLite runs one
writer at a time, which gives the same. Membership changes are rare (a person clicks); the pause is
the few milliseconds they take.
"""
from dataclasses import dataclass
from typing import AsyncContextManager
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from db import Connection, Database
from errors import ApiError, Forbidden, ListNotFound, PreconditionFailed, TaskNotFound, ValidationFailed
from models import MAX_ID, ListMember, Task

member_table: sa.Table = ListMember.__table__
task_table: sa.Table = Task.__table__

OWNER, EDITOR, VIEWER = "owner", "editor", "viewer"


@dataclass(frozen=True)
class Action:
    """Something done to a list or its tasks, the roles that may do it, and how a refusal says it."""

    roles: tuple[str, ...]
    doing: str  # "change tasks in this list": completes "To <doing> you need ..."

    def refusal(self, role: str) -> Forbidden:
        needed = " or ".join(self.roles)
        article = "an" if role[0] in "aeiou" else "a"
        return Forbidden(f"To {self.doing} you need the {needed} role; you are {article} {role} of this list.")


SEE = Action((OWNER, EDITOR, VIEWER), "see this list")
EDIT_TASKS = Action((OWNER, EDITOR), "create, change, complete, move, delete or assign tasks in this list")
RENAME_LIST = Action((OWNER,), "rename or recolour this list")
DELETE_LIST = Action((OWNER,), "delete this list")
INVITE = Action((OWNER,), "invite people to this list or see its invitations")
MANAGE_MEMBERS = Action((OWNER,), "change or remove other members of this list")
TRANSFER = Action((OWNER,), "transfer this list")
# Who may be a task's assignee (the roles that may work on its tasks).
ASSIGNABLE = EDIT_TASKS.roles


def _roles(action: Action) -> list[sa.ColumnElement]:
    # Literals, not bind parameters: one statement per action, compiled once.
    return [sa.literal_column(f"'{role}'") for role in action.roles]


def lists_of_caller(action: Action = SEE, caller: str = "caller") -> sa.Select:
    """The ids of the lists where the user bound to `caller` may do `action`: the scope every read and
    write of tasks starts from (`task.list_id IN (...)`)."""
    m = member_table.c
    statement = sa.select(m.list_id).where(m.user_id == sa.bindparam(caller))
    if action is not SEE:
        statement = statement.where(m.role.in_(_roles(action)))
    return statement


def may(action: Action, list_id: sa.ColumnElement, caller: str = "caller") -> sa.ColumnElement[bool]:
    """`list_id` (a column or a bound value) is a list where the caller may do `action`."""
    return list_id.in_(lists_of_caller(action, caller))


def assignable(list_id: sa.ColumnElement, user_id: sa.ColumnElement) -> sa.ColumnElement[bool]:
    """`user_id` may be assigned tasks of the list: an owner or editor of it."""
    m = member_table.c
    return sa.exists().where(m.list_id == list_id, m.user_id == user_id, m.role.in_(_roles(EDIT_TASKS)))


def audience(list_id: sa.ColumnElement) -> sa.Select:
    """Everyone who sees the list: whose feeds get its changes (events.py)."""
    return sa.select(member_table.c.user_id).where(member_table.c.list_id == list_id)


ROLE = sa.select(member_table.c.role).where(
    member_table.c.list_id == sa.bindparam("list_id"), member_table.c.user_id == sa.bindparam("user_id")
)
MEMBERS = (
    sa.select(member_table.c.user_id, member_table.c.role)
    .where(member_table.c.list_id == sa.bindparam("list_id"))
    .order_by(member_table.c.user_id)
)
ASSIGNEE_ALLOWED = sa.select(assignable(sa.bindparam("list_id", type_=sa.Integer), sa.bindparam("user_id", type_=sa.String)))
TASK_LIST = sa.select(task_table.c.list_id).where(task_table.c.id == sa.bindparam("task_id"))


CALLERS_LISTS = lists_of_caller().order_by(member_table.c.list_id)


async def lists_of(connection: Connection, user_id: str) -> list[int]:
    """The ids of the lists the user sees, in order."""
    return [row["list_id"] for row in await connection.fetch_all(CALLERS_LISTS, {"caller": user_id})]


def sees_exactly(named: list[sa.BindParameter]) -> sa.ColumnElement[bool]:
    """PostgreSQL: the lists the caller sees are exactly `named` (values, in `lists_of`'s order), in
    the snapshot of the statement that carries it. For a read of lists `lists_of` gave earlier: it
    reads nothing once the caller left or joined a list since (queries.py then looks them up again)."""
    visible = lists_of_caller(SEE).subquery("visible")
    seen_now = sa.select(sa.func.array_agg(postgresql.aggregate_order_by(visible.c.list_id, visible.c.list_id))).scalar_subquery()
    return seen_now == sa.cast(postgresql.array(named), postgresql.ARRAY(sa.Integer))


async def role_of(connection: Connection, user_id: str, list_id: int) -> str | None:
    if not 1 <= list_id <= MAX_ID:
        return None
    return await connection.fetch_value(ROLE, {"list_id": list_id, "user_id": user_id})


async def members(connection: Connection, list_id: int) -> dict[str, str]:
    """The list's members and their roles."""
    return {row["user_id"]: row["role"] for row in await connection.fetch_all(MEMBERS, {"list_id": list_id})}


async def require(
    connection: Connection, caller: str, list_id: int, action: Action, missing: ApiError | None = None
) -> str:
    """The caller's role on the list, if it allows `action`; else `missing` (default 404
    LIST_NOT_FOUND) for a non-member, who learns nothing, and 403 naming the role for a member."""
    role = await role_of(connection, caller, list_id)
    if role is None:
        raise missing or ListNotFound()
    if role not in action.roles:
        raise action.refusal(role)
    return role


async def require_body_list(connection: Connection, caller: str, list_id: int, field: str = "list_id") -> str:
    """A list named in a body, to put tasks in: one where the caller may edit tasks, or a 422 naming it."""
    role = await role_of(connection, caller, list_id)
    if role is None:
        raise ValidationFailed([{"field": field, "message": f"list {list_id} is not one of your lists"}])
    if role not in EDIT_TASKS.roles:
        raise ValidationFailed([{
            "field": field,
            "message": f"you are a {role} of list {list_id}: putting tasks there needs the editor or owner role",
        }])
    return role


async def require_task(connection: Connection, caller: str, task_id: int, action: Action) -> int:
    """The list of a task the caller may do `action` on; 404 TASK_NOT_FOUND when they cannot see it."""
    list_id = await connection.fetch_value(TASK_LIST, {"task_id": task_id}) if 1 <= task_id <= MAX_ID else None
    if list_id is None:
        raise TaskNotFound()
    await require(connection, caller, list_id, action, missing=TaskNotFound())
    return list_id


async def explain_task_miss(connection: Connection, caller: str, task_id: int, action: Action) -> None:
    """A conditional write of a task matched no row: the caller cannot see it (404), their role does
    not allow it (403), or If-Match is stale (412)."""
    await require_task(connection, caller, task_id, action)
    raise PreconditionFailed()


async def check_assignee(connection: Connection, list_id: int, assignee_id: str | None) -> None:
    """`assignee_id` in a body: null, or an owner or editor of the task's list (else 422 naming it)."""
    if assignee_id is None:
        return
    if not await connection.fetch_value(ASSIGNEE_ALLOWED, {"list_id": list_id, "user_id": assignee_id}):
        raise ValidationFailed([{
            "field": "assignee_id",
            "message": f"{assignee_id!r} is not an owner or editor of this task's list; assign one of them, or null",
        }])


def membership_change(db: Database, caller: str) -> AsyncContextManager[Connection]:
    """The transaction of a change of a list's members (see the module's docstring)."""
    return db.transaction(writer=caller, stopping_writes=True)
