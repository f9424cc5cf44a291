"""Maintenance windows: when a device may be updated, as a cron start time plus a duration,
evaluated on each device's own wall clock.

Cron syntax (five fields, the classic crontab)::

    minute  hour  day-of-month  month  day-of-week
    0-59    0-23  1-31          1-12   0-7 (0 and 7 are Sunday)

Each field is `*`, a value, a range `a-b`, a step `*/n`, `a-b/n` or `a/n` (from a to the
field's maximum), or a comma-separated list of those. Months and weekdays also take
three-letter English names (`jan`, `mon`). The macros `@hourly`, `@daily` (`@midnight`),
`@weekly`, `@monthly` and `@yearly` (`@annually`) are shorthands.

Day-of-month and day-of-week, as in Vixie cron: when both are restricted (neither field
starts with `*`), a day matches if *either* matches (`0 3 1 * mon` is the 1st of each month
and every Monday); when one of them starts with `*`, the other alone decides.

Wall clocks and daylight-saving time. Cron times are local wall-clock times in the window's
zone (an IANA name, or `device` for the device's own zone; a device whose zone is unknown
uses UTC). A window lasts `duration_s` of elapsed time from its start.

- Spring forward: a start time that does not exist that day (02:30 in Europe/Berlin on the
  last Sunday of March) happens as if the clock had not yet moved, i.e. shifted forward by
  the gap (at 03:30 CEST). A window is never silently dropped on a transition day.
- Fall back: a start time that happens twice (02:30 in Europe/Berlin on the last Sunday of
  October) starts a window once, at its first occurrence (02:30 CEST).

>>> w = MaintenanceWindow(parse_cron("0 2 * * *"), duration_s=3600, time_zone="Europe/Berlin")
>>> from datetime import datetime, timezone
>>> window_open(w, None, datetime(2026, 1, 5, 1, 30, tzinfo=timezone.utc))  # 02:30 CET
True
"""

from __future__ import annotations

import bisect
import calendar
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edgefleet.core.manifest import check_keys, read_duration_s, read_mapping, read_string
from edgefleet.errors import InvalidInput

DEVICE_TIME_ZONE = "device"
MAX_WINDOW_DURATION_S = 7 * 86400
# A valid expression matches at least once in any 8 years (29 February included).
_SEARCH_HORIZON_DAYS = 8 * 366 + 2

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTH_NAMES = {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
_WEEKDAY_NAMES = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_DAYS_IN_MONTH_MAX = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTH_NAMES),
    _Field("day-of-week", 0, 7, _WEEKDAY_NAMES),
)


@dataclass(frozen=True)
class CronExpression:
    """A parsed five-field cron expression; build it with `parse_cron`."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0 = Sunday
    day_of_month_restricted: bool
    day_of_week_restricted: bool

    def matches_day(self, day: date) -> bool:
        """True when `day` is a day on which this expression fires (see the OR rule)."""
        if day.month not in self.months:
            return False
        dom = day.day in self.days_of_month
        dow = day.isoweekday() % 7 in self.days_of_week
        if self.day_of_month_restricted and self.day_of_week_restricted:
            return dom or dow
        return dom and dow

    def matches(self, local: datetime) -> bool:
        """True when the wall-clock time `local` is a start time."""
        return (
            local.minute in self.minutes
            and local.hour in self.hours
            and self.matches_day(local.date())
        )

    def __str__(self) -> str:
        return self.text


def _value(text: str, field: _Field, expression: str) -> int:
    if field.names is not None and text.lower() in field.names:
        return field.names[text.lower()]
    if not text.isdigit():
        raise InvalidInput(
            f"invalid cron expression {expression!r}: {field.name} value {text!r} "
            f"is not a number between {field.low} and {field.high}"
        )
    value = int(text)
    if not field.low <= value <= field.high:
        raise InvalidInput(
            f"invalid cron expression {expression!r}: {field.name} value {value} "
            f"is outside {field.low}-{field.high}"
        )
    return value


def _parse_field(text: str, field: _Field, expression: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise InvalidInput(
                    f"invalid cron expression {expression!r}: {field.name} step "
                    f"{step_text!r} must be a positive number"
                )
            step = int(step_text)
        if base == "*":
            start, end = field.low, field.high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _value(first, field, expression), _value(last, field, expression)
            if start > end:
                raise InvalidInput(
                    f"invalid cron expression {expression!r}: {field.name} range {base!r} "
                    "runs backwards"
                )
        else:
            start = _value(base, field, expression)
            end = field.high if slash else start
        values.update(range(start, end + 1, step))
    if field.name == "day-of-week" and 7 in values:
        values = (values - {7}) | {0}
    return frozenset(values)


def parse_cron(text: str) -> CronExpression:
    """Parse a five-field cron expression or macro; raise InvalidInput naming the field.

    >>> parse_cron("*/15 2-4 * * mon-fri").hours
    (2, 3, 4)
    """
    expression = _MACROS.get(text.strip().lower(), text.strip())
    parts = expression.split()
    if len(parts) != 5:
        raise InvalidInput(
            f"invalid cron expression {text!r}: expected 5 fields "
            f"(minute hour day-of-month month day-of-week), got {len(parts)}"
        )
    minute, hour, dom, month, dow = (
        _parse_field(part, field, text) for part, field in zip(parts, _FIELDS, strict=True)
    )
    cron = CronExpression(
        text=text.strip(),
        minutes=tuple(sorted(minute)),
        hours=tuple(sorted(hour)),
        days_of_month=dom,
        months=month,
        days_of_week=dow,
        day_of_month_restricted=not parts[2].startswith("*"),
        day_of_week_restricted=not parts[4].startswith("*"),
    )
    if not cron.day_of_week_restricted and not any(
        d <= _DAYS_IN_MONTH_MAX[m] for d in cron.days_of_month for m in cron.months
    ):
        raise InvalidInput(f"invalid cron expression {text!r}: no month has such a day")
    return cron


@dataclass(frozen=True)
class MaintenanceWindow:
    """A recurring window: it opens at each cron start and stays open for `duration_s`."""

    cron: CronExpression
    duration_s: float
    time_zone: str = DEVICE_TIME_ZONE  # an IANA name, or "device"

    def __str__(self) -> str:
        return f"'{self.cron}' for {self.duration_s:g}s in {self.time_zone}"


def resolve_time_zone(name: str) -> ZoneInfo:
    """The IANA zone called `name`, or InvalidInput."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin or UTC"
        ) from None


def parse_window(value: object, path: str) -> MaintenanceWindow:
    """One entry of `maintenance_windows` in a manifest; InvalidInput names the field path."""
    data = read_mapping(value, path)
    check_keys(data, frozenset({"cron", "duration", "time_zone"}), path)
    text = read_string(data.get("cron"), f"{path}.cron")
    try:
        cron = parse_cron(text)
    except InvalidInput as e:
        raise InvalidInput(f"{path}.cron: {e.message}") from None
    if "duration" not in data:
        raise InvalidInput(f"{path}.duration: required, e.g. 4h")
    zone = read_string(data.get("time_zone", DEVICE_TIME_ZONE), f"{path}.time_zone")
    if zone != DEVICE_TIME_ZONE:
        try:
            resolve_time_zone(zone)
        except InvalidInput as e:
            raise InvalidInput(f"{path}.time_zone: {e.message} (or 'device')") from None
    return MaintenanceWindow(
        cron,
        read_duration_s(data["duration"], f"{path}.duration", MAX_WINDOW_DURATION_S, positive=True),
        zone,
    )


def usable_time_zone(name: str | None) -> str | None:
    """`name` when it is a known IANA zone, else None (windows in device time then use UTC)."""
    if name is None:
        return None
    try:
        resolve_time_zone(name)
    except InvalidInput:
        return None
    return name


def window_zone(window: MaintenanceWindow, device_tz: str | None) -> ZoneInfo:
    """The zone `window` is read in for a device whose own zone is `device_tz`."""
    if window.time_zone == DEVICE_TIME_ZONE:
        return resolve_time_zone(device_tz or "UTC")
    return resolve_time_zone(window.time_zone)


@functools.lru_cache(maxsize=4096)
def starts_on(cron: CronExpression, zone: ZoneInfo, day: date) -> tuple[datetime, ...]:
    """The UTC instants at which `cron` starts a window on local `day` in `zone`, sorted.

    Each local start is read with fold=0, which gives the documented DST semantics: a
    time in a spring-forward gap lands shifted forward by the gap, a repeated time at its
    first occurrence.
    """
    if not cron.matches_day(day):
        return ()
    instants = {
        datetime.combine(day, time(hour, minute), tzinfo=zone).astimezone(UTC)
        for hour in cron.hours
        for minute in cron.minutes
    }
    return tuple(sorted(instants))


def _check_aware(now_utc: datetime) -> None:
    if now_utc.tzinfo is None or now_utc.utcoffset() is None:
        raise InvalidInput(f"time {now_utc.isoformat()} has no time zone; pass UTC")


def previous_window_start(
    window: MaintenanceWindow, device_tz: str | None, now_utc: datetime
) -> datetime | None:
    """The latest start at or before `now_utc` that could still be open, else None."""
    _check_aware(now_utc)
    zone = window_zone(window, device_tz)
    today = now_utc.astimezone(zone).date()
    reach_days = int(window.duration_s // 86400) + 2
    best: datetime | None = None
    for offset in range(-1, reach_days + 1):
        starts = starts_on(window.cron, zone, today - timedelta(days=offset))
        i = bisect.bisect_right(starts, now_utc)
        if i and (best is None or starts[i - 1] > best):
            best = starts[i - 1]
    return best


def window_open(window: MaintenanceWindow, device_tz: str | None, now_utc: datetime) -> bool:
    """True while `now_utc` lies in [start, start + duration) of some start of `window`."""
    start = previous_window_start(window, device_tz, now_utc)
    return start is not None and now_utc < start + timedelta(seconds=window.duration_s)


def next_window_start(
    window: MaintenanceWindow, device_tz: str | None, now_utc: datetime
) -> datetime | None:
    """The earliest start at or after `now_utc` (UTC), or None if none within 8 years."""
    _check_aware(now_utc)
    zone = window_zone(window, device_tz)
    first_day = now_utc.astimezone(zone).date() - timedelta(days=1)
    for offset in range(_SEARCH_HORIZON_DAYS):
        day = first_day + timedelta(days=offset)
        starts = starts_on(window.cron, zone, day)
        i = bisect.bisect_left(starts, now_utc)
        if i < len(starts):
            # A start shifted out of a gap at midnight may belong to the next local day.
            following = starts_on(window.cron, zone, day + timedelta(days=1))
            j = bisect.bisect_left(following, now_utc)
            return min(starts[i], following[j]) if j < len(following) else starts[i]
    return None


def any_window_open(
    windows: Sequence[MaintenanceWindow], device_tz: str | None, now_utc: datetime
) -> bool:
    """True when there are no windows (no restriction) or one of them is open."""
    return not windows or any(window_open(w, device_tz, now_utc) for w in windows)


def next_opening(
    windows: Sequence[MaintenanceWindow], device_tz: str | None, now_utc: datetime
) -> datetime | None:
    """The earliest start of any of `windows` at or after `now_utc`."""
    starts = [s for w in windows if (s := next_window_start(w, device_tz, now_utc)) is not None]
    return min(starts, default=None)


# A policy's allowed windows hold a declared window when each of its openings lies inside
# them: checked over the next 8 weeks (a weekly pattern twice over, a monthly one at least
# once), at most this many openings.
CONTAINMENT_DAYS = 56
CONTAINMENT_OPENINGS = 2000


def first_uncovered(
    window: MaintenanceWindow,
    allowed: Sequence[MaintenanceWindow],
    device_tz: str | None,
    since_utc: datetime,
) -> datetime | None:
    """The first opening of `window` from `since_utc` that is not wholly inside `allowed`
    (one window, or several back to back), or None when every opening checked is."""
    _check_aware(since_utc)
    zone = window_zone(window, device_tz)
    first_day = since_utc.astimezone(zone).date()
    checked = 0
    for offset in range(CONTAINMENT_DAYS):
        for start in starts_on(window.cron, zone, first_day + timedelta(days=offset)):
            if start < since_utc:
                continue
            end = start + timedelta(seconds=window.duration_s)
            if not _covered(start, end, allowed, device_tz):
                return start
            checked += 1
            if checked >= CONTAINMENT_OPENINGS:
                return None
    return None


def _covered(
    start: datetime, end: datetime, allowed: Sequence[MaintenanceWindow], device_tz: str | None
) -> bool:
    moment = start
    while moment < end:
        closes = [
            opened + timedelta(seconds=w.duration_s)
            for w in allowed
            if (opened := previous_window_start(w, device_tz, moment)) is not None
        ]
        reach = max((c for c in closes if c > moment), default=None)
        if reach is None:
            return False
        moment = reach
    return True
