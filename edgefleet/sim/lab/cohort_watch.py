"""Anomaly detection in the lab: the fleet's KPIs per device class, window by window, fed to
`core.anomaly` exactly as the control plane's detectors are fed per cohort.

Every `window_s` each class's mean p95 latency and error rate over its running devices is
computed from what each device serves (a bad release shifts it), with a little seeded
noise, and stepped through one detector per (class, KPI). The detectors are warmed on a
baseline before the rehearsal starts, so they can judge from the first window. Opened and
closed alerts go to the timeline and the report: they show when the fleet's telemetry would
have flagged a bad release, independently of the rollout's gates.

The class means are kept incrementally (`update` on every change of a device), grouped by
what a device serves, so a window costs the same for ten devices or ten thousand.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from edgefleet.core.telemetry.anomaly import (
    DetectorConfig,
    DetectorState,
    Direction,
    EventKind,
    new_detector,
    step,
)
from edgefleet.core.telemetry.kpi import ERROR_RATE_PCT, P95_LATENCY_MS
from edgefleet.sim.lab.controller import TimelineEntry
from edgefleet.sim.lab.scheduler import EventScheduler
from edgefleet.sim.lab.telemetry_model import Serving

WINDOW_S = 300.0
WARMUP_WINDOWS = 24
NOISE = 0.03

# (behaviour, bad model) of a Serving without the device's own speed factor.
_Key = tuple[object, object]


@dataclass
class _Group:
    """The running devices of one class that serve alike."""

    serving: Serving  # any one of them (for the behaviour and bad model)
    factor_sum: float = 0.0
    devices: int = 0


@dataclass(frozen=True)
class AlertRecord:
    device_class: str
    kpi: str
    kind: str  # opened, closed
    at_s: float
    value: float
    score: float
    reason: str


class CohortWatch:
    def __init__(
        self,
        classes: list[str],
        scheduler: EventScheduler,
        start: datetime,
        timeline: list[TimelineEntry],
        seed: int,
        window_s: float = WINDOW_S,
    ) -> None:
        self._classes = sorted(classes)
        self._scheduler = scheduler
        self._start = start
        self._timeline = timeline
        self._rng = random.Random(f"cohorts:{seed}")
        self._window_s = window_s
        config = DetectorConfig(direction=Direction.UP)
        self._detectors: dict[tuple[str, str], DetectorState] = {
            (name, kpi): new_detector(config)
            for name in self._classes
            for kpi in (P95_LATENCY_MS, ERROR_RATE_PCT)
        }
        self._groups: dict[str, dict[_Key, _Group]] = {c: {} for c in self._classes}
        self._members: dict[str, tuple[str, _Key, float] | None] = {}
        self.alerts: list[AlertRecord] = []
        self.windows = 0

    def update(self, device_id: str, device_class: str, running: bool, serving: Serving) -> None:
        """Record what one device serves now (or that it is not running)."""
        old = self._members.get(device_id)
        if old is not None:
            name, key, factor = old
            group = self._groups[name][key]
            group.factor_sum -= factor
            group.devices -= 1
        if not running:
            self._members[device_id] = None
            return
        key = (serving.behaviour, serving.bad)
        group = self._groups[device_class].setdefault(key, _Group(serving))
        group.factor_sum += serving.speed_factor
        group.devices += 1
        self._members[device_id] = (device_class, key, serving.speed_factor)

    def _means(self, name: str) -> tuple[float, float] | None:
        p95_sum = errors_sum = 0.0
        count = 0
        for group in self._groups[name].values():
            if group.devices <= 0:
                continue
            serving = group.serving
            p95_sum += serving.p95_ms() / serving.speed_factor * group.factor_sum
            errors_sum += serving.error_percent() * group.devices
            count += group.devices
        return None if count == 0 else (p95_sum / count, errors_sum / count)

    def _feed(self, at: datetime, record: bool) -> None:
        for name in self._classes:
            pair = self._means(name)
            if pair is None:
                continue
            for kpi, value in zip((P95_LATENCY_MS, ERROR_RATE_PCT), pair, strict=True):
                noisy = max(0.0, value * (1 + self._rng.gauss(0.0, NOISE)))
                state, event = step(self._detectors[(name, kpi)], noisy, at)
                self._detectors[(name, kpi)] = state
                if event is None or not record:
                    continue
                at_s = (at - self._start).total_seconds()
                self.alerts.append(AlertRecord(name, kpi, event.kind.value, at_s, event.value,
                                               event.score, event.reason))  # fmt: skip
                verb = "opened" if event.kind is EventKind.OPENED else "closed"
                self._timeline.append(TimelineEntry(
                    at_s, f"anomaly-{verb}",
                    f"class {name}: {kpi} at {event.value:.3g} ({event.reason})",
                ))  # fmt: skip

    def start(self) -> None:
        """Warm the detectors on the fleet as it is now, then watch every window."""
        before = self._start - timedelta(seconds=WARMUP_WINDOWS * self._window_s)
        for i in range(WARMUP_WINDOWS):
            self._feed(before + timedelta(seconds=i * self._window_s), record=False)
        self._scheduler.after(self._window_s, self._tick)

    def _tick(self) -> None:
        self.windows += 1
        self._feed(self._start + timedelta(seconds=self._scheduler.now_s), record=True)
        self._scheduler.after(self._window_s, self._tick)
