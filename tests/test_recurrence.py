"""Recurrence and due dates as pure functions, with fixed clocks: no database, no server."""
import random
import re
import time
from datetime import date, datetime, timedelta, timezone

import pytest
from dateutil import rrule as du
from dateutil import tz as dateutil_tz

import dates
from recurrence import RuleError, Series, next_due, parse_rule, upcoming


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


def series(rule: str, anchor, zone_name: str = "UTC", **kwargs) -> Series:
    return Series(parse_rule(rule), anchor, zone_name, **kwargs)


# ----------------------------------------------------------------------------- all-day and zones


def test_all_day_is_due_at_the_midnight_that_closes_it_in_its_zone():
    assert dates.end_of_day(date(2026, 12, 1), "UTC") == utc(2026, 12, 2)
    assert dates.end_of_day(date(2026, 12, 1), "Europe/Berlin") == utc(2026, 12, 1, 23)
    assert dates.end_of_day(date(2026, 7, 1), "Europe/Berlin") == utc(2026, 7, 1, 22)
    assert dates.end_of_day(date(2026, 12, 1), "America/New_York") == utc(2026, 12, 2, 5)


def test_day_bounds_of_a_dst_day_are_23_hours_long():
    start, end = dates.day_bounds(date(2026, 3, 29), "Europe/Berlin")
    assert (start, end) == (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))


def test_nonexistent_local_time_takes_the_offset_before_the_gap_as_dateutil_resolves_it():
    berlin = dates.local_moment(datetime(2026, 3, 29, 2, 30), "Europe/Berlin")
    assert berlin == utc(2026, 3, 29, 1, 30)  # 03:30 CEST
    assert berlin == dateutil_tz.resolve_imaginary(datetime(2026, 3, 29, 2, 30, tzinfo=dates.zone("Europe/Berlin")))
    new_york = dates.local_moment(datetime(2026, 3, 8, 2, 30), "America/New_York")
    assert new_york == utc(2026, 3, 8, 7, 30)  # 03:30 EDT
    assert new_york == dateutil_tz.resolve_imaginary(datetime(2026, 3, 8, 2, 30, tzinfo=dates.zone("America/New_York")))


def test_ambiguous_local_time_is_the_first_of_the_two():
    assert dates.local_moment(datetime(2026, 10, 25, 2, 30), "Europe/Berlin") == utc(2026, 10, 25, 0, 30)  # CEST
    assert dates.local_moment(datetime(2026, 11, 1, 1, 30), "America/New_York") == utc(2026, 11, 1, 5, 30)  # EDT


# ----------------------------------------------------------------------------- expansion


def test_weekly_berlin_stays_at_nine_local_across_both_dst_changes():
    weekly = series("FREQ=WEEKLY;BYDAY=MO", utc(2026, 3, 23, 8), "Europe/Berlin")  # Monday 09:00 CET
    assert upcoming(weekly, weekly.anchor, 2) == [utc(2026, 3, 30, 7), utc(2026, 4, 6, 7)]  # 09:00 CEST
    autumn = series("FREQ=WEEKLY;BYDAY=MO", utc(2026, 10, 19, 7), "Europe/Berlin")
    assert upcoming(autumn, autumn.anchor, 2) == [utc(2026, 10, 26, 8), utc(2026, 11, 2, 8)]


def test_weekly_new_york_stays_at_nine_local_across_both_dst_changes():
    spring = series("FREQ=WEEKLY", utc(2026, 3, 2, 14), "America/New_York")  # 09:00 EST
    assert upcoming(spring, spring.anchor, 2) == [utc(2026, 3, 9, 13), utc(2026, 3, 16, 13)]  # 09:00 EDT
    autumn = series("FREQ=WEEKLY", utc(2026, 10, 26, 13), "America/New_York")
    assert upcoming(autumn, autumn.anchor, 1) == [utc(2026, 11, 2, 14)]


def test_daily_at_a_time_skipped_by_spring_forward_lands_an_hour_later_that_day():
    daily = series("FREQ=DAILY", utc(2026, 3, 28, 1, 30), "Europe/Berlin")  # 02:30 CET
    assert upcoming(daily, daily.anchor, 2) == [utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)]
    new_york = series("FREQ=DAILY", utc(2026, 3, 7, 7, 30), "America/New_York")  # 02:30 EST
    assert upcoming(new_york, new_york.anchor, 2) == [utc(2026, 3, 8, 7, 30), utc(2026, 3, 9, 6, 30)]


def test_daily_at_an_ambiguous_time_takes_the_first():
    daily = series("FREQ=DAILY", utc(2026, 10, 24, 0, 30), "Europe/Berlin")  # 02:30 CEST
    assert upcoming(daily, daily.anchor, 2) == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


def test_monthly_on_the_31st_skips_months_without_one():
    monthly = series("FREQ=MONTHLY", date(2026, 1, 31))
    assert upcoming(monthly, monthly.anchor, 4) == [date(2026, 3, 31), date(2026, 5, 31), date(2026, 7, 31), date(2026, 8, 31)]


def test_bymonthday_minus_one_is_the_last_day_of_every_month():
    last = series("FREQ=MONTHLY;BYMONTHDAY=-1", date(2026, 1, 31))
    assert upcoming(last, last.anchor, 3) == [date(2026, 2, 28), date(2026, 3, 31), date(2026, 4, 30)]


def test_yearly_on_february_29th_comes_in_leap_years_only():
    leap = series("FREQ=YEARLY", date(2024, 2, 29))
    assert upcoming(leap, leap.anchor, 2) == [date(2028, 2, 29), date(2032, 2, 29)]


def test_last_friday_of_the_month():
    last_friday = series("FREQ=MONTHLY;BYDAY=-1FR", date(2026, 1, 30))
    assert upcoming(last_friday, last_friday.anchor, 3) == [date(2026, 2, 27), date(2026, 3, 27), date(2026, 4, 24)]


def test_bysetpos_last_workday_of_the_month():
    workday = series("FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1", date(2026, 7, 31))
    assert upcoming(workday, workday.anchor, 2) == [date(2026, 8, 31), date(2026, 9, 30)]
    assert upcoming(series("FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1", date(2026, 4, 30)), date(2026, 4, 30), 1) == [
        date(2026, 5, 29)  # May 31 is a Sunday
    ]


def test_count_is_counted_from_the_anchor_not_from_the_current_occurrence():
    three = series("FREQ=DAILY;COUNT=3", utc(2026, 3, 1, 9))
    assert next_due(three, utc(2026, 3, 2, 9), utc(2026, 3, 2, 10)) == utc(2026, 3, 3, 9)
    assert next_due(three, utc(2026, 3, 3, 9), utc(2026, 3, 3, 10)) is None


def test_until_is_inclusive_and_ends_the_series():
    until = series("FREQ=DAILY;UNTIL=20260303T090000Z", utc(2026, 3, 1, 9))
    assert upcoming(until, until.anchor, 5) == [utc(2026, 3, 2, 9), utc(2026, 3, 3, 9)]
    by_date = series("FREQ=DAILY;UNTIL=20260302", date(2026, 3, 1))
    assert upcoming(by_date, by_date.anchor, 5) == [date(2026, 3, 2)]


def test_from_due_skips_missed_occurrences():
    daily = series("FREQ=DAILY", utc(2026, 3, 1, 9))
    assert next_due(daily, utc(2026, 3, 1, 9), utc(2026, 3, 5, 12)) == utc(2026, 3, 6, 9)
    assert next_due(daily, utc(2026, 3, 1, 9), utc(2026, 3, 1, 8)) == utc(2026, 3, 2, 9)  # completed early


def test_from_due_all_day_completed_late_gives_the_occurrence_of_that_day():
    daily = series("FREQ=DAILY", date(2026, 3, 1), "Europe/Berlin")
    assert next_due(daily, date(2026, 3, 1), utc(2026, 3, 3, 10)) == date(2026, 3, 3)


def test_from_completion_interval_3_completed_on_the_10th_is_the_13th_at_the_previous_time():
    every_three = series("FREQ=DAILY;INTERVAL=3", utc(2026, 3, 1, 9), from_completion=True)
    assert next_due(every_three, utc(2026, 3, 7, 9), utc(2026, 3, 10, 18, 45)) == utc(2026, 3, 13, 9)


def test_from_completion_uses_the_completion_day_in_the_tasks_zone():
    every_three = series("FREQ=DAILY;INTERVAL=3", utc(2026, 3, 1, 8), "Europe/Berlin", from_completion=True)
    # 23:30 UTC on the 10th is already the 11th in Berlin.
    assert next_due(every_three, utc(2026, 3, 7, 8), utc(2026, 3, 10, 23, 30)) == utc(2026, 3, 14, 8)


def test_from_completion_count_ends_after_count_occurrences():
    twice = series("FREQ=DAILY;COUNT=2", date(2026, 3, 1), from_completion=True, index=2)
    assert next_due(twice, date(2026, 3, 2), utc(2026, 3, 2, 10)) is None


# ----------------------------------------------------------------------------- the subset


@pytest.mark.parametrize(
    "text",
    [
        "FREQ=WEEKLY;BYDAY=MO", "RRULE:FREQ=DAILY", "rrule:freq=daily;interval=2", "FREQ=MONTHLY;BYDAY=-1FR",
        "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29", "FREQ=MONTHLY;BYDAY=MO,TU;BYSETPOS=1", "FREQ=DAILY;COUNT=5",
        "FREQ=DAILY;UNTIL=20261231T235959Z", "FREQ=WEEKLY;WKST=SU;BYDAY=SA,SU", "FREQ=MONTHLY;BYMONTHDAY=-1",
    ],
)
def test_rules_of_the_subset_are_accepted(text):
    assert parse_rule(text).text == text.upper().removeprefix("RRULE:")


@pytest.mark.parametrize(
    "text",
    [
        "FREQ=HOURLY", "FREQ=MINUTELY", "FREQ=DAILY;BYHOUR=9", "FREQ=YEARLY;BYWEEKNO=1", "FREQ=YEARLY;BYYEARDAY=1",
        "INTERVAL=2", "FREQ=DAILY;;", "FREQ", "FREQ=DAILY;FREQ=WEEKLY", "FREQ=WEEKLY;BYDAY=1MO",
        "FREQ=WEEKLY;BYDAY=XX", "FREQ=MONTHLY;BYMONTHDAY=0", "FREQ=MONTHLY;BYMONTHDAY=32", "FREQ=YEARLY;BYMONTH=13",
        "FREQ=DAILY;COUNT=0", "FREQ=DAILY;INTERVAL=0", "FREQ=DAILY;COUNT=2;UNTIL=20261231", "FREQ=DAILY;UNTIL=2026",
        "FREQ=DAILY;UNTIL=20260230", "FREQ=MONTHLY;BYSETPOS=1", "FREQ=WEEKLY;BYMONTHDAY=1", "FREQ=DAILY;WKST=XX",
        "FREQ=MONTHLY;BYDAY=6MO", "", "DTSTART:20260101T000000Z",
    ],
)
def test_rules_outside_the_subset_are_refused(text):
    with pytest.raises(RuleError):
        parse_rule(text)


@pytest.mark.parametrize(
    "rule", ["FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30", "FREQ=MONTHLY;BYDAY=1MO;BYMONTHDAY=29", "FREQ=WEEKLY;BYDAY=MO;BYMONTH=2;BYSETPOS=9",
             "FREQ=DAILY;BYMONTH=4;BYMONTHDAY=31;COUNT=5"],
)
def test_a_rule_that_never_matches_has_no_next_occurrence(rule):
    never = series(rule, date(2026, 1, 1))
    assert next_due(never, date(2026, 1, 1), utc(2026, 1, 1)) is None
    assert upcoming(never, date(2026, 1, 1), 3) == []


def test_a_sparse_rule_still_finds_its_next_occurrence():
    monday_leap_day = series("FREQ=DAILY;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO", date(2016, 2, 29))
    assert next_due(monday_leap_day, date(2016, 2, 29), utc(2016, 3, 1)) == date(2044, 2, 29)


# ----------------------------------------------------------------------------- far-past anchors (bounded work)

FAST_SECONDS = 0.5  # walking from the anchor took seconds (0003 to 2026, daily: 1.5 s a step); now milliseconds


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    elapsed = time.perf_counter() - started
    assert elapsed < FAST_SECONDS, f"took {elapsed:.2f} s"
    return result


def test_a_daily_series_anchored_in_the_year_3_moved_to_next_week_answers_fast():
    daily = series("FREQ=DAILY", utc(3, 1, 1, 9))
    assert timed(upcoming, daily, utc(2026, 6, 1, 9), 50)[:3] == [utc(2026, 6, 2, 9), utc(2026, 6, 3, 9), utc(2026, 6, 4, 9)]
    assert timed(next_due, daily, utc(3, 1, 1, 9), utc(2026, 6, 1, 12)) == utc(2026, 6, 2, 9)  # completed 2023 years late


def test_interval_3_keeps_its_phase_from_an_anchor_in_the_year_1():
    every_three = series("FREQ=DAILY;INTERVAL=3", utc(1, 1, 1, 9), "Europe/Berlin")  # 09:00 UTC is 09:53 LMT there
    anchor_day = date(1, 1, 1).toordinal()
    found = timed(upcoming, every_three, utc(2026, 6, 1, 9), 20)
    assert len(found) == 20 and all((dates.wall_time(due, "Europe/Berlin").toordinal() - anchor_day) % 3 == 0 for due in found)
    assert [b - a for a, b in zip(found, found[1:])] == [timedelta(days=3)] * 19  # no DST change in June


def test_weekly_interval_2_keeps_its_phase_from_an_anchor_in_the_year_3():
    fortnightly = series("FREQ=WEEKLY;INTERVAL=2", date(3, 1, 1))
    found = timed(upcoming, fortnightly, date(2026, 6, 1), 10)
    assert all((day - date(3, 1, 1)).days % 14 == 0 for day in found) and found[0] - date(2026, 6, 1) <= timedelta(days=14)
    with_days = series("FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,TH;WKST=SU", date(2, 12, 30))  # a Tuesday
    found = timed(upcoming, with_days, date(2026, 6, 1), 6)
    weeks = {(day - date(2, 12, 28)).days // 7 % 2 for day in found}  # weeks from the Sunday before the anchor
    assert weeks == {0} and {day.weekday() for day in found} == {1, 3}


def test_monthly_bysetpos_from_the_year_1_is_the_last_workday_of_each_month():
    workday = series("FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1", date(1, 1, 31))
    assert timed(upcoming, workday, date(2026, 6, 30), 3) == [date(2026, 7, 31), date(2026, 8, 31), date(2026, 9, 30)]


def test_count_still_counts_from_an_anchor_in_the_year_3():
    yearly = series("FREQ=YEARLY;COUNT=2030", date(3, 3, 1))  # years 3 to 2032
    assert timed(upcoming, yearly, date(2026, 3, 1), 10) == [date(year, 3, 1) for year in range(2027, 2033)]
    ended = series("FREQ=DAILY;COUNT=10000", utc(2, 1, 1, 9))  # ended in the year 29
    assert timed(next_due, ended, utc(2026, 6, 1, 9), utc(2026, 6, 1, 10)) is None
    monthly = series("FREQ=MONTHLY;BYMONTHDAY=1,15;COUNT=9999", date(1, 1, 1))  # the 9999th is 0417-08-01
    assert timed(upcoming, monthly, date(417, 6, 15), 5) == [date(417, 7, 1), date(417, 7, 15), date(417, 8, 1)]


def test_from_completion_with_an_anchor_in_the_year_1():
    every_three = series("FREQ=DAILY;INTERVAL=3", utc(1, 1, 1, 9), from_completion=True)
    assert timed(next_due, every_three, utc(2026, 3, 7, 9), utc(2026, 3, 10, 18, 45)) == utc(2026, 3, 13, 9)
    assert len(timed(upcoming, every_three, utc(2026, 3, 7, 9), 50)) == 50


@pytest.mark.parametrize(
    "rule", ["FREQ=DAILY;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO", "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30",
             "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO;COUNT=10000", "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=29;COUNT=10000"],
)
def test_sparse_rules_from_the_year_1_are_bounded_too(rule):
    for anchor, due in ((date(1, 1, 1), date(2026, 3, 1)), (date(1, 1, 1), date(9000, 1, 1))):
        timed(upcoming, series(rule, anchor), due, 50)
        timed(upcoming, series(rule, anchor, from_completion=True), due, 50)


def brute_force_next(rule: str, anchor, previous, not_before) -> object:
    """The reference: the whole series walked from its anchor, as dateutil gives it."""
    text = rule if "WKST" in rule else rule + ";WKST=MO"
    anchor_wall = anchor if isinstance(anchor, datetime) else datetime.combine(anchor, datetime.min.time())
    previous_wall = previous if isinstance(previous, datetime) else datetime.combine(previous, datetime.min.time())
    count = re.search(r"COUNT=(\d+)", text)
    text = re.sub(r";COUNT=\d+", "", text)
    horizon = previous_wall.replace(tzinfo=None, year=previous_wall.year + 40)
    walls = du.rrulestr("RRULE:" + text, dtstart=anchor_wall.replace(tzinfo=None)).replace(until=horizon)
    for index, wall in enumerate(walls, start=1):
        if count and index > int(count.group(1)):
            return None
        due = wall.replace(tzinfo=timezone.utc) if isinstance(anchor, datetime) else wall.date()
        moment = due if isinstance(due, datetime) else dates.end_of_day(due, "UTC")
        if wall > previous_wall.replace(tzinfo=None) and moment > not_before:
            return due
    return NOTHING_WITHIN_40_YEARS


NOTHING_WITHIN_40_YEARS = object()


def random_rule(chance: random.Random) -> str:
    """A rule that matches (dateutil walks a rule that never does to the year 9999, past UNTIL too)."""
    freq = chance.choice(["DAILY", "WEEKLY", "MONTHLY", "YEARLY"])
    parts = [f"FREQ={freq}", f"INTERVAL={chance.choice([1, 1, 2, 3, 5, 7])}"]
    if chance.random() < 0.4:
        if freq == "DAILY":
            parts[1] = f"INTERVAL={chance.choice([1, 2, 3])}"  # 7 days apart, on another weekday: never
        parts.append("BYDAY=" + ",".join(chance.sample(list(WEEKDAY_NAMES), chance.randint(1, 3))))
    if freq != "WEEKLY" and chance.random() < 0.3:
        parts.append(f"BYMONTHDAY={chance.choice([1, 15, 28, -1])}")
    if freq in ("DAILY", "YEARLY") and chance.random() < 0.3:
        parts.append(f"BYMONTH={chance.randint(1, 12)}")
    if len(parts) > 2 and chance.random() < 0.3:
        parts.append(f"BYSETPOS={chance.choice([1, -1])}")
    if chance.random() < 0.3:
        parts.append(f"COUNT={chance.randint(1, 200)}")
    if chance.random() < 0.3:
        parts.append(f"WKST={chance.choice(list(WEEKDAY_NAMES))}")
    return ";".join(parts)


WEEKDAY_NAMES = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


def test_walking_from_near_the_due_date_gives_what_walking_the_whole_series_gives():
    chance = random.Random(23)
    for _ in range(600):
        rule = random_rule(chance)
        start_year = chance.choice([1, 2, 400, 1999, 2024, 9900])
        anchor = date(start_year, chance.randint(1, 12), chance.randint(1, 28))
        if chance.random() < 0.5:
            anchor = datetime.combine(anchor, datetime.min.time(), timezone.utc) + timedelta(hours=chance.randint(0, 23))
        previous = anchor + timedelta(days=chance.randint(0, 400 * 7))
        late = timedelta(days=chance.choice([0, 0, 3, 40, 700]), hours=chance.randint(0, 30))
        moment = previous if isinstance(previous, datetime) else dates.end_of_day(previous, "UTC") - timedelta(seconds=1)
        not_before = moment + late
        expected = brute_force_next(rule, anchor, previous, not_before)
        found = next_due(series(rule, anchor), previous, not_before)
        if expected is NOTHING_WITHIN_40_YEARS:  # a rule that never matches, or (rarely) decades apart
            assert found is None or found - previous > timedelta(days=40 * 365), (rule, anchor, previous, not_before)
        else:
            assert found == expected, (rule, anchor, previous, not_before)
