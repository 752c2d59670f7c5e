"""ETags and If-Match: `"<id>.<version>"` for a task; for a list, its version and everything else in
its representation that changes without it (its counts, and per member: their role and position)."""
from typing import Any


def task_etag(task: dict[str, Any]) -> str:
    return f'"{task["id"]}.{task["version"]}"'


def list_etag(row: dict[str, Any]) -> str:
    counts = f'{row["task_count"]}.{row["completed_count"]}.{row["member_count"]}'
    return f'"{row["id"]}.{row["version"]}.{counts}.{row["role"]}.{row["position"]}"'


def matches_if_none_match(header: str | None, etag: str) -> bool:
    """If-None-Match names this ETag (or `*`): the client's copy is current, answer 304."""
    return bool(header) and (header.strip() == "*" or etag in {tag.strip() for tag in header.split(",")})


class Precondition:
    """An If-Match header: `*`, or a list of ETags. Absent means unconditional."""

    def __init__(self, header: str | None):
        self.header = header
        self._tags = {tag.strip() for tag in header.split(",")} if header else set()

    @property
    def unconditional(self) -> bool:
        return self.header is None or "*" in self._tags

    def states(self, entity_id: int, parts: int) -> list[tuple[int, ...]] | None:
        """The states (the numbers after the id in the ETag) the entity may be in for the write to
        happen; None: any (no If-Match, or `*`). A tag of another entity or shape matches nothing."""
        if self.unconditional:
            return None
        prefix = f'"{entity_id}.'
        found = set()
        for tag in self._tags:
            if not (tag.startswith(prefix) and tag.endswith('"')):
                continue
            numbers = tag[len(prefix):-1].split(".")
            if len(numbers) == parts and all(n.isdigit() and len(n) < 10 for n in numbers):
                found.add(tuple(int(n) for n in numbers))
        return sorted(found)

    def versions(self, task_id: int) -> list[int] | None:
        """The versions the task may have for the write to happen; None: any."""
        states = self.states(task_id, 1)
        return None if states is None else [state[0] for state in states]
