"""Keyset pages of the listing: the opaque `cursor` of the `rel="next"` link.

A cursor names the last task of the page that gave it (its sort value and id) and how many tasks
came before the next page (for the `prev` link, which goes by offset). The next page starts right
after that task in the same order, so it costs the same at any depth, and tasks created or deleted
meanwhile neither shift it nor make it repeat or skip one.

A cursor is `base64url(json).base64url(checksum)`; the checksum covers the payload and the listing
it belongs to (owner, filters, sort, order), so a changed cursor, or one sent with other filters or
by another user, is a 422 naming `cursor`. It is a consistency check, not a secret: every page is
read with the caller's id in its WHERE, so a forged cursor can only start a page among the caller's
own tasks.
"""
import base64
import binascii
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from errors import ValidationFailed
from models import MAX_ID

VERSION = 1
CHECKSUM_BYTES = 12
MAX_OFFSET = 10_000_000
MAX_TITLE_KEY = 4 * 255  # lower() can lengthen a title ("İ" becomes two code points)


@dataclass(frozen=True)
class Cursor:
    value: Any  # the last task's sort value: a datetime (None: no due date), a priority rank, a lowered title
    task_id: int
    offset: int  # tasks before the page this cursor starts


def identity(filters: Any, sort: str, ascending: bool) -> bytes:
    """What a cursor belongs to: the owner, every filter (normalised: order of tags and priorities
    does not matter), the sort and the order."""
    fields = dataclasses.asdict(filters)
    fields["tags"] = sorted(filters.tag_keys())
    fields["priorities"] = sorted(set(filters.priorities or ()))
    # json, not orjson: a list_id past 64 bits is still a query (it answers 404), not a crash here.
    return json.dumps([VERSION, sort, ascending, fields], default=str, sort_keys=True).encode()


def encode(cursor: Cursor, belongs_to: bytes) -> str:
    value = cursor.value.isoformat() if isinstance(cursor.value, datetime) else cursor.value
    payload = orjson.dumps([value, cursor.task_id, cursor.offset])
    return f"{_b64(payload)}.{_b64(_checksum(payload, belongs_to))}"


def decode(text: str, belongs_to: bytes, sort: str) -> Cursor:
    """The cursor, or a 422 naming `cursor` that says why."""
    try:
        encoded_payload, encoded_checksum = text.split(".")
        payload, checksum = _unb64(encoded_payload), _unb64(encoded_checksum)
    except (ValueError, binascii.Error):
        raise _invalid("is not a cursor this API gave (copy the rel=\"next\" link whole)") from None
    if checksum != _checksum(payload, belongs_to):
        raise _invalid(
            "does not belong to this listing: it was changed, or it came from a request with other filters, "
            "another sort or order, or another user. Send it with the exact query it came with, or start again without it"
        )
    try:
        value, task_id, offset = orjson.loads(payload)
        return Cursor(_sort_value(value, sort), _bounded(task_id, 1, MAX_ID), _bounded(offset, 0, MAX_OFFSET))
    except (ValueError, TypeError):
        raise _invalid("is not a cursor this API gave") from None


def _sort_value(value: Any, sort: str) -> Any:
    if sort == "priority":
        return _bounded(value, 1, 3)
    if sort == "title":
        if not isinstance(value, str) or len(value) > MAX_TITLE_KEY:
            raise ValueError("title key")
        return value
    if value is None and sort == "due_date":
        return None
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("naive moment")
    return moment


def _bounded(value: Any, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ValueError("out of range")
    return value


def _checksum(payload: bytes, belongs_to: bytes) -> bytes:
    return hashlib.blake2b(belongs_to + b"\0" + payload, digest_size=CHECKSUM_BYTES).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _invalid(message: str) -> ValidationFailed:
    return ValidationFailed([{"field": "cursor", "message": message}])
