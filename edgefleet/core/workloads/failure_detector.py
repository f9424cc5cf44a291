"""Liveness: the phi-accrual failure detector (Hayashibara et al., 2004) over heartbeats.

Instead of a fixed timeout, the detector keeps a bounded window of the intervals between
heartbeat arrivals and asks how surprising the current silence is. `phi` is
`-log10(P(a heartbeat arrives later than now))` under a normal model of the intervals:
phi 1 means a 10% chance that the node is merely late, phi 8 one in a hundred million.
As in Akka and Cassandra, the model's standard deviation has a floor (`min_std_s`, so a
perfectly regular link does not make a single late packet look fatal) and its mean is
padded by an acceptable pause (`acceptable_pause_s`, for GC pauses and lost heartbeats).

Because the window records the intervals actually seen, the detector adapts: on a clean
link a silent node is declared dead quickly, on a lossy link (where two-second gaps are
routine) it waits longer instead of raising false alarms.

Defaults (1 s heartbeats): window 200, std floor 0.1 s, pause margin 3 s, suspect at phi 5,
dead at phi 16. Measured by bench/failover/phi_sim.py: on a clean, jittery link a node that
stops is declared dead 4.4 s later (p95 4.5 s); with 10% of heartbeats lost it takes 6.5 s
(p95 7.3 s), and ten node-days at 10% loss raise no false `dead` (worst phi 9.3).

>>> from datetime import datetime, timedelta, timezone
>>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> state = new_history()
>>> for i in range(20):
...     state = record_heartbeat(state, t0 + timedelta(seconds=i))
>>> classify(phi(state, t0 + timedelta(seconds=19.5)))
<Liveness.ALIVE: 'alive'>
>>> classify(phi(state, t0 + timedelta(seconds=26)))
<Liveness.DEAD: 'dead'>
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from edgefleet.errors import InvalidInput

# Beyond this many standard deviations erfc underflows; use its asymptotic expansion.
_ERFC_TAIL_Z = 20.0
_LOG10_E = math.log10(math.e)
_MICROSECOND = timedelta(microseconds=1)
# A silence longer than this is "never" (and would overflow a datetime): about 300 years.
_NEVER_S = 1e10


class Liveness(StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"


@dataclass(frozen=True)
class DetectorSettings:
    window_size: int = 200  # intervals kept; older ones fall out
    min_std_s: float = 0.1
    acceptable_pause_s: float = 3.0
    first_interval_s: float = 1.0  # assumed interval before two heartbeats were seen
    min_samples: int = 2  # below this, the first interval stands in for the history


@dataclass(frozen=True)
class Thresholds:
    suspect_phi: float = 5.0
    dead_phi: float = 16.0

    def __post_init__(self) -> None:
        if not 0 < self.suspect_phi <= self.dead_phi:
            raise InvalidInput("thresholds: need 0 < suspect_phi <= dead_phi")


DEFAULT_SETTINGS = DetectorSettings()
DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class HeartbeatHistory:
    """The detector's state for one device: plain data, safe to store and compare.

    Intervals are whole microseconds so that the running sums are exact integers: the
    statistics cost O(1) per call and never drift, however long the device lives.
    """

    intervals_us: tuple[int, ...] = ()
    sum_us: int = 0
    sum_sq_us2: int = 0
    last_heartbeat_at: datetime | None = None


def new_history() -> HeartbeatHistory:
    return HeartbeatHistory()


def record_heartbeat(
    state: HeartbeatHistory, at: datetime, settings: DetectorSettings = DEFAULT_SETTINGS
) -> HeartbeatHistory:
    """The history after a heartbeat arrived at `at`; a late or duplicate one changes nothing."""
    if state.last_heartbeat_at is None:
        return HeartbeatHistory(last_heartbeat_at=at)
    delta = at - state.last_heartbeat_at
    interval_us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if interval_us <= 0:
        return state
    intervals = (*state.intervals_us, interval_us)
    sum_us = state.sum_us + interval_us
    sum_sq = state.sum_sq_us2 + interval_us * interval_us
    if len(intervals) > settings.window_size:
        dropped = intervals[: len(intervals) - settings.window_size]
        intervals = intervals[len(dropped) :]
        sum_us -= sum(dropped)
        sum_sq -= sum(d * d for d in dropped)
    return HeartbeatHistory(intervals, sum_us, sum_sq, at)


def interval_stats(
    state: HeartbeatHistory, settings: DetectorSettings = DEFAULT_SETTINGS
) -> tuple[float, float]:
    """(mean, std) in seconds of the modelled interval, pause margin and std floor applied."""
    n = len(state.intervals_us)
    if n < settings.min_samples:
        mean_s = settings.first_interval_s
        std_s = mean_s / 4
    else:
        mean_s = state.sum_us / n / 1e6
        variance_us2 = (n * state.sum_sq_us2 - state.sum_us * state.sum_us) / (n * n)
        std_s = math.sqrt(max(0.0, variance_us2)) / 1e6
    return mean_s + settings.acceptable_pause_s, max(std_s, settings.min_std_s)


def phi(
    state: HeartbeatHistory, now: datetime, settings: DetectorSettings = DEFAULT_SETTINGS
) -> float:
    """Suspicion that the device is gone: -log10 of the chance its next heartbeat is late.

    A device never heard from has phi 0 (nothing is known, nothing is suspected).
    """
    if state.last_heartbeat_at is None:
        return 0.0
    elapsed_s = max(0.0, (now - state.last_heartbeat_at).total_seconds())
    mean_s, std_s = interval_stats(state, settings)
    return _phi_normal((elapsed_s - mean_s) / std_s)


def _phi_normal(z: float) -> float:
    """-log10 of the upper tail of the standard normal distribution at z."""
    x = z / math.sqrt(2.0)
    if x < _ERFC_TAIL_Z:
        tail = 0.5 * math.erfc(x)
        return -math.log10(tail) if tail > 0 else math.inf
    # erfc(x) ~ exp(-x^2) / (x * sqrt(pi)) for large x, taken in logarithms.
    ln_tail = math.log(0.5) - x * x - math.log(x * math.sqrt(math.pi))
    return -ln_tail * _LOG10_E


def classify(phi_value: float, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> Liveness:
    """alive below suspect_phi, dead at or above dead_phi, suspect in between."""
    if phi_value >= thresholds.dead_phi:
        return Liveness.DEAD
    if phi_value >= thresholds.suspect_phi:
        return Liveness.SUSPECT
    return Liveness.ALIVE


def seconds_until(
    state: HeartbeatHistory,
    phi_value: float,
    now: datetime,
    settings: DetectorSettings = DEFAULT_SETTINGS,
) -> float | None:
    """Seconds from `now` until phi reaches `phi_value` if no heartbeat arrives (0 if past).

    Lets a controller sleep until the next state change instead of polling.
    """
    if state.last_heartbeat_at is None:
        return None
    mean_s, std_s = interval_stats(state, settings)
    low, high = 0.0, 1.0
    while _phi_normal((high - mean_s) / std_s) < phi_value:
        high *= 2
        if high > 1e9:
            return None
    for _ in range(60):
        mid = (low + high) / 2
        if _phi_normal((mid - mean_s) / std_s) < phi_value:
            low = mid
        else:
            high = mid
    elapsed_s = (now - state.last_heartbeat_at).total_seconds()
    return max(0.0, high - elapsed_s)


def phi_reaches_at(
    state: HeartbeatHistory, phi_value: float, settings: DetectorSettings = DEFAULT_SETTINGS
) -> datetime | None:
    """The first instant, to the microsecond, at which `phi` reaches `phi_value` if no
    heartbeat arrives after the last one; None for a device never heard from (or never).

    phi grows with the silence alone, so a controller need not judge a node again before
    then. The standard score at which phi reaches the value depends on the value only (found
    once by bisection); the instant follows from the history's mean and deviation, then is
    checked against `phi` itself to the microsecond.

    >>> from datetime import datetime, timedelta, timezone
    >>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> state = new_history()
    >>> for i in range(20):
    ...     state = record_heartbeat(state, t0 + timedelta(seconds=i))
    >>> at = phi_reaches_at(state, 16.0)
    >>> phi(state, at - timedelta(microseconds=1)) < 16.0 <= phi(state, at)
    True
    """
    last = state.last_heartbeat_at
    z = _z_of_phi(phi_value)
    if last is None or z is None:
        return None
    mean_s, std_s = interval_stats(state, settings)
    elapsed_s = max(0.0, mean_s + z * std_s)
    if elapsed_s > _NEVER_S:
        return None
    at = last + timedelta(microseconds=math.ceil(elapsed_s * 1e6))
    # Rounding: step to the exact microsecond (a few steps at most).
    for _ in range(1000):
        if phi(state, at, settings) >= phi_value:
            break
        at += _MICROSECOND
    for _ in range(1000):
        if at <= last or phi(state, at - _MICROSECOND, settings) < phi_value:
            break
        at -= _MICROSECOND
    return at


@functools.lru_cache(maxsize=64)
def _z_of_phi(phi_value: float) -> float | None:
    """The smallest standard score at which `_phi_normal` reaches `phi_value` (bisection);
    None if it never does."""
    if phi_value <= 0:
        return -math.inf
    low, high = -40.0, 1.0
    while _phi_normal(high) < phi_value:
        high *= 2
        if high > 1e9:
            return None
    for _ in range(200):
        mid = (low + high) / 2
        if mid in (low, high):
            break
        if _phi_normal(mid) < phi_value:
            low = mid
        else:
            high = mid
    return high
