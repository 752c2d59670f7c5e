"""Recurring tasks, pure: the RRULE subset of contract §9, and the due dates a series gives.

Rules are expanded with python-dateutil's `rrule` in naive local wall time of the task's zone,
then each occurrence becomes a moment with `dates.local_moment` (first of two ambiguous times,
offset before a gap), so a weekly 09:00 Europe/Berlin task stays at 09:00 across daylight saving.
An all-day series is expanded by date. Nothing here reads a clock: every function is given the
moments it needs, so tests are exact.

The work is bounded whatever the dates (§9): a walk starts near the point of interest, not at the
series' first due date (`_walk_start` keeps the rule's phase), COUNT is resolved once per series
(`_last_counted`), and every walk has a budget of years (`Budget`). A series ends where the
calendar does (year 9999); a due date that is not a wall time of its zone raises dates.OutOfRange.
"""
import functools
import math
import re
from collections.abc import Iterator
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
# Occurrences one walk may pass before it gives up (a rule of many occurrences per period).
MAX_STEPS = 10_000
# How many years past the point of interest the next occurrence is looked for. dateutil walks
# every period up to the year 9999 when no occurrence comes (also past UNTIL), so a rule that
# never matches (FREQ=DAILY;BYDAY=1MO;BYMONTHDAY=29) would cost seconds of CPU; the sparsest
# rules that do match repeat within 28 years (a weekday on February 29th).
HORIZON_YEARS = 60
# Resolving COUNT walks the series from its first due date, at most this many periods of the rule
# (about 0.1 s of CPU each; a YEARLY period costs dateutil as much as a year of days).
COUNT_WALK_PERIODS = {"DAILY": 40_000, "WEEKLY": 30_000, "MONTHLY": 15_000, "YEARLY": 4_000}
PERIODS_PER_YEAR = {"DAILY": 365, "WEEKLY": 52, "MONTHLY": 12, "YEARLY": 1}
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
        if not isinstance(due, datetime):
            return datetime.combine(due, time())
        try:
            return dates.wall_time(due, self.zone_name)
        except OverflowError:
            raise dates.OutOfRange(f"{dates.format_moment(due)} is outside the years 1 to 9999 in {self.zone_name}") from None

    def due_of(self, wall: datetime) -> Due:
        """Raises OverflowError for an occurrence past the calendar's end (it cannot be a due date)."""
        return wall.date() if self.all_day else dates.local_moment(wall, self.zone_name)

    def moment_of(self, due: Due) -> datetime:
        """Raises OverflowError for 9999-12-31 all day (its end is past the calendar's end)."""
        return due if isinstance(due, datetime) else dates.end_of_day(due, self.zone_name)

    def until_wall(self) -> datetime | None:
        until = self.rule.until
        if until is None:
            return None
        if isinstance(until, datetime):
            return _wall_or_edge(until, self.zone_name) if until.tzinfo else until
        return datetime.combine(until, time(23, 59, 59))


def next_due(series: Series, previous: Due, completed_at: datetime, budget: "Budget | None" = None) -> Due | None:
    """The due date of the occurrence that follows `previous` when it is completed at
    `completed_at`; None when the series has ended. Raises dates.OutOfRange when `previous` is
    not a wall time of the series' zone."""
    if series.from_completion:
        return _step_from_completion(series, previous, completed_at, budget)
    return _first_after(series, previous, completed_at, budget)


def upcoming(series: Series, due: Due, count: int) -> list[Due]:
    """The next `count` due dates after `due` (fewer when the series ends, or when a rule so sparse
    that they span centuries runs out of its budget), each occurrence taken as completed on its own
    due date (that is what `from: completion` steps from)."""
    budget = Budget(HORIZON_YEARS + 3 * count)  # a walk enters a year or two per occurrence
    result: list[Due] = []
    try:
        for _ in range(count):
            completed_at = series.moment_of(due) - _JUST_BEFORE_END if series.all_day else due
            following = next_due(series, due, completed_at, budget)
            if following is None:
                break
            result.append(following)
            series, due = replace(series, index=series.index + 1), following
    except (dates.OutOfRange, OverflowError):
        pass  # the series reaches the calendar's end
    return result


# An all-day occurrence "completed on its day": a moment inside that day, not the midnight after it.
_JUST_BEFORE_END = timedelta(seconds=1)


def _first_after(series: Series, previous: Due, not_before: datetime, budget: "Budget | None") -> Due | None:
    """`from: due`: the first occurrence strictly after both `previous` and `not_before`."""
    previous_wall = series.wall(previous)
    # Missed occurrences are skipped: start the walk near the later of the two, not at `previous`.
    start = max(previous_wall, dates.plus(_wall_or_edge(not_before, series.zone_name), timedelta(days=-2)))
    anchor = series.wall(series.anchor)
    until = series.until_wall()
    if series.rule.count is not None:  # COUNT counts from the anchor: the series ends at its COUNT-th
        until = _last_counted(series.rule, anchor)
        if until is None:
            return None
    walk_from = _walk_start(series.rule, anchor, start)
    budget = budget or Budget(start.year - walk_from.year + HORIZON_YEARS)
    try:
        occurrences = _expand(series.rule, walk_from, budget, phase_of=anchor, until=until)
        for steps, wall in enumerate(occurrences.xafter(start, inc=start != previous_wall)):
            due = series.due_of(wall)
            if wall > previous_wall and series.moment_of(due) > not_before:
                return due
            if steps >= MAX_STEPS:
                return None
    except _SERIES_ENDS:
        return None
    return None


def _step_from_completion(series: Series, previous: Due, completed_at: datetime, budget: "Budget | None") -> Due | None:
    """`from: completion`: the completion day (in the task's zone) plus one step of the rule, at
    the previous due date's time of day."""
    if series.rule.count is not None and series.index >= series.rule.count:
        return None
    day = _wall_or_edge(completed_at, series.zone_name).date()
    start = datetime.combine(day, series.wall(previous).time())
    try:
        wall = _expand(series.rule, start, budget or Budget(HORIZON_YEARS), until=series.until_wall()).after(start)
        if wall is None:
            return None
        due = series.due_of(wall)
        series.moment_of(due)  # 9999-12-31 all day ends past the calendar: the series ends before it
        return due
    except _SERIES_ENDS:
        return None


# ----------------------------------------------------------------------------- bounded walks


class HorizonReached(Exception):
    """A walk used up its budget of years without finding what it looked for."""


# A walk ends without an answer: out of budget, or at the calendar's end (dateutil stops at year
# 9999, or raises ValueError for a week that crosses into 10000; an occurrence there overflows).
_SERIES_ENDS = (HorizonReached, OverflowError, ValueError)


class Budget:
    """How many more years the walks of one answer may enter (counted by `_BoundedRule`)."""

    def __init__(self, years: int):
        self.years = years

    def spend_year(self) -> None:
        self.years -= 1
        if self.years < 0:
            raise HorizonReached()


class _BoundedRule(du.rrule):
    """dateutil's rrule, stopped when its budget of years is spent. Its iteration reads
    `_byweekno` once per year it enters (in `_iterinfo.rebuild`); BYWEEKNO is not in our subset,
    so that read is where the years are counted."""

    def __init__(self, *args: Any, budget: Budget, **kwargs: Any):
        self._budget = budget
        super().__init__(*args, **kwargs)

    @property
    def _byweekno(self) -> None:
        self._budget.spend_year()
        return None

    @_byweekno.setter
    def _byweekno(self, value: Any) -> None:
        assert value is None, "BYWEEKNO is not supported"


def _expand(
    rule: Rule, start: datetime, budget: Budget, *, phase_of: datetime | None = None,
    until: datetime | None = None, count: int | None = None,
) -> du.rrule:
    """The rule's occurrences from `start`, in naive wall times. What the rule leaves open (the
    weekday of a WEEKLY rule, the day of a MONTHLY one...) comes from `phase_of` when given (the
    anchor, when `start` is a later period's start), else from `start`, as dateutil takes it from
    its dtstart."""
    implied = _implied_by(rule, phase_of) if phase_of is not None else {}
    return _BoundedRule(
        FREQUENCIES[rule.freq],
        budget=budget,
        dtstart=start,
        interval=rule.interval,
        wkst=WEEKDAYS[rule.wkst or "MO"],
        count=count,
        until=until,
        bysetpos=rule.bysetpos or None,
        bymonth=rule.bymonth or implied.get("bymonth"),
        bymonthday=rule.bymonthday or implied.get("bymonthday"),
        byweekday=[WEEKDAYS[day](ordinal) if ordinal else WEEKDAYS[day] for ordinal, day in rule.byday]
        or implied.get("byweekday"),
    )


def _implied_by(rule: Rule, anchor: datetime) -> dict[str, tuple[int, ...]]:
    """What dateutil takes from the dtstart for what the rule leaves open (rrule.__init__)."""
    if rule.byday or rule.bymonthday:
        return {}
    if rule.freq == "YEARLY":
        return {"bymonth": rule.bymonth or (anchor.month,), "bymonthday": (anchor.day,)}
    if rule.freq == "MONTHLY":
        return {"bymonthday": (anchor.day,)}
    if rule.freq == "WEEKLY":
        return {"byweekday": (anchor.weekday(),)}
    return {}


def _walk_start(rule: Rule, anchor: datetime, near: datetime) -> datetime:
    """Where to walk the series from to find what follows `near`: the start of the last period of
    the rule (a day, a week from WKST, a month, a year) that begins by `near` and lies a whole
    number of INTERVALs after the anchor's period, at the anchor's time of day; the anchor itself
    while `near` is in its first interval. Each period's occurrences depend on the period alone
    (BYSETPOS picks within it), so from there the rule gives what the whole series gives, without
    walking the years between the anchor and `near`."""
    step = rule.interval
    if rule.freq in ("DAILY", "WEEKLY"):
        days = 1 if rule.freq == "DAILY" else 7
        week_offset = (anchor.weekday() - WEEKDAYS[rule.wkst or "MO"].weekday) % 7 if rule.freq == "WEEKLY" else 0
        first = anchor.toordinal() - week_offset  # may be day 0 (before 0001-01-01); never used as is
        periods = (near.toordinal() - first) // (days * step) * step
        if periods <= 0:
            return anchor
        day = date.fromordinal(first + periods * days)
    elif rule.freq == "MONTHLY":
        first = anchor.year * 12 + anchor.month - 1
        periods = (near.year * 12 + near.month - 1 - first) // step * step
        if periods <= 0:
            return anchor
        year, month = divmod(first + periods, 12)
        day = date(year, month + 1, 1)
    else:
        periods = (near.year - anchor.year) // step * step
        if periods <= 0:
            return anchor
        day = date(anchor.year + periods, 1, 1)
    return datetime.combine(day, anchor.time())


@functools.lru_cache(maxsize=1024)
def _last_counted(rule: Rule, anchor: datetime) -> datetime | None:
    """The last occurrence of a COUNT series anchored at `anchor`: its COUNT-th, or the last before
    the calendar ends; None when it has none. A rule so sparse that its COUNT occurrences do not
    come within COUNT_WALK_PERIODS periods ends where the walk stopped."""
    periods_per_year_entered = max(1.0, PERIODS_PER_YEAR[rule.freq] / rule.interval)
    budget = Budget(math.ceil(COUNT_WALK_PERIODS[rule.freq] / periods_per_year_entered))
    last = None
    try:
        for last in _expand(rule, anchor, budget, count=rule.count):
            pass
    except _SERIES_ENDS:
        pass
    return last


def _wall_or_edge(moment: datetime, zone_name: str) -> datetime:
    """The wall time of `moment` in the zone, or the first or last wall time there is when it falls
    outside the years 1 to 9999 there (a bound, such as a completion time or UNTIL)."""
    try:
        return dates.wall_time(moment, zone_name)
    except OverflowError:
        return datetime.min if moment.year < 5000 else datetime.max
