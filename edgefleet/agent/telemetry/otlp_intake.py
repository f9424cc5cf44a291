"""OTLP metrics from workloads folded into the agent's windows, like StatsD points.

    Gauge                          -> gauge points
    Sum, delta                     -> counter points (the increment)
    Sum, cumulative, monotonic     -> counter points (the increase since the last export)
    Sum, cumulative, not monotonic -> gauge points (an up-down counter's current level)
    Histogram / ExponentialHistogram, delta or cumulative -> timings: count and sum exact,
        each bucket's observations at its midpoint (clamped to min and max) in the sketch,
        so quantiles are as fine as the workload's buckets

Cumulative series are turned into deltas against the previous export of the same series
(name and attributes). A series first seen with a start time before the intake began
(the agent restarted, the workload did not) only sets the baseline: its earlier total was
counted before, or is unknown. A start time that changes, or a value that goes down, is a
reset and counts from zero. Points are stamped with the time they arrive, as StatsD points
are; names and attributes follow the limits of the telemetry wire format, and points that
break them are counted as malformed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from edgefleet.core.telemetry.windows import Aggregator, Distribution, MetricKind, MetricPoint, Tags
from edgefleet.core.telemetry.wire import MAX_NAME_CHARS, MAX_TAG_CHARS, MAX_TAGS, NAME_RE
from edgefleet.transport.otlp import (
    Bucket,
    HistogramPoint,
    MetricType,
    NumberPoint,
    OtlpMetric,
    Temporality,
)

# Cumulative series remembered at most; beyond it the oldest are forgotten (and their next
# export only sets a new baseline).
MAX_CUMULATIVE_SERIES = 4000


@dataclass
class IntakeStats:
    points: int = 0
    malformed: int = 0
    unsupported: int = 0


@dataclass(frozen=True)
class _Snapshot:
    start_ns: int
    value: float = 0.0
    count: int = 0
    sum: float = 0.0
    buckets: tuple[Bucket, ...] = ()


@dataclass
class OtlpIntake:
    aggregator: Aggregator
    started_ns: int
    stats: IntakeStats = field(default_factory=IntakeStats)
    _previous: dict[tuple[str, Tags], _Snapshot] = field(default_factory=dict)

    def take(self, metrics: Sequence[OtlpMetric], now: datetime) -> None:
        """Fold one export's metrics into the aggregator at `now`."""
        for metric in metrics:
            points = len(metric.numbers) + len(metric.histograms)
            if metric.type is MetricType.UNSUPPORTED:
                self.stats.unsupported += max(1, points)
                continue
            if not NAME_RE.fullmatch(metric.name) or len(metric.name) > MAX_NAME_CHARS:
                self.stats.malformed += points
                continue
            for number in metric.numbers:
                self._take_number(metric, number, now)
            for histogram in metric.histograms:
                self._take_histogram(metric, histogram, now)

    def _valid(self, tags: Tags) -> bool:
        ok = len(tags) <= MAX_TAGS and all(
            k and len(k) <= MAX_TAG_CHARS and len(v) <= MAX_TAG_CHARS for k, v in tags
        )
        if not ok:
            self.stats.malformed += 1
        return ok

    def _remember(self, key: tuple[str, Tags], snapshot: _Snapshot) -> _Snapshot | None:
        previous = self._previous.pop(key, None)
        self._previous[key] = snapshot
        if len(self._previous) > MAX_CUMULATIVE_SERIES:
            del self._previous[next(iter(self._previous))]
        return previous

    def _baseline_only(self, previous: _Snapshot | None, start_ns: int) -> bool:
        return previous is None and start_ns < self.started_ns

    def _take_number(self, metric: OtlpMetric, point: NumberPoint, now: datetime) -> None:
        if not self._valid(point.attributes):
            return
        kind, value = MetricKind.GAUGE, point.value
        if metric.type is MetricType.SUM and metric.temporality is not Temporality.CUMULATIVE:
            kind = MetricKind.COUNTER
        elif metric.type is MetricType.SUM and metric.monotonic:
            kind = MetricKind.COUNTER
            key = (metric.name, point.attributes)
            previous = self._remember(key, _Snapshot(point.start_ns, value=point.value))
            if self._baseline_only(previous, point.start_ns):
                return
            if (previous is not None and previous.start_ns == point.start_ns
                    and point.value >= previous.value):  # fmt: skip
                value = point.value - previous.value
        self.aggregator.add(MetricPoint(metric.name, kind, value, point.attributes), now)
        self.stats.points += 1

    def _take_histogram(self, metric: OtlpMetric, point: HistogramPoint, now: datetime) -> None:
        if not self._valid(point.attributes):
            return
        count, total, buckets = point.count, point.sum, point.buckets
        low, high = point.min, point.max
        if metric.temporality is Temporality.CUMULATIVE:
            key = (metric.name, point.attributes)
            snapshot = _Snapshot(point.start_ns, count=count, sum=total or 0.0, buckets=buckets)
            previous = self._remember(key, snapshot)
            if self._baseline_only(previous, point.start_ns):
                return
            if previous is not None and previous.start_ns == point.start_ns:
                since = _bucket_difference(buckets, previous.buckets)
                if since is not None and count >= previous.count:
                    count, buckets = count - previous.count, since
                    total = None if total is None else total - previous.sum
            low, high = None, None  # a cumulative point's extremes are its lifetime's
        values = tuple(
            (_representative(b, low, high, point), b.count) for b in buckets if b.count > 0
        )
        if count <= 0 or not values:
            return
        if total is None:
            total = sum(v * n for v, n in values)
        self.aggregator.add_distribution(
            Distribution(metric.name, point.attributes, values, total), now
        )
        self.stats.points += 1


def _bucket_difference(
    now: tuple[Bucket, ...], before: tuple[Bucket, ...]
) -> tuple[Bucket, ...] | None:
    """`now` minus `before`, each earlier bucket taken from the bucket that contains it (an
    exponential histogram may have merged buckets since); None if that is impossible."""
    counts = [b.count for b in now]
    for old in before:
        for i, new in enumerate(now):
            if new.lower <= old.lower and old.upper <= new.upper:
                counts[i] -= old.count
                break
        else:
            return None
    if any(n < 0 for n in counts):
        return None
    return tuple(Bucket(b.lower, b.upper, n) for b, n in zip(now, counts, strict=True))


def _representative(
    bucket: Bucket, low: float | None, high: float | None, point: HistogramPoint
) -> float:
    """The value a bucket's observations are counted at: its midpoint, or its finite edge
    (toward the known extreme) for the open-ended first and last buckets."""
    lower, upper = bucket.lower, bucket.upper
    if math.isinf(lower) and math.isinf(upper):
        if low is not None and high is not None:
            value = (low + high) / 2
        else:
            value = (point.sum or 0.0) / point.count if point.count else 0.0
    elif math.isinf(lower):
        value = (low + upper) / 2 if low is not None and low <= upper else upper
    elif math.isinf(upper):
        value = (lower + high) / 2 if high is not None and high >= lower else lower
    else:
        value = (lower + upper) / 2
    if low is not None:
        value = max(value, low)
    if high is not None:
        value = min(value, high)
    return value
