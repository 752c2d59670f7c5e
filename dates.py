"""Due dates, pure: time zones, all-day dates and the one "due moment" everything sorts by.

A task's `due_date` is either a moment (stored as is, UTC) or an all-day date. An all-day task is
due at the end of its day in its zone: the midnight that closes it. That moment is stored in the
indexed `task.due_date` column (sorting, `overdue`, `due_before`/`due_after`, stats); the date
itself is kept in `task.all_day`, and it is what the API returns.

Local wall times become moments with `local_moment`: an ambiguous time (fall back) is the first
(fold=0), a time that does not exist (spring forward) is read with the offset before the gap, so
02:30 on a night that skips 02:00-03:00 is 03:30 (zoneinfo does exactly that for fold=0, PEP 495).
"""
import functools
import re
import zoneinfo
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

UTC_NAME = "UTC"
ALL_DAY_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}")
EARLIEST = datetime.min.replace(tzinfo=timezone.utc)
LATEST = datetime.max.replace(tzinfo=timezone.utc)


class OutOfRange(ValueError):
    """A date whose moment, or wall time in its zone, falls outside the years 1 to 9999 (§9: a 422)."""


@functools.lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def is_zone_name(name: str) -> bool:
    """An IANA zone name this server knows (`Europe/Berlin`, `UTC`); not a file path or `localtime`."""
    return name in _known_zones()


@functools.lru_cache(maxsize=1024)
def zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def parse_all_day(value: str) -> date | None:
    """`YYYY-MM-DD` as a date; None when the text is not in that form. Raises ValueError for a
    well-formed but impossible date (2026-02-30)."""
    if not ALL_DAY_FORMAT.fullmatch(value):
        return None
    return date.fromisoformat(value)


def local_moment(wall_time: datetime, zone_name: str) -> datetime:
    """A naive local wall time in a zone as a UTC moment (first of two, offset before a gap)."""
    return wall_time.replace(tzinfo=zone(zone_name), fold=0).astimezone(timezone.utc)


def wall_time(moment: datetime, zone_name: str) -> datetime:
    """A UTC moment as the naive wall time it is in a zone."""
    return moment.astimezone(zone(zone_name)).replace(tzinfo=None)


def end_of_day(day: date, zone_name: str) -> datetime:
    """The moment an all-day date is due: the midnight that closes it, in its zone. Raises
    OverflowError for 9999-12-31 (that midnight is in the year 10000)."""
    return local_moment(datetime.combine(day + timedelta(days=1), time()), zone_name)


def day_bounds(day: date, zone_name: str) -> tuple[datetime, datetime]:
    """[start, end) of a calendar day in a zone, as UTC moments; at the calendar's edges (0001-01-01
    east of UTC, 9999-12-31), the first or last moment there is."""
    try:
        start = local_moment(datetime.combine(day, time()), zone_name)
    except OverflowError:
        start = EARLIEST
    try:
        end = end_of_day(day, zone_name)
    except OverflowError:  # 9999-12-31: the midnight after it is in the year 10000, its last instant may not be
        try:
            end = plus(local_moment(datetime.combine(day, time.max), zone_name), timedelta(microseconds=1))
        except OverflowError:
            end = LATEST
    return start, end


def plus(moment: datetime, delta: timedelta) -> datetime:
    """`moment + delta`, or the first or last moment there is (years 1 and 9999) when that is outside
    them: for bounds, such as the edges of a search or of a walk."""
    try:
        return moment + delta
    except OverflowError:
        edge = datetime.min if delta < timedelta(0) else datetime.max
        return edge.replace(tzinfo=moment.tzinfo)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def format_moment(moment: datetime) -> str:
    """UTC with `Z`, as every timestamp of the API is written."""
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def due_value(task: dict[str, Any]) -> Any:
    """What the API shows as `due_date`: the all-day date, else the moment."""
    return task["all_day"] or task["due_date"]


def show_due(row: dict[str, Any]) -> dict[str, Any]:
    """A listed row as the API shows it, in place: the all-day date replaces the moment."""
    all_day = row.pop("all_day")
    if all_day:
        row["due_date"] = all_day
    return row


def due_columns(due: date | datetime | None, zone_name: str) -> dict[str, Any]:
    """The stored columns of a due value: the moment (`due_date`) and the all-day date (`all_day`)."""
    if due is None:
        return {"due_date": None, "all_day": None}
    if isinstance(due, datetime):
        return {"due_date": due, "all_day": None}
    try:
        return {"due_date": end_of_day(due, zone_name), "all_day": due.isoformat()}
    except OverflowError:
        raise OutOfRange(
            f"{due.isoformat()} is out of range: an all-day task is due at the end of its day, which is past the "
            "last moment supported (9999-12-31T23:59:59Z); use an earlier date or a date-time"
        ) from None


def stored_due(task: dict[str, Any]) -> date | datetime | None:
    """The due value of a stored task: an all-day date or a UTC moment."""
    if task["all_day"]:
        return date.fromisoformat(task["all_day"])
    return task["due_date"]
