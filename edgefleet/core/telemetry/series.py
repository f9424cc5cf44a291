"""Reading stored windows back: time series for queries, summaries for KPIs and gates.

Windows are grouped into buckets of `step_s` seconds (aligned to multiples of the step, by
window start) and merged across tag sets: counts and sums add up, min and max are the
extremes, `last` is the value of the window that ended last, and quantiles come from the
merged sketches (timings only; None for counters and gauges).

>>> from edgefleet.core.telemetry.windows import MetricKind, Window
>>> ws = [Window("q", MetricKind.GAUGE, (), s, 10, 1, float(s), float(s), float(s), float(s))
...       for s in (0, 10, 20, 30)]
>>> [(p.start_s, p.count, p.mean) for p in series_points(ws, step_s=20)]
[(0, 2, 5.0), (20, 2, 25.0)]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edgefleet.core.telemetry.kpi import MetricWindow
from edgefleet.core.telemetry.rollup import merge_sketches
from edgefleet.core.telemetry.sampling import WINDOW_LADDER_S
from edgefleet.core.telemetry.sketch import DDSketch
from edgefleet.core.telemetry.windows import Window

MAX_POINTS = 2000


@dataclass(frozen=True)
class DeviceWindow:
    """A stored window and the device that sent it."""

    device_id: str
    window: Window


@dataclass(frozen=True)
class SeriesPoint:
    start_s: int
    length_s: int
    count: int
    sum: float
    min: float
    max: float
    last: float
    quantile: float | None  # None: no sketch (counters, gauges) or none asked for
    windows: int

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else math.nan


class Accumulator:
    """Merges windows of one metric (any tags, any order) into one aggregate."""

    __slots__ = ("count", "end_s", "last", "max", "min", "sketches", "start_s", "sum", "windows")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.last = math.nan
        self.start_s: int | None = None
        self.end_s = -1
        self.windows = 0
        self.sketches: list[DDSketch] = []

    def add(self, window: Window) -> None:
        self.windows += 1
        self.count += window.count
        self.sum += window.sum
        self.min = min(self.min, window.min)
        self.max = max(self.max, window.max)
        if window.end_s >= self.end_s:
            self.end_s, self.last = window.end_s, window.last
        if self.start_s is None or window.start_s < self.start_s:
            self.start_s = window.start_s
        if window.sketch is not None:
            self.sketches.append(window.sketch)

    def sketch(self) -> DDSketch | None:
        return merge_sketches(self.sketches)

    def quantiles(self, qs: Iterable[float]) -> dict[float, float]:
        merged = self.sketch()
        if merged is None or merged.count == 0:
            return {}
        return {q: merged.quantile(q) for q in qs}

    def point(self, start_s: int, length_s: int, quantile: float | None) -> SeriesPoint:
        value = self.quantiles([quantile]).get(quantile) if quantile is not None else None
        return SeriesPoint(
            start_s, length_s, self.count, self.sum, self.min, self.max, self.last, value,
            self.windows,
        )  # fmt: skip


def series_points(
    windows: Iterable[Window], step_s: int, quantile: float | None = None
) -> list[SeriesPoint]:
    """One point per `step_s` bucket that holds any window, oldest first."""
    buckets: dict[int, Accumulator] = {}
    for window in windows:
        key = window.start_s // step_s * step_s
        buckets.setdefault(key, Accumulator()).add(window)
    return [buckets[k].point(k, step_s, quantile) for k in sorted(buckets)]


def summarize(windows: Iterable[Window], quantile: float | None = None) -> SeriesPoint | None:
    """Every window merged into one point (None when there are none)."""
    total = Accumulator()
    for window in windows:
        total.add(window)
    if not total.windows or total.start_s is None:
        return None
    return total.point(total.start_s, total.end_s - total.start_s, quantile)


def metric_windows(
    windows: Iterable[Window], quantiles: Sequence[float] = ()
) -> list[tuple[str, MetricWindow]]:
    """(metric name, window merged across tags) per name and window start: what KPIs read."""
    groups: dict[tuple[str, int], Accumulator] = {}
    for window in windows:
        groups.setdefault((window.name, window.start_s), Accumulator()).add(window)
    out = []
    for (name, start_s), acc in sorted(groups.items()):
        out.append(
            (
                name,
                MetricWindow(
                    start_s, acc.end_s - start_s, acc.count, acc.sum, acc.min, acc.max,
                    acc.quantiles(quantiles) if acc.sketches else {},
                ),
            )
        )  # fmt: skip
    return out


def choose_step_s(range_s: float, requested_s: int | None = None, max_points: int = 120) -> int:
    """The bucket length: as requested (at least 1 s, at most `MAX_POINTS` buckets), else
    the smallest step of the window ladder that gives at most `max_points` buckets."""
    if requested_s is not None:
        return max(int(requested_s), 1, math.ceil(range_s / MAX_POINTS))
    for step_s in WINDOW_LADDER_S:
        if range_s / step_s <= max_points:
            return step_s
    return max(3600, math.ceil(range_s / max_points / 3600) * 3600)
