"""Lists and manual order for seeded tasks, as the service would have made them: one default list
(`Inbox`) per user, and every task at the end of its siblings in the order the rows come (the order
they were created). Used by bench/run.py and bench/explain.py, which COPY rows straight in."""
from datetime import datetime
from typing import Any

from fractional_indexing import generate_key_between

LIST_COLUMNS = ("id", "user_id", "name", "color", "is_default", "position", "created_at", "updated_at", "version")


def place(rows: list[dict[str, Any]], now: datetime, first_list_id: int = 1) -> list[dict[str, Any]]:
    """Set list_id (a row without one: its user's default list), parent_id (None unless set) and
    position on every row; return the default lists made (rows of LIST_COLUMNS)."""
    defaults: dict[str, dict[str, Any]] = {}
    last: dict[tuple[int, int | None], str | None] = {}
    for row in rows:
        if row.get("list_id") is None:
            user = row["user_id"]
            if user not in defaults:
                defaults[user] = {
                    "id": first_list_id + len(defaults), "user_id": user, "name": "Inbox", "color": None,
                    "is_default": True, "position": generate_key_between(None, None),
                    "created_at": now, "updated_at": now, "version": 1,
                }
            row["list_id"] = defaults[user]["id"]
        row.setdefault("parent_id", None)
        siblings = (row["list_id"], row["parent_id"])
        row["position"] = last[siblings] = generate_key_between(last.get(siblings), None)
    return list(defaults.values())
