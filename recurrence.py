"""Recurring tasks, pure: the RRULE subset of contract §9, and the due dates a series gives.

Rules are expanded with python-dateutil's `rrule` in naive local wall time of the task's zone,
then each occurrence becomes a moment with `dates.local_moment` (first of two ambiguous times,
offset before a gap), so a weekly 09:00 Europe/Berlin task stays at 09:00 across daylight saving.
An all-day series is expanded by date. Nothing here reads a clock: every function is given the
moments it needs, so tests are exact.
"""
import re
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from dateutil import rrule as du

import dates

FREQUENCIES = {"DAILY": du.DAILY, "WEEKLY": du.WEEKLY, "MONTHLY": du.MONTHLY, "YEARLY": du.YEARLY}
WEEKDAYS = {"MO": du.MO, "TU": du.TU, "WE": du.WE, "TH": du.TH, "FR": du.FR, "SA": du.SA, "SU": du.SU}
SUPPORTED = ("FREQ", "INTERVAL", "BYDAY", "BYMONTHDAY", "BYMONTH", "BYSETPOS", "COUNT", "UNTIL", "WKST")
MAX_INTERVAL = 1000
MAX_COUNT = 10_000
# Skipping missed occurrences walks the rule; this bounds the walk (a daily rule missed for 27 years).
MAX_STEPS = 10_000
# How many years past the point of interest the next occurrence is looked for. dateutil walks
# every period up to the year 9999 when no occurrence comes (also past UNTIL), so a rule that
# never matches (FREQ=DAILY;BYDAY=1MO;BYMONTHDAY=29) would cost seconds of CPU; the sparsest
# rules that do match repeat within 28 years (a weekday on February 29th).
HORIZON_YEARS = 60
_BYDAY = re.compile(r"([+-]?)(\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)")
_UNTIL = re.compile(r"(\d{8})(?:T(\d{6})(Z?))?")

Due = date | datetime  # an all-day date, or a UTC moment


class RuleError(ValueError):
    """The text is not a rule of the supported subset; the message says what to change."""


@dataclass(frozen=True)
class Rule:
    freq: str
    interval: int = 1
    byday: tuple[tuple[int | None, str], ...] = ()
    bymonthday: tuple[int, ...] = ()
    bymonth: tuple[int, ...] = ()
    bysetpos: tuple[int, ...] = ()
    count: int | None = None
    until: date | datetime | None = None  # a date, a naive local time, or an aware UTC moment
    wkst: str | None = None
    text: str = ""  # the rule as stored and returned (no `RRULE:` prefix, upper case)


def parse_rule(text: str) -> Rule:
    body = text.strip()
    if body.upper().startswith("RRULE:"):
        body = body[len("RRULE:"):]
    parts: dict[str, str] = {}
    for part in body.upper().split(";"):
        name, equals, value = part.partition("=")
        if not equals or not name or not value:
            raise RuleError(f"'{part}' is not NAME=VALUE; write the rule like FREQ=WEEKLY;BYDAY=MO")
        if name not in SUPPORTED:
            raise RuleError(f"{name} is not supported; use only {', '.join(SUPPORTED)}")
        if name in parts:
            raise RuleError(f"{name} is given twice")
        parts[name] = value
    if "FREQ" not in parts:
        raise RuleError("FREQ is required (DAILY, WEEKLY, MONTHLY or YEARLY)")
    freq = parts["FREQ"]
    if freq not in FREQUENCIES:
        raise RuleError(f"FREQ={freq} is not supported; use DAILY, WEEKLY, MONTHLY or YEARLY")
    if "COUNT" in parts and "UNTIL" in parts:
        raise RuleError("COUNT and UNTIL cannot both be given (RFC 5545)")
    rule = Rule(
        freq=freq,
        interval=_number(parts, "INTERVAL", 1, MAX_INTERVAL) or 1,
        byday=tuple(_weekday(item, freq) for item in _items(parts, "BYDAY")),
        bymonthday=tuple(_int(item, "BYMONTHDAY", 1, 31, signed=True) for item in _items(parts, "BYMONTHDAY")),
        bymonth=tuple(_int(item, "BYMONTH", 1, 12) for item in _items(parts, "BYMONTH")),
        bysetpos=tuple(_int(item, "BYSETPOS", 1, 366, signed=True) for item in _items(parts, "BYSETPOS")),
        count=_number(parts, "COUNT", 1, MAX_COUNT),
        until=_until(parts["UNTIL"]) if "UNTIL" in parts else None,
        wkst=_wkst(parts.get("WKST")),
        text=";".join(f"{name}={value}" for name, value in parts.items()),
    )
    if rule.bymonthday and freq == "WEEKLY":
        raise RuleError("BYMONTHDAY cannot be used with FREQ=WEEKLY (RFC 5545)")
    if rule.bysetpos and not (rule.byday or rule.bymonthday or rule.bymonth):
        raise RuleError("BYSETPOS needs BYDAY, BYMONTHDAY or BYMONTH to pick from")
    return rule


def _items(parts: dict[str, str], name: str) -> list[str]:
    return parts[name].split(",") if name in parts else []


def _int(text: str, name: str, low: int, high: int, *, signed: bool = False) -> int:
    if not re.fullmatch(r"[+-]?\d{1,5}" if signed else r"\d{1,5}", text):
        raise RuleError(f"{name}={text} is not a{' (signed)' if signed else ''} whole number")
    value = int(text)
    if not low <= abs(value) <= high:
        range_text = f"{low} to {high}" + (f" or -{high} to -{low}" if signed else "")
        raise RuleError(f"{name}={text} is out of range ({range_text})")
    return value


def _number(parts: dict[str, str], name: str, low: int, high: int) -> int | None:
    return _int(parts[name], name, low, high) if name in parts else None


def _weekday(text: str, freq: str) -> tuple[int | None, str]:
    match = _BYDAY.fullmatch(text)
    if not match:
        raise RuleError(f"BYDAY={text} is not a weekday such as MO, or -1FR for monthly and yearly rules")
    sign, digits, day = match.groups()
    if digits is None:
        if sign:
            raise RuleError(f"BYDAY={text} has a sign but no number")
        return None, day
    if freq not in ("MONTHLY", "YEARLY"):
        raise RuleError(f"BYDAY={text}: a numbered weekday only works with FREQ=MONTHLY or YEARLY")
    limit = 5 if freq == "MONTHLY" else 53
    ordinal = int(sign + digits)
    if not 1 <= abs(ordinal) <= limit:
        raise RuleError(f"BYDAY={text}: the number must be 1 to {limit} or -{limit} to -1")
    return ordinal, day


def _wkst(text: str | None) -> str | None:
    if text is not None and text not in WEEKDAYS:
        raise RuleError(f"WKST={text} is not a weekday (MO, TU, WE, TH, FR, SA or SU)")
    return text


def _until(text: str) -> date | datetime:
    match = _UNTIL.fullmatch(text)
    if not match:
        raise RuleError(f"UNTIL={text} is not a date (20261231) or date-time (20261231T235959Z)")
    day_text, time_text, utc = match.groups()
    try:
        day = datetime.strptime(day_text, "%Y%m%d").date()
        if time_text is None:
            return day
        moment = datetime.combine(day, datetime.strptime(time_text, "%H%M%S").time())
    except ValueError:
        raise RuleError(f"UNTIL={text} is not a real date and time") from None
    return moment.replace(tzinfo=timezone.utc) if utc else moment


# ----------------------------------------------------------------------------- expansion


@dataclass(frozen=True)
class Series:
    """A recurring task's rule, where it is anchored (its first due date), how it steps, and where."""

    rule: Rule
    anchor: Due
    zone_name: str
    from_completion: bool = False
    index: int = 1  # which occurrence of the series the current task is (the anchor's is 1)

    @property
    def all_day(self) -> bool:
        return not isinstance(self.anchor, datetime)

    def wall(self, due: Due) -> datetime:
        if isinstance(due, datetime):
            return dates.wall_time(due, self.zone_name)
        return datetime.combine(due, time())

    def due_of(self, wall: datetime) -> Due:
        return wall.date() if self.all_day else dates.local_moment(wall, self.zone_name)

    def moment_of(self, due: Due) -> datetime:
        return due if isinstance(due, datetime) else dates.end_of_day(due, self.zone_name)

    def expand(self, start: datetime, *, looking_at: datetime, with_count: bool = True) -> du.rrule:
        """The rule from `start`, in naive wall times, walked no further than HORIZON_YEARS past
        `looking_at` (past it, iterating raises HorizonReached)."""
        rule = self.rule
        return _BoundedRule(
            FREQUENCIES[rule.freq],
            max_years=max(0, looking_at.year - start.year) + HORIZON_YEARS,
            dtstart=start,
            interval=rule.interval,
            wkst=WEEKDAYS[rule.wkst] if rule.wkst else None,
            count=rule.count if with_count else None,
            until=self._until_wall(),
            bysetpos=rule.bysetpos or None,
            bymonth=rule.bymonth or None,
            bymonthday=rule.bymonthday or None,
            byweekday=[WEEKDAYS[day](ordinal) if ordinal else WEEKDAYS[day] for ordinal, day in rule.byday] or None,
        )

    def _until_wall(self) -> datetime | None:
        until = self.rule.until
        if until is None:
            return None
        if isinstance(until, datetime):
            return dates.wall_time(until, self.zone_name) if until.tzinfo else until
        return datetime.combine(until, time(23, 59, 59))


def next_due(series: Series, previous: Due, completed_at: datetime) -> Due | None:
    """The due date of the occurrence that follows `previous` when it is completed at
    `completed_at`; None when the series has ended."""
    if series.from_completion:
        return _step_from_completion(series, previous, completed_at)
    return _first_after(series, previous, completed_at)


class HorizonReached(Exception):
    """The rule was walked HORIZON_YEARS past the point of interest without an occurrence."""


class _BoundedRule(du.rrule):
    """dateutil's rrule, stopped after walking `max_years` years. Its iteration reads
    `_byweekno` once per year it enters (in `_iterinfo.rebuild`); BYWEEKNO is not in our subset,
    so that read is where the years are counted."""

    def __init__(self, *args: Any, max_years: int, **kwargs: Any):
        self._years_left = max_years
        super().__init__(*args, **kwargs)

    @property
    def _byweekno(self) -> None:
        self._years_left -= 1
        if self._years_left < 0:
            raise HorizonReached()
        return None

    @_byweekno.setter
    def _byweekno(self, value: Any) -> None:
        assert value is None, "BYWEEKNO is not supported"


def _first_after(series: Series, previous: Due, not_before: datetime) -> Due | None:
    """`from: due`: the first occurrence strictly after both `previous` and `not_before`."""
    # Missed occurrences are skipped: start the walk near the later of the two, not at `previous`.
    start = max(series.wall(previous), dates.wall_time(not_before, series.zone_name) - timedelta(days=2))
    anchor = series.wall(series.anchor)
    try:
        occurrences = series.expand(anchor, looking_at=start, with_count=False)
        for steps, wall in enumerate(occurrences.xafter(start, inc=start != series.wall(previous))):
            due = series.due_of(wall)
            if wall > series.wall(previous) and series.moment_of(due) > not_before:
                return due if _within_count(series, anchor, wall) else None
            if steps >= MAX_STEPS:
                return None
    except HorizonReached:
        return None
    return None


def _within_count(series: Series, anchor: datetime, wall: datetime) -> bool:
    """COUNT counts from the anchor: is `wall` one of the series' first COUNT occurrences?"""
    if series.rule.count is None:
        return True
    return series.expand(anchor, looking_at=wall).before(wall, inc=True) == wall


def _step_from_completion(series: Series, previous: Due, completed_at: datetime) -> Due | None:
    """`from: completion`: the completion day (in the task's zone) plus one step of the rule, at
    the previous due date's time of day."""
    if series.rule.count is not None and series.index >= series.rule.count:
        return None
    day = dates.wall_time(completed_at, series.zone_name).date()
    start = datetime.combine(day, series.wall(previous).time())
    try:
        wall = series.expand(start, looking_at=start, with_count=False).after(start)
    except HorizonReached:
        return None
    return series.due_of(wall) if wall is not None else None


def upcoming(series: Series, due: Due, count: int) -> list[Due]:
    """The next `count` due dates after `due` (fewer when the series ends), each occurrence taken
    as completed on its own due date (that is what `from: completion` steps from)."""
    result: list[Due] = []
    for _ in range(count):
        following = next_due(series, due, series.moment_of(due) - _JUST_BEFORE_END if series.all_day else due)
        if following is None:
            break
        result.append(following)
        series, due = replace(series, index=series.index + 1), following
    return result


# An all-day occurrence "completed on its day": a moment inside that day, not the midnight after it.
_JUST_BEFORE_END = timedelta(seconds=1)
