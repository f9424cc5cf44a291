from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.core.rollouts.maintenance import (
    MaintenanceWindow,
    any_window_open,
    next_opening,
    next_window_start,
    parse_cron,
    parse_window,
    previous_window_start,
    usable_time_zone,
    window_open,
    window_zone,
)
from edgefleet.errors import InvalidInput


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def window(cron: str, duration_s: float, zone: str = "device") -> MaintenanceWindow:
    return MaintenanceWindow(parse_cron(cron), duration_s, zone)


# --- cron parsing ---------------------------------------------------------------------------


def test_cron_fields_lists_ranges_and_steps() -> None:
    cron = parse_cron("*/15 2-4,22 1,15 jan-mar mon-fri")
    assert cron.minutes == (0, 15, 30, 45)
    assert cron.hours == (2, 3, 4, 22)
    assert cron.days_of_month == {1, 15}
    assert cron.months == {1, 2, 3}
    assert cron.days_of_week == {1, 2, 3, 4, 5}


def test_cron_start_with_step_runs_to_the_field_maximum() -> None:
    assert parse_cron("5/20 * * * *").minutes == (5, 25, 45)
    assert parse_cron("0 10-16/3 * * *").hours == (10, 13, 16)


def test_cron_sunday_is_zero_or_seven_and_names_are_case_insensitive() -> None:
    assert parse_cron("0 0 * * 7").days_of_week == {0}
    assert parse_cron("0 0 * * SUN,Sat").days_of_week == {0, 6}
    assert parse_cron("0 0 * DEC *").months == {12}


@pytest.mark.parametrize(
    ("macro", "expanded"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
    ],
)
def test_cron_macros(macro: str, expanded: str) -> None:
    a, b = parse_cron(macro), parse_cron(expanded)
    assert (a.minutes, a.hours, a.days_of_month, a.months, a.days_of_week) == (
        b.minutes,
        b.hours,
        b.days_of_month,
        b.months,
        b.days_of_week,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 2 * *", "expected 5 fields"),
        ("60 2 * * *", "minute value 60 is outside 0-59"),
        ("0 24 * * *", "hour value 24"),
        ("0 2 0 * *", "day-of-month value 0"),
        ("0 2 * 13 *", "month value 13"),
        ("0 2 * * 8", "day-of-week value 8"),
        ("0 5-2 * * *", "runs backwards"),
        ("*/0 * * * *", "step '0' must be a positive number"),
        ("0 2 * * funday", "day-of-week value 'funday'"),
        ("0 2 , * *", "day-of-month value ''"),
        ("0 0 30 2 *", "no month has such a day"),
        ("0 0 31 4,6 *", "no month has such a day"),
    ],
)
def test_cron_errors_name_the_field(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_cron(text)


def test_cron_february_29th_is_valid_and_found_in_a_leap_year() -> None:
    w = window("0 0 29 2 *", 3600, "UTC")
    assert next_window_start(w, None, utc(2026, 3, 1)) == utc(2028, 2, 29)


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    cron = parse_cron("0 3 1 * mon")  # the 1st of each month, and every Monday
    assert cron.matches_day(date(2026, 7, 1))  # a Wednesday
    assert cron.matches_day(date(2026, 7, 6))  # a Monday
    assert not cron.matches_day(date(2026, 7, 2))


def test_day_fields_starting_with_star_do_not_widen_the_other() -> None:
    assert not parse_cron("0 3 1 * *").matches_day(date(2026, 7, 6))
    assert not parse_cron("0 3 * * mon").matches_day(date(2026, 7, 1))
    # `*/2` starts with `*`, so it is unrestricted in the OR rule (as in Vixie cron): the
    # day must be odd AND a Monday.
    odd_mondays = parse_cron("0 3 */2 * mon")
    assert odd_mondays.matches_day(date(2026, 7, 13))  # Monday the 13th
    assert not odd_mondays.matches_day(date(2026, 7, 6))  # Monday the 6th
    assert not odd_mondays.matches_day(date(2026, 7, 1))  # Wednesday the 1st


# --- windows in a fixed zone ----------------------------------------------------------------


def test_window_opens_at_its_start_and_closes_after_its_duration() -> None:
    w = window("0 2 * * *", 2 * 3600, "UTC")
    assert not window_open(w, None, utc(2026, 1, 5, 1, 59))
    assert window_open(w, None, utc(2026, 1, 5, 2, 0))
    assert window_open(w, None, utc(2026, 1, 5, 3, 59, 59))
    assert not window_open(w, None, utc(2026, 1, 5, 4, 0))


def test_window_across_midnight_and_longer_than_a_day() -> None:
    late = window("0 22 * * *", 4 * 3600, "UTC")
    assert window_open(late, None, utc(2026, 1, 6, 1, 30))
    weekend = window("0 18 * * fri", 2 * 86400 + 12 * 3600, "UTC")  # Fri 18:00 to Mon 06:00
    assert window_open(weekend, None, utc(2026, 1, 11, 12, 0))  # Sunday
    assert window_open(weekend, None, utc(2026, 1, 12, 5, 59))  # Monday early
    assert not window_open(weekend, None, utc(2026, 1, 12, 6, 0))


def test_window_in_a_named_zone_ignores_the_device_zone() -> None:
    w = window("0 2 * * *", 3600, "Asia/Kolkata")  # 02:00 IST is 20:30 UTC
    assert window_open(w, "America/New_York", utc(2026, 1, 4, 20, 45))


def test_window_in_device_time_follows_each_device() -> None:
    w = window("0 2 * * *", 3600)
    now = utc(2026, 1, 5, 1, 30)  # 02:30 in Berlin, 20:30 the day before in New York
    assert window_open(w, "Europe/Berlin", now)
    assert not window_open(w, "America/New_York", now)
    assert next_window_start(w, "America/New_York", now) == utc(2026, 1, 5, 7, 0)
    assert not window_open(w, None, now)  # no zone known: UTC
    assert window_open(w, None, utc(2026, 1, 5, 2, 30))


def test_unknown_zone() -> None:
    with pytest.raises(InvalidInput, match="unknown time zone 'Mars/Olympus'"):
        window_zone(window("0 2 * * *", 60), "Mars/Olympus")
    assert usable_time_zone("Mars/Olympus") is None
    assert usable_time_zone("../../etc/passwd") is None
    assert usable_time_zone("Europe/Berlin") == "Europe/Berlin"
    assert usable_time_zone(None) is None


def test_naive_now_is_refused() -> None:
    with pytest.raises(InvalidInput, match="no time zone"):
        window_open(window("0 2 * * *", 60), None, datetime(2026, 1, 1))


def test_several_windows() -> None:
    windows = [window("0 2 * * *", 3600, "UTC"), window("0 14 * * sat", 3600, "UTC")]
    assert any_window_open(windows, None, utc(2026, 1, 10, 14, 30))
    assert not any_window_open(windows, None, utc(2026, 1, 10, 15, 30))
    assert next_opening(windows, None, utc(2026, 1, 10, 3, 0)) == utc(2026, 1, 10, 14, 0)
    assert any_window_open([], None, utc(2026, 1, 10))  # no windows: no restriction
    assert next_opening([], None, utc(2026, 1, 10)) is None


def test_next_start_at_a_start_is_that_start() -> None:
    w = window("0 2 * * *", 3600, "UTC")
    assert next_window_start(w, None, utc(2026, 1, 5, 2, 0)) == utc(2026, 1, 5, 2, 0)
    assert next_window_start(w, None, utc(2026, 1, 5, 2, 0, 1)) == utc(2026, 1, 6, 2, 0)


# --- daylight-saving time -------------------------------------------------------------------
# Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET.
# America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST.


def test_berlin_spring_forward_start_in_the_gap_is_shifted_by_the_gap() -> None:
    w = window("30 2 * * *", 3600)
    # The day before: 02:30 CET = 01:30 UTC. On the day, 02:30 does not exist: the window
    # starts at 03:30 CEST = 01:30 UTC and still lasts an hour. The day after: 00:30 UTC.
    assert next_window_start(w, "Europe/Berlin", utc(2026, 3, 28)) == utc(2026, 3, 28, 1, 30)
    assert next_window_start(w, "Europe/Berlin", utc(2026, 3, 29)) == utc(2026, 3, 29, 1, 30)
    assert next_window_start(w, "Europe/Berlin", utc(2026, 3, 30)) == utc(2026, 3, 30, 0, 30)
    assert not window_open(w, "Europe/Berlin", utc(2026, 3, 29, 1, 29))
    assert window_open(w, "Europe/Berlin", utc(2026, 3, 29, 1, 30))
    assert window_open(w, "Europe/Berlin", utc(2026, 3, 29, 2, 29))
    assert not window_open(w, "Europe/Berlin", utc(2026, 3, 29, 2, 30))


def test_berlin_spring_forward_window_spanning_the_gap_lasts_its_elapsed_duration() -> None:
    w = window("0 1 * * *", 2 * 3600)  # 01:00 CET = 00:00 UTC, two hours of real time
    assert window_open(w, "Europe/Berlin", utc(2026, 3, 29, 1, 59))  # 03:59 CEST
    assert not window_open(w, "Europe/Berlin", utc(2026, 3, 29, 2, 0))  # 04:00 CEST


def test_berlin_fall_back_repeated_start_opens_once_at_the_first_occurrence() -> None:
    w = window("30 2 * * *", 1800)
    first = utc(2026, 10, 25, 0, 30)  # 02:30 CEST
    assert next_window_start(w, "Europe/Berlin", utc(2026, 10, 25)) == first
    assert window_open(w, "Europe/Berlin", utc(2026, 10, 25, 0, 45))
    # 02:30 CET (the second 02:30) is not a start.
    assert not window_open(w, "Europe/Berlin", utc(2026, 10, 25, 1, 45))
    assert next_window_start(w, "Europe/Berlin", first + timedelta(seconds=1)) == utc(
        2026, 10, 26, 1, 30
    )


def test_new_york_spring_forward() -> None:
    w = window("30 2 * * *", 3600)
    # 02:30 EST on 2026-03-08 does not exist: the window starts at 03:30 EDT = 07:30 UTC.
    assert next_window_start(w, "America/New_York", utc(2026, 3, 8)) == utc(2026, 3, 8, 7, 30)
    assert window_open(w, "America/New_York", utc(2026, 3, 8, 8, 0))
    assert next_window_start(w, "America/New_York", utc(2026, 3, 9)) == utc(2026, 3, 9, 6, 30)


def test_new_york_fall_back() -> None:
    w = window("30 1 * * *", 1800)
    start = utc(2026, 11, 1, 5, 30)  # 01:30 EDT, the first 01:30
    assert next_window_start(w, "America/New_York", utc(2026, 11, 1)) == start
    assert window_open(w, "America/New_York", utc(2026, 11, 1, 5, 45))
    assert not window_open(w, "America/New_York", utc(2026, 11, 1, 6, 45))  # 01:45 EST
    assert next_window_start(w, "America/New_York", start + timedelta(minutes=1)) == utc(
        2026, 11, 2, 6, 30
    )


def test_hourly_window_on_a_fall_back_day_skips_the_repeated_hour() -> None:
    w = window("0 * * * *", 1800)
    assert window_open(w, "Europe/Berlin", utc(2026, 10, 25, 0, 10))  # 02:10 CEST
    assert not window_open(w, "Europe/Berlin", utc(2026, 10, 25, 1, 10))  # 02:10 CET
    assert window_open(w, "Europe/Berlin", utc(2026, 10, 25, 2, 10))  # 03:10 CET


# --- properties -----------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
# Instants around the 2026 transitions of those zones, and ordinary days.
ANCHORS = [
    utc(2026, 3, 29),
    utc(2026, 10, 25),
    utc(2026, 3, 8, 6),
    utc(2026, 11, 1, 5),
    utc(2026, 4, 4, 14),
    utc(2026, 10, 3, 15),
    utc(2026, 6, 15),
]


@st.composite
def crons(draw: st.DrawFn) -> str:
    minutes = draw(st.sampled_from(["0", "30", "*/20", "15,45", "*"]))
    hours = draw(st.sampled_from(["*", "2", "1-3", "*/6", "0,12,23"]))
    dow = draw(st.sampled_from(["*", "sun", "mon-fri", "0,6"]))
    return f"{minutes} {hours} * * {dow}"


def brute_force_open(w: MaintenanceWindow, zone_name: str, now: datetime) -> bool:
    """Every local wall-clock minute around `now`, matched and mapped with fold=0."""
    zone = ZoneInfo(zone_name)
    duration = timedelta(seconds=w.duration_s)
    local_now = now.astimezone(zone).replace(tzinfo=None)
    wall = (local_now - duration - timedelta(hours=30)).replace(second=0, microsecond=0)
    while wall <= local_now + timedelta(hours=30):
        if w.cron.matches(wall):
            start = wall.replace(tzinfo=zone).astimezone(UTC)
            if start <= now < start + duration:
                return True
        wall += timedelta(minutes=1)
    return False


@settings(max_examples=40)
@given(
    cron=crons(),
    zone=st.sampled_from(ZONES),
    anchor=st.sampled_from(ANCHORS),
    offset_min=st.integers(0, 36 * 60),
    duration_min=st.integers(1, 6 * 60),
)
def test_window_open_matches_a_brute_force_scan(
    cron: str, zone: str, anchor: datetime, offset_min: int, duration_min: int
) -> None:
    w = window(cron, duration_min * 60)
    now = anchor + timedelta(minutes=offset_min, seconds=7)
    assert window_open(w, zone, now) == brute_force_open(w, zone, now)


@settings(max_examples=60)
@given(
    cron=crons(),
    zone=st.sampled_from(ZONES),
    anchor=st.sampled_from(ANCHORS),
    offset_min=st.integers(0, 48 * 60),
)
def test_next_start_is_a_start_and_nothing_starts_before_it(
    cron: str, zone: str, anchor: datetime, offset_min: int
) -> None:
    w = window(cron, 7 * 86400)  # long enough for previous_window_start to see far back
    now = anchor + timedelta(minutes=offset_min, seconds=13)
    start = next_window_start(w, zone, now)
    assert start is not None and start >= now
    assert previous_window_start(w, zone, start) == start
    before = previous_window_start(w, zone, start - timedelta(microseconds=1))
    assert before is None or before < now


# --- manifest form --------------------------------------------------------------------------


def test_parse_window() -> None:
    w = parse_window({"cron": "0 2 * * *", "duration": "4h", "time_zone": "Europe/Berlin"}, "w")
    assert (w.duration_s, w.time_zone, str(w.cron)) == (14400, "Europe/Berlin", "0 2 * * *")
    assert parse_window({"cron": "@daily", "duration": 60}, "w").time_zone == "device"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"cron": "0 2 * *", "duration": "1h"}, r"^w\.cron: invalid cron expression"),
        ({"cron": "0 2 * * *"}, r"^w\.duration: required"),
        ({"cron": "0 2 * * *", "duration": "0s"}, r"^w\.duration: duration '0s' must be above 0"),
        ({"cron": "0 2 * * *", "duration": "8d"}, r"^w\.duration: .*at most 604800s"),
        ({"cron": "0 2 * * *", "duration": "1h", "time_zone": "Mars/Base"}, r"^w\.time_zone"),
        ({"cron": "0 2 * * *", "duration": "1h", "tz": "UTC"}, r"^w\.tz: unknown field"),
        ({"duration": "1h"}, r"^w\.cron: expected a non-empty string"),
    ],
)
def test_parse_window_errors_name_the_field(data: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_window(data, "w")
