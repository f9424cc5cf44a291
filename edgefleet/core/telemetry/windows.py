"""Windows: metric points aggregated on the device over fixed, clock-aligned time spans.

A *series* is a metric name, a kind and a tag set. The `Aggregator` keeps one open window per
series; a window covers `[start_s, start_s + length_s)` in Unix seconds, aligned to multiples
of its length so windows from different devices line up on the server. It holds count, sum,
min, max and last value, plus a DDSketch of the values for timings. Raw points never leave
the device: only closed windows do.

The aggregator never reads a clock: every call takes `now`, so the agent, the simulator and
tests drive it alike. The window length of each metric comes from a function (normally the
sampling decision's `window_s_for`); returning None switches a metric off.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from edgefleet.core.telemetry.sketch import DEFAULT_ALPHA, DEFAULT_MAX_BUCKETS, DDSketch
from edgefleet.errors import InvalidInput

MAX_WINDOW_S = 3600
DEFAULT_WINDOW_S = 60
DEFAULT_MAX_SERIES = 2000
# Sums of decimal inputs (`12.3`, `0.045`) are kept exact up to this many decimal places.
MAX_EXACT_DECIMALS = 6

Tags = tuple[tuple[str, str], ...]
WindowLengthFor = Callable[[str], int | None]


class MetricKind(StrEnum):
    COUNTER = "counter"  # increments; the window's sum is the total over the window
    GAUGE = "gauge"  # a level sampled now and then; last is the latest reading
    TIMING = "timing"  # a duration or any distribution worth quantiles; has a sketch


class RejectReason(StrEnum):
    INACTIVE = "inactive"  # the metric belongs to no active set
    SERIES_LIMIT = "series_limit"  # too many open series
    KIND_CONFLICT = "kind_conflict"  # the same name and tags seen with another kind
    BAD_VALUE = "bad_value"  # NaN, infinite, or a non-positive weight


def normalize_tags(tags: Iterable[tuple[str, str]] | dict[str, str] | None) -> Tags:
    """Tags as a sorted tuple of pairs, the one form used as a key everywhere."""
    if not tags:
        return ()
    pairs = tags.items() if isinstance(tags, dict) else tags
    return tuple(sorted(pairs))


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One raw observation. `weight` counts it several times (a StatsD `@0.1` sample rate)."""

    name: str
    kind: MetricKind
    value: float
    tags: Tags = ()
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Distribution:
    """Timings aggregated elsewhere (a histogram a workload exported): (value, count) pairs
    standing for its observations, and their exact sum."""

    name: str
    tags: Tags
    values: tuple[tuple[float, int], ...]
    total: float


@dataclass(frozen=True)
class Window:
    """The aggregate of one series over `[start_s, start_s + length_s)`."""

    name: str
    kind: MetricKind
    tags: Tags
    start_s: int
    length_s: int
    count: int
    sum: float
    min: float
    max: float
    last: float
    sketch: DDSketch | None = None

    @property
    def end_s(self) -> int:
        return self.start_s + self.length_s

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.start_s, UTC)

    @property
    def mean(self) -> float:
        return self.sum / self.count


def merge_windows(earlier: Window, later: Window) -> Window:
    """One window covering two adjacent windows of the same series (for rollups)."""
    if (earlier.name, earlier.kind, earlier.tags) != (later.name, later.kind, later.tags):
        raise InvalidInput("cannot merge windows of different series", code="window_mismatch")
    if later.start_s < earlier.end_s:
        raise InvalidInput("windows to merge overlap or are out of order", code="window_mismatch")
    sketch = None
    if earlier.sketch is not None and later.sketch is not None:
        sketch = earlier.sketch.copy()
        sketch.merge(later.sketch)
    return replace(
        earlier,
        length_s=later.end_s - earlier.start_s,
        count=earlier.count + later.count,
        sum=earlier.sum + later.sum,
        min=min(earlier.min, later.min),
        max=max(earlier.max, later.max),
        last=later.last,
        sketch=sketch,
    )


def _as_decimal(value: float) -> tuple[int, int] | None:
    """(mantissa, places) with mantissa / 10**places == value, or None beyond 6 places."""
    for places in range(MAX_EXACT_DECIMALS + 1):
        scale = 10**places
        mantissa = round(value * scale)
        if mantissa / scale == value:
            return mantissa, places
    return None


class _OpenWindow:
    """A window being filled. Its sum is exact for decimal inputs (see `_add_to_sum`)."""

    __slots__ = (
        "count",
        "end_s",
        "float_sum",
        "last",
        "max",
        "min",
        "places",
        "scaled_sum",
        "sketch",
        "start_s",
    )

    def __init__(self, start_s: int, end_s: int, sketch: DDSketch | None) -> None:
        self.start_s = start_s
        self.end_s = end_s
        self.sketch = sketch
        self.count = 0
        self.scaled_sum: int | None = 0  # sum * 10**places while every input was decimal
        self.places = 0
        self.float_sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.last = 0.0

    def add(self, value: float, weight: int) -> None:
        self.count += weight
        self._add_to_sum(value, weight)
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.last = value
        if self.sketch is not None:
            self.sketch.add(value, weight)

    def add_many(self, values: Sequence[tuple[float, int]], total: float) -> None:
        """Observations given as (value, count) pairs whose exact sum is `total`."""
        for value, weight in values:
            self.count += weight
            self.min = min(self.min, value)
            self.max = max(self.max, value)
            self.last = value
            if self.sketch is not None:
                self.sketch.add(value, weight)
        self._add_to_sum(total, 1)

    def _add_to_sum(self, value: float, weight: int) -> None:
        # Inputs are usually short decimals (psutil's 12.3, StatsD text "0.045"). Summing them
        # as scaled integers gives the exactly rounded sum instead of accumulated float error,
        # and an exact sum is again a short decimal, which the wire format stores in a few bytes.
        self.float_sum += value * weight
        if self.scaled_sum is None:
            return
        decimal = _as_decimal(value)
        if decimal is None:
            self.scaled_sum = None
            return
        mantissa, places = decimal
        if places > self.places:
            self.scaled_sum *= 10 ** (places - self.places)
            self.places = places
        self.scaled_sum += mantissa * 10 ** (self.places - places) * weight

    def total(self) -> float:
        if self.scaled_sum is None:
            return self.float_sum
        try:
            return float(self.scaled_sum / 10**self.places)
        except OverflowError:
            return self.float_sum


SeriesKey = tuple[str, Tags]


class Aggregator:
    """Folds points into per-series windows and hands out the windows that have ended."""

    def __init__(
        self,
        window_s_for: WindowLengthFor | None = None,
        *,
        max_series: int = DEFAULT_MAX_SERIES,
        sketch_alpha: float = DEFAULT_ALPHA,
        sketch_max_buckets: int = DEFAULT_MAX_BUCKETS,
    ) -> None:
        self._window_s_for: WindowLengthFor = window_s_for or (lambda _name: DEFAULT_WINDOW_S)
        self._max_series = max_series
        self._sketch_alpha = sketch_alpha
        self._sketch_max_buckets = sketch_max_buckets
        self._open: dict[SeriesKey, tuple[MetricKind, _OpenWindow]] = {}
        self._last_end_s: dict[SeriesKey, int] = {}
        self._closed: list[Window] = []
        self.rejected: dict[RejectReason, int] = dict.fromkeys(RejectReason, 0)
        self.accepted = 0

    def set_window_lengths(self, window_s_for: WindowLengthFor) -> None:
        """Use new window lengths from the next window of each series on."""
        self._window_s_for = window_s_for

    @property
    def open_series(self) -> int:
        return len(self._open)

    def add(self, point: MetricPoint, now: datetime) -> None:
        """Fold `point`, observed at `now`, into its series' window; count it if refused."""
        if not math.isfinite(point.value) or point.weight <= 0:
            self.rejected[RejectReason.BAD_VALUE] += 1
            return
        window = self._window_for(point.name, point.kind, point.tags, now)
        if window is not None:
            window.add(float(point.value), point.weight)
            self.accepted += 1

    def add_distribution(self, distribution: Distribution, now: datetime) -> None:
        """Fold pre-aggregated timings, received at `now`, into their series' window."""
        values = distribution.values
        if (not values or not math.isfinite(distribution.total)
                or any(not math.isfinite(v) or n <= 0 for v, n in values)):  # fmt: skip
            self.rejected[RejectReason.BAD_VALUE] += 1
            return
        window = self._window_for(distribution.name, MetricKind.TIMING, distribution.tags, now)
        if window is not None:
            window.add_many(values, distribution.total)
            self.accepted += 1

    def _window_for(
        self, name: str, kind: MetricKind, tags: Tags, now: datetime
    ) -> _OpenWindow | None:
        """The open window of a series at `now` (started if due); None, counted, if refused."""
        now_s = now.timestamp()
        key = (name, tags)
        entry = self._open.get(key)
        if entry is not None:
            open_kind, window = entry
            if open_kind is not kind:
                self.rejected[RejectReason.KIND_CONFLICT] += 1
                return None
            if now_s < window.end_s:
                return window
            self._close(key)
        window_s = self._window_s_for(name)
        if window_s is None:
            self.rejected[RejectReason.INACTIVE] += 1
            return None
        if len(self._open) >= self._max_series:
            self.rejected[RejectReason.SERIES_LIMIT] += 1
            return None
        return self._start(key, kind, window_s, now_s)

    def _start(self, key: SeriesKey, kind: MetricKind, window_s: int, now_s: float) -> _OpenWindow:
        if not 1 <= window_s <= MAX_WINDOW_S:
            raise InvalidInput(
                f"window length for {key[0]} must be 1..{MAX_WINDOW_S} s, got {window_s}",
                code="bad_window_length",
            )
        aligned_s = math.floor(now_s) // window_s * window_s
        # After a length change the aligned start may fall inside the previous window: start
        # where that one ended instead, so windows of a series never overlap.
        start_s = max(aligned_s, self._last_end_s.get(key, aligned_s))
        sketch = None
        if kind is MetricKind.TIMING:
            sketch = DDSketch(self._sketch_alpha, self._sketch_max_buckets)
        end_s = aligned_s + window_s
        if end_s <= start_s:  # the clock stepped back: carry on after the last window
            end_s = start_s // window_s * window_s + window_s
        window = _OpenWindow(start_s, end_s, sketch)
        self._open[key] = (kind, window)
        return window

    def _close(self, key: SeriesKey) -> None:
        kind, window = self._open.pop(key)
        self._last_end_s[key] = window.end_s
        total = window.total()
        if window.sketch is not None:
            window.sketch.sum = total  # the exact sum, so window and sketch agree
        self._closed.append(
            Window(
                name=key[0],
                kind=kind,
                tags=key[1],
                start_s=window.start_s,
                length_s=window.end_s - window.start_s,
                count=window.count,
                sum=total,
                min=window.min,
                max=window.max,
                last=window.last,
                sketch=window.sketch,
            )
        )

    def close_due(self, now: datetime) -> list[Window]:
        """Every window that has ended by `now`, oldest first, each handed out once."""
        now_s = now.timestamp()
        for key in [k for k, (_, w) in self._open.items() if w.end_s <= now_s]:
            self._close(key)
        return self._take_closed(now_s)

    def close_all(self, now: datetime) -> list[Window]:
        """Every window, ended or not (the ones still open are cut short at `now`)."""
        now_s = now.timestamp()
        for _, window in self._open.values():
            window.end_s = max(window.start_s + 1, min(window.end_s, math.ceil(now_s)))
        for key in list(self._open):
            self._close(key)
        return self._take_closed(now_s)

    def _take_closed(self, now_s: float) -> list[Window]:
        closed = sorted(self._closed, key=lambda w: (w.start_s, w.name, w.tags))
        self._closed = []
        # An old end only matters while a new window could still start before it.
        horizon_s = now_s - MAX_WINDOW_S
        self._last_end_s = {k: e for k, e in self._last_end_s.items() if e > horizon_s}
        return closed
