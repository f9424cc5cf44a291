"""Combining windows on the server: for query buckets, KPI windows and hourly rollups.

`combine` merges windows of one series in any order, overlapping or not: an agent stopped
gracefully cuts its open windows short, and after a restart the next window of a series can
start inside the cut one, which `windows.merge_windows` (for strictly adjacent windows)
refuses. Counts, sums and sketches add up; min and max are the extremes; `last` is the last
value of the window that ended last.

`roll_up` turns raw windows into one window per series and hour, the form kept after the
raw retention; rolling up again with an existing rollup row gives the same result as rolling
everything up at once.

>>> from edgefleet.core.telemetry.windows import MetricKind, Window
>>> a = Window("q", MetricKind.GAUGE, (), 3600, 60, 2, 3.0, 1.0, 2.0, 2.0)
>>> b = Window("q", MetricKind.GAUGE, (), 3660, 60, 1, 5.0, 5.0, 5.0, 5.0)
>>> c = combine([b, a])
>>> (c.start_s, c.length_s, c.count, c.sum, c.min, c.max, c.last)
(3600, 120, 3, 8.0, 1.0, 5.0, 5.0)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from edgefleet.core.telemetry.sketch import DDSketch
from edgefleet.core.telemetry.windows import MetricKind, Tags, Window
from edgefleet.errors import InvalidInput

HOUR_S = 3600


@dataclass(frozen=True)
class HourTotal:
    """One device's windows of one metric in one hour, added up (the store sums them)."""

    device_id: str
    name: str
    hour_s: int  # the hour's start, Unix seconds
    sum: float
    count: int
    covered_s: int  # seconds the windows cover


def combine(windows: Sequence[Window]) -> Window:
    """One window covering all of `windows` (same name, kind and tags; any order)."""
    if not windows:
        raise InvalidInput("nothing to combine", code="window_mismatch")
    first = windows[0]
    if len(windows) == 1:
        return first
    series = (first.name, first.kind, first.tags)
    ordered = sorted(windows, key=lambda w: (w.end_s, w.start_s))
    start_s = min(w.start_s for w in windows)
    end_s = ordered[-1].end_s
    sketch: DDSketch | None = None
    for window in windows:
        if (window.name, window.kind, window.tags) != series:
            raise InvalidInput("cannot combine windows of different series", code="window_mismatch")
    if all(w.sketch is not None for w in windows):
        sketch = merge_sketches(w.sketch for w in windows if w.sketch is not None)
    return replace(
        first,
        start_s=start_s,
        length_s=end_s - start_s,
        count=sum(w.count for w in windows),
        sum=sum(w.sum for w in windows),
        min=min(w.min for w in windows),
        max=max(w.max for w in windows),
        last=ordered[-1].last,
        sketch=sketch,
    )


def merge_sketches(sketches: Iterable[DDSketch]) -> DDSketch | None:
    """One sketch holding every value of `sketches` (None if there are none, or if their
    accuracies differ and they cannot be merged)."""
    merged: DDSketch | None = None
    for sketch in sketches:
        if merged is None:
            merged = sketch.copy()
        elif merged.alpha != sketch.alpha:
            return None
        else:
            merged.merge(sketch)
    return merged


def hour_of(start_s: int) -> int:
    return start_s // HOUR_S * HOUR_S


SeriesHour = tuple[str, MetricKind, Tags, int]


def roll_up(windows: Iterable[Window]) -> dict[SeriesHour, Window]:
    """Windows grouped by series and the hour they start in, each group combined; a rollup
    starts at its hour and spans to the end of its last window."""
    groups: dict[SeriesHour, list[Window]] = {}
    for window in windows:
        key = (window.name, window.kind, window.tags, hour_of(window.start_s))
        groups.setdefault(key, []).append(window)
    out = {}
    for key, group in groups.items():
        combined = combine(group)
        hour_s = key[3]
        out[key] = replace(combined, start_s=hour_s, length_s=combined.end_s - hour_s)
    return out
