"""The request an Idempotency-Key was first used with, recognised across versions of the service.

Stored in `idempotency_key.request_hash`, in one of two formats:

- `v2:` + SHA-256 (base64url) of the kind (task, list) and the fields the client sent, as validated
  (trimmed, tags deduplicated...), leaving out the fields it did not send. A field the create model
  gains later is absent from a retry of an older request, so the fingerprint stays the same.
- 64 hex digits (versions before issue 23): SHA-256 of the create model's full dump, every field
  with its default. It changed whenever the model gained a field: after a deploy, every key stored
  before answered 422 IDEMPOTENCY_KEY_REUSED to an identical retry. Such a row is matched by
  recomputing the dump each of those versions made of the same request (`LEGACY_SHAPES`).

A replay returns what was stored, byte for byte: for a key stored by an older version, the task or
list as that version showed it (without the fields added since).
"""
import base64
import hashlib
from datetime import date, datetime, time, timezone
from typing import Any

import orjson
from pydantic import BaseModel

FORMAT = "v2:"
DUMP_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z

ROUND_1_TASK = ("title", "description", "completed", "priority", "tags", "due_date")
ROUND_2_TASK = (*ROUND_1_TASK, "list_id", "parent_id")  # lists and subtasks
ROUND_3_TASK = (*ROUND_2_TASK, "time_zone", "recurrence", "reminders")  # dates, until issue 23
# The create models' fields in each earlier version (git log -p schemas.py), newest first, and
# whether its due_date was a moment only (an all-day "2026-12-01" parsed as midnight UTC).
LEGACY_SHAPES: dict[str, list[tuple[tuple[str, ...], bool]]] = {
    "task": [(ROUND_3_TASK, False), (ROUND_2_TASK, True), (ROUND_1_TASK, True)],
    "list": [(("name", "color"), False)],
}


def of(kind: str, body: BaseModel) -> str:
    """The fingerprint stored with a new key."""
    return of_values(kind, body.model_dump(exclude_unset=True))


def of_values(kind: str, sent: dict[str, Any]) -> str:
    """The fingerprint of a request made of these values (a chat turn's message and conversation)."""
    payload = {"kind": kind, "sent": sent}
    digest = hashlib.sha256(orjson.dumps(payload, option=DUMP_OPTIONS)).digest()
    return FORMAT + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def matches(stored: str, kind: str, body: BaseModel) -> bool:
    """Whether `body` is the request the stored fingerprint was made from, by whichever version."""
    if stored.startswith(FORMAT):
        return stored == of(kind, body)
    return stored in _legacy(kind, body)


def _legacy(kind: str, body: BaseModel) -> set[str]:
    """The fingerprints earlier versions stored for this request. A version whose model lacked a
    field the client sent would have refused the request (422): it stored nothing for it."""
    dump = body.model_dump()
    return {
        _legacy_hash(kind, {name: _moment(dump[name]) if moment_only else dump[name] for name in fields})
        for fields, moment_only in LEGACY_SHAPES[kind]
        if body.model_fields_set <= set(fields)
    }


def _legacy_hash(kind: str, fields: dict[str, Any]) -> str:
    # Before lists existed a task's payload was its fields alone; a list's names its kind.
    payload = fields if kind == "task" else {"__kind__": kind, **fields}
    return hashlib.sha256(orjson.dumps(payload, option=DUMP_OPTIONS)).hexdigest()


def _moment(value: Any) -> Any:
    """An all-day date as those versions parsed it: midnight UTC. Other values as they are."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime.combine(value, time(), timezone.utc)
    return value
