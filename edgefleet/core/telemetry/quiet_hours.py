"""Quiet hours: when a device is usually idle, learned from its own telemetry.

A device's *activity* in one hour is its request rate relative to its own busiest hour,
averaged with its CPU load (0..1); either signal may be missing. `learn_quiet_hours` folds
hourly activity into a profile of the 168 local hours of the week (the device's own zone,
so a shop camera's closing time is the same hour in winter and summer), each observation
weighted by `0.5 ** (age / half_life)`: the profile follows a device whose habits change.

`forecast_idle` reads the profile for one instant. An hour is *idle* when its learned
activity lies in the lowest `idle_band` of the device's own range (between its quietest
and busiest hours); a device whose range is narrower than `FLAT_RANGE`, or than
`NOISE_MULTIPLE` times its hour-to-hour spread, has no quiet pattern, and every hour is as
good as another. `forecast_settled_idle` asks the same of the hour before as well: the
first hour of a quiet period often begins busy (a shop closing at 22:10 makes 22:00-23:00
mostly idle), so an install waits until the quiet period has surely begun. The forecast's
*confidence* grows with the evidence behind the hour (decayed weeks seen: 1 week gives 0.5,
3 weeks 0.75) and shrinks with the spread of what was seen in it.

>>> from datetime import UTC, datetime, timedelta
>>> start = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
>>> samples = [
...     HourSample(start + timedelta(hours=h), requests_per_s=0.1 if h % 24 < 6 else 5.0)
...     for h in range(21 * 24)
... ]
>>> profile = learn_quiet_hours(samples, start + timedelta(days=21), "UTC")
>>> forecast_idle(profile, datetime(2026, 3, 23, 3, tzinfo=UTC)).idle
True
>>> forecast_idle(profile, datetime(2026, 3, 23, 12, tzinfo=UTC)).idle
False
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edgefleet.core.telemetry.rollup import HourTotal
from edgefleet.errors import InvalidInput

REQUESTS_METRIC = "inference.requests"  # a counter: requests per window
CPU_METRIC = "host.cpu.percent"  # a gauge
HOURS_PER_WEEK = 168
DEFAULT_HALF_LIFE_S = 14 * 86400.0
DEFAULT_IDLE_BAND = 0.15  # idle: within 15 % of the device's range above its quietest hour
DEFAULT_MIN_CONFIDENCE = 0.5
FLAT_RANGE = 0.1  # activity range (0..1) below which a device has no quiet pattern
NOISE_MULTIPLE = 4.0  # ... nor has one whose range is within this many times its noise
_HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class HourSample:
    """What a device did in the hour starting at `hour` (UTC); None: not measured."""

    hour: datetime
    requests_per_s: float | None = None
    cpu_percent: float | None = None


@dataclass(frozen=True)
class QuietHours:
    """A device's learned activity per local hour of the week (Monday 00:00 is hour 0)."""

    time_zone: str
    activity: tuple[float, ...]  # decayed mean activity per hour of the week, 0..1
    spread: tuple[float, ...]  # decayed standard deviation of it
    evidence: tuple[float, ...]  # decayed weight: about the number of weeks seen
    learned_at: datetime

    def __post_init__(self) -> None:
        lengths = {len(self.activity), len(self.spread), len(self.evidence)}
        if lengths != {HOURS_PER_WEEK}:
            raise InvalidInput(f"a quiet-hours profile has {HOURS_PER_WEEK} hours")

    @property
    def known(self) -> bool:
        return any(e > 0 for e in self.evidence)

    def band(self) -> tuple[float, float]:
        """The device's quietest and busiest learned hourly activity."""
        seen = [a for a, e in zip(self.activity, self.evidence, strict=True) if e > 0]
        return (min(seen), max(seen)) if seen else (0.0, 0.0)


@dataclass(frozen=True)
class IdleForecast:
    idle: bool
    confidence: float  # 0..1
    activity: float | None  # the hour's learned activity, None when never seen
    reason: str


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown time zone {name!r}") from None


def hour_of_week(at: datetime, time_zone: str) -> int:
    """The local hour of the week of `at` (aware) in `time_zone`: Monday 00:00-01:00 is 0.

    >>> hour_of_week(datetime(2026, 3, 3, 23, 30, tzinfo=UTC), "Europe/Berlin")  # Wed 00:30
    48
    """
    if at.tzinfo is None:
        raise InvalidInput(f"time {at.isoformat()} has no time zone; pass UTC")
    local = at.astimezone(_zone(time_zone))
    return local.weekday() * 24 + local.hour


def hour_samples(totals: Iterable[HourTotal]) -> list[HourSample]:
    """Hourly samples of one device from its hourly totals of `REQUESTS_METRIC` and
    `CPU_METRIC` (raw windows and rollups added up by the store): the request rate over the
    seconds the windows cover, the mean CPU reading.

    >>> hour_samples([HourTotal("d", REQUESTS_METRIC, 3600, 360.0, 3, 180)])[0].requests_per_s
    2.0
    """
    requests: dict[int, tuple[float, int]] = {}
    cpu: dict[int, tuple[float, int]] = {}
    for t in totals:
        if t.name == REQUESTS_METRIC and t.covered_s > 0:
            requests[t.hour_s] = (t.sum, t.covered_s)
        elif t.name == CPU_METRIC and t.count > 0:
            cpu[t.hour_s] = (t.sum, t.count)
    return [
        HourSample(
            datetime.fromtimestamp(hour_s, UTC),
            requests_per_s=requests[hour_s][0] / requests[hour_s][1]
            if hour_s in requests
            else None,
            cpu_percent=cpu[hour_s][0] / cpu[hour_s][1] if hour_s in cpu else None,
        )
        for hour_s in sorted(requests.keys() | cpu.keys())
    ]


def _activities(samples: Sequence[HourSample]) -> list[tuple[datetime, float]]:
    """Each sample's activity: request rate against the busiest hour, CPU against 100 %."""
    peak = max((s.requests_per_s or 0.0 for s in samples), default=0.0)
    out = []
    for s in samples:
        parts = []
        if s.requests_per_s is not None and peak > 0:
            parts.append(min(max(s.requests_per_s / peak, 0.0), 1.0))
        if s.cpu_percent is not None:
            parts.append(min(max(s.cpu_percent / 100.0, 0.0), 1.0))
        if parts:
            out.append((s.hour, sum(parts) / len(parts)))
    return out


def learn_quiet_hours(
    samples: Iterable[HourSample],
    now: datetime,
    time_zone: str,
    *,
    half_life_s: float = DEFAULT_HALF_LIFE_S,
) -> QuietHours:
    """The profile of `samples` (any order; samples after `now` are ignored)."""
    if half_life_s <= 0:
        raise InvalidInput("half_life_s must be positive")
    _zone(time_zone)
    weight = [0.0] * HOURS_PER_WEEK
    total = [0.0] * HOURS_PER_WEEK
    squares = [0.0] * HOURS_PER_WEEK
    past = [s for s in samples if s.hour <= now]
    for hour, activity in _activities(past):
        w = 0.5 ** ((now - hour).total_seconds() / half_life_s)
        i = hour_of_week(hour, time_zone)
        weight[i] += w
        total[i] += w * activity
        squares[i] += w * activity * activity
    activity_out, spread_out = [], []
    for w, t, sq in zip(weight, total, squares, strict=True):
        mean = t / w if w > 0 else 0.0
        activity_out.append(mean)
        spread_out.append(math.sqrt(max(0.0, sq / w - mean * mean)) if w > 0 else 0.0)
    return QuietHours(time_zone, tuple(activity_out), tuple(spread_out), tuple(weight), now)


def forecast_idle(
    profile: QuietHours, at: datetime, *, idle_band: float = DEFAULT_IDLE_BAND
) -> IdleForecast:
    """Whether the device is predicted idle at `at`, with a confidence and a reason."""
    i = hour_of_week(at, profile.time_zone)
    evidence = profile.evidence[i]
    if evidence <= 0:
        return IdleForecast(False, 0.0, None, "no telemetry for this hour of the week yet")
    low, high = profile.band()
    activity, spread = profile.activity[i], profile.spread[i]
    seen = evidence / (evidence + 1.0)
    width = high - low
    noise = sum(s * e for s, e in zip(profile.spread, profile.evidence, strict=True)) / sum(
        profile.evidence
    )
    if width < max(FLAT_RANGE, NOISE_MULTIPLE * noise):
        return IdleForecast(
            True, seen, activity, f"no quiet pattern (activity {low:.2f}-{high:.2f})"
        )
    confidence = seen * max(0.0, 1.0 - spread / width)
    threshold = low + idle_band * width
    if activity <= threshold:
        return IdleForecast(
            True, confidence, activity, f"usually idle now (activity {activity:.2f} <= "
            f"{threshold:.2f})"
        )  # fmt: skip
    return IdleForecast(
        False, confidence, activity, f"usually busy now (activity {activity:.2f} > "
        f"{threshold:.2f})"
    )  # fmt: skip


def expected_activity(profile: QuietHours, at: datetime) -> float | None:
    """The learned activity of the hour of the week `at` falls in; None if never seen."""
    i = hour_of_week(at, profile.time_zone)
    return profile.activity[i] if profile.evidence[i] > 0 else None


def forecast_settled_idle(
    profile: QuietHours, at: datetime, *, idle_band: float = DEFAULT_IDLE_BAND
) -> IdleForecast:
    """`forecast_idle` for `at` and the hour before it: idle only when both are, with the
    lower confidence."""
    now = forecast_idle(profile, at, idle_band=idle_band)
    before = forecast_idle(profile, at - _HOUR, idle_band=idle_band)
    if now.idle and not before.idle:
        return IdleForecast(
            False, min(now.confidence, before.confidence), now.activity,
            f"the quiet period begins this hour ({now.reason}); waiting for it to settle",
        )  # fmt: skip
    return replace(now, confidence=min(now.confidence, before.confidence)) if now.idle else now


def next_idle_start(
    profile: QuietHours,
    now: datetime,
    within_s: float,
    *,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    idle_band: float = DEFAULT_IDLE_BAND,
) -> datetime | None:
    """The start of the first hour after `now`, within `within_s`, predicted idle (settled)
    with at least `min_confidence`; None when there is none."""
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + _HOUR
    end = now + timedelta(seconds=within_s)
    while hour <= end:
        f = forecast_settled_idle(profile, hour, idle_band=idle_band)
        if f.idle and f.confidence >= min_confidence:
            return hour
        hour += _HOUR
    return None
