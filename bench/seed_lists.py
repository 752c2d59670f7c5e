"""Lists and manual order for seeded tasks, as the service would have made them: one default list
(`Inbox`) per user, and every task at the end of its siblings in the order the rows come (the order
they were created). Every list has its owner as a member (`list_member`, role `owner`), who holds
the list's place in their own order of lists. Used by bench/run.py, bench/explain.py and
bench/scale_seed.py, which COPY rows straight in."""
from datetime import datetime
from typing import Any

from fractional_indexing import generate_key_between

LIST_COLUMNS = ("id", "owner_id", "name", "color", "is_default", "created_at", "updated_at", "version")
MEMBER_COLUMNS = ("list_id", "user_id", "role", "position", "joined_at")


def default_list(user: str, list_id: int, now: datetime) -> dict[str, Any]:
    """A user's Inbox, first in their order: `user_id` is its owner, `position` the owner's."""
    return {
        "id": list_id, "user_id": user, "name": "Inbox", "color": None, "is_default": True,
        "position": generate_key_between(None, None), "created_at": now, "updated_at": now, "version": 1,
    }


def place(rows: list[dict[str, Any]], now: datetime, first_list_id: int = 1) -> list[dict[str, Any]]:
    """Set list_id (a row without one: its user's default list), parent_id (None unless set) and
    position on every row; return the default lists made (as default_list makes them)."""
    defaults: dict[str, dict[str, Any]] = {}
    last: dict[tuple[int, int | None], str | None] = {}
    for row in rows:
        if row.get("list_id") is None:
            user = row["user_id"]
            if user not in defaults:
                defaults[user] = default_list(user, first_list_id + len(defaults), now)
            row["list_id"] = defaults[user]["id"]
        row.setdefault("parent_id", None)
        siblings = (row["list_id"], row["parent_id"])
        row["position"] = last[siblings] = generate_key_between(last.get(siblings), None)
    return list(defaults.values())


def as_tables(lists: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of `list` (LIST_COLUMNS) and of `list_member` (MEMBER_COLUMNS: the owner, with the
    list's position) for lists made as default_list makes them."""
    list_rows = [{**made, "owner_id": made["user_id"]} for made in lists]
    members = [
        {"list_id": made["id"], "user_id": made["user_id"], "role": "owner", "position": made["position"],
         "joined_at": made["created_at"]}
        for made in lists
    ]
    return list_rows, members
