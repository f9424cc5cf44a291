"""The agent's telemetry collector: readings in, batches of closed windows out.

    host metrics (every sample tick) ─┐
                                      ├─▶ Aggregator (window lengths from the sampling
    StatsD points from workloads ─────┘    decision) ─▶ closed windows ─▶ batch ─▶ queue

Every tick reads the host (HostMetricsCollector), re-decides sampling from the policy in
the desired state and the device's condition (core.sampling: coarser on battery or under
load, finer for the metrics of open alerts), closes the windows that have ended, and now and
then cuts the closed windows into one batch appended to the on-disk queue (which gives it
its sequence number). A batch is cut every `batch_interval_s`, or sooner when uploads are
due sooner, so a batch is about one upload's worth: what an agent killed outright loses is
at most the windows not yet cut (and the open ones).

The collector never touches the network; the uploader (telemetry.uploader) drains the queue.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from edgefleet.agent.telemetry.host_metrics import condition_from_points
from edgefleet.agent.telemetry.queue import TelemetryQueue
from edgefleet.core.telemetry.sampling import (
    DeviceCondition,
    SamplingDecision,
    TelemetryPolicy,
    decide_sampling,
    default_policy,
    read_fidelity_advice,
    read_telemetry_section,
)
from edgefleet.core.telemetry.windows import Aggregator, MetricPoint, Window
from edgefleet.errors import InvalidInput

log = logging.getLogger(__name__)

# A batch never holds more windows than this (the wire format allows 20,000).
MAX_BATCH_WINDOWS = 5000
MIN_TICK_S = 0.2


def _window_map(decision: SamplingDecision) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((d.name, d.window_s) for d in decision.sets))


class TelemetryCollector:
    """Aggregates points into windows under the current policy and cuts them into batches.

    Not thread-safe: call it from one event loop (the StatsD endpoint adds points from
    there too). `cut` is the only call that does disk I/O.
    """

    def __init__(
        self,
        queue: TelemetryQueue,
        *,
        sample_interval_s: float = 10.0,
        batch_interval_s: float = 60.0,
    ) -> None:
        self.queue = queue
        self._sample_interval_s = sample_interval_s
        self._batch_interval_s = batch_interval_s
        self.policy: TelemetryPolicy = default_policy()
        self.anomalous_metrics: frozenset[str] = frozenset()
        self.fine_metrics: frozenset[str] = frozenset()  # the control plane's fidelity advice
        self.coarse_metrics: frozenset[str] = frozenset()
        self._condition = DeviceCondition()
        self.decision = decide_sampling(self.policy, self._condition)
        self.aggregator = Aggregator(self.decision.window_s_for)
        self._pending: list[Window] = []
        self._last_cut_s: float | None = None

    # What the control plane asks for.

    def apply_section(self, section: Mapping[str, Any] | None, now: datetime) -> bool:
        """Follow the `telemetry` section of the desired state; True if sampling changed.

        A change from the control plane takes effect at once: open windows are cut short at
        `now`, so "sample finer while an alert is open" does not wait for a long window to
        end. (Changes the device decides itself, under load or on battery, wait for the
        next window.) A section the agent cannot read leaves the current policy in place.
        """
        try:
            policy, anomalous = read_telemetry_section(section)
            fine, coarse = read_fidelity_advice(section)
        except InvalidInput as e:
            log.error(
                "telemetry policy refused; keeping the current one", extra={"error": e.message}
            )
            return False
        self.policy, self.anomalous_metrics = policy, anomalous
        self.fine_metrics, self.coarse_metrics = fine, coarse
        changed = self._redecide(logging.INFO)
        if changed:
            self._pending.extend(self.aggregator.close_all(now))
        return changed

    def _redecide(self, level: int = logging.DEBUG) -> bool:
        """Decide sampling again; changes the device decides itself (load, battery) are
        logged at debug, so a device hovering at a threshold does not flood its log."""
        condition = DeviceCondition(
            cpu_percent=self._condition.cpu_percent,
            on_battery=self._condition.on_battery,
            battery_percent=self._condition.battery_percent,
            anomalous_metrics=self.anomalous_metrics,
            fine_metrics=self.fine_metrics,
            coarse_metrics=self.coarse_metrics,
        )
        self._condition = condition
        decision = decide_sampling(self.policy, condition)
        changed = _window_map(decision) != _window_map(self.decision) or (
            decision.upload_interval_s != self.decision.upload_interval_s
        )
        self.decision = decision
        if changed:
            self.aggregator.set_window_lengths(decision.window_s_for)
            log.log(
                level,
                "telemetry sampling changed",
                extra={"reason": decision.reason, "upload_interval_s": decision.upload_interval_s},
            )
        return changed

    # Timing.

    @property
    def tick_s(self) -> float:
        """Seconds between ticks: the sample interval, but at least two ticks per window."""
        shortest = min((d.window_s for d in self.decision.sets), default=60)
        return max(MIN_TICK_S, min(self._sample_interval_s, shortest / 2))

    @property
    def batch_interval_s(self) -> float:
        return min(self._batch_interval_s, float(self.decision.upload_interval_s))

    @property
    def pending_windows(self) -> int:
        return len(self._pending)

    # Work.

    def observe(self, points: Iterable[MetricPoint], now: datetime) -> bool:
        """Fold one host reading in and re-decide sampling from it; True if it changed."""
        points = list(points)
        for point in points:
            self.aggregator.add(point, now)
        observed = condition_from_points(points, self.anomalous_metrics)
        self._condition = DeviceCondition(
            cpu_percent=observed.cpu_percent
            if observed.cpu_percent is not None else self._condition.cpu_percent,
            on_battery=observed.on_battery,
            battery_percent=observed.battery_percent,
            anomalous_metrics=self.anomalous_metrics,
        )  # fmt: skip
        return self._redecide()

    def close_due(self, now: datetime) -> int:
        """Move windows that have ended into the next batch; returns how many."""
        closed = self.aggregator.close_due(now)
        self._pending.extend(closed)
        return len(closed)

    def cut_due(self, monotonic_s: float) -> bool:
        if self._last_cut_s is None:
            self._last_cut_s = monotonic_s
        return bool(self._pending) and (
            monotonic_s - self._last_cut_s >= self.batch_interval_s
            or len(self._pending) >= MAX_BATCH_WINDOWS
        )

    def take_batch(self, monotonic_s: float) -> list[Window]:
        """The windows of the next batch (removed from the collector)."""
        self._last_cut_s = monotonic_s
        batch, self._pending = self._pending[:MAX_BATCH_WINDOWS], self._pending[MAX_BATCH_WINDOWS:]
        return batch

    def append(self, windows: list[Window]) -> int:
        """Store `windows` as the next batch (blocking disk I/O); returns its sequence."""
        seq = self.queue.append(windows)
        log.debug("telemetry batch queued", extra={"seq": seq, "windows": len(windows)})
        return seq

    def close_all(self, now: datetime) -> None:
        """Cut every open window short (shutdown), to go into the last batch."""
        self._pending.extend(self.aggregator.close_all(now))
