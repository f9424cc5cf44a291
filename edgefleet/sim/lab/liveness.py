"""Liveness in the lab: when the control plane would see a silent device as no longer
online (`core.device`: no heartbeat for three intervals — what rollouts count as unhealthy)
and when its phi-accrual detector would call it suspect and dead (`core.failure_detector`,
what placement and failover act on), computed with those core functions' own rules.

Heartbeats are not simulated one by one (a day of 10k devices is 29 million of them).
Instead, for each kind of link (heartbeat interval, jitter, loss) a seeded history of
arrival intervals is drawn the way the detector would have recorded it, and
`seconds_until(history, threshold)` says how long after the last heartbeat phi crosses the
suspect and dead thresholds. A silence of a device (outage, partition, crash, death) then
gives its liveness transitions directly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from edgefleet.core.device import ONLINE_WITHIN_INTERVALS
from edgefleet.core.workloads.failure_detector import (
    DEFAULT_SETTINGS,
    DEFAULT_THRESHOLDS,
    DetectorSettings,
    HeartbeatHistory,
    Thresholds,
    new_history,
    record_heartbeat,
    seconds_until,
)
from edgefleet.sim.network import NetworkConditions

HISTORY_INTERVALS = 100
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class DetectionDelays:
    """Seconds from a device's last heartbeat until it is judged suspect, and dead."""

    suspect_after_s: float
    dead_after_s: float


@dataclass(frozen=True)
class Silence:
    """Liveness transitions of one silence: times in rehearsal seconds (None: not reached)."""

    offline_at_s: float | None  # no longer `online` (connection status)
    suspect_at_s: float | None
    dead_at_s: float | None
    back_at_s: float | None  # the first heartbeat after it (None: never)


class LivenessModel:
    def __init__(
        self,
        seed: int,
        settings: DetectorSettings = DEFAULT_SETTINGS,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
    ) -> None:
        self._seed = seed
        self._settings = settings
        self.thresholds = thresholds
        self._cache: dict[tuple[float, float, float, float], DetectionDelays] = {}

    def history(self, interval_s: float, conditions: NetworkConditions) -> HeartbeatHistory:
        """A detector history of heartbeats every `interval_s` over `conditions`."""
        rng = random.Random(f"liveness:{self._seed}:{interval_s}:{conditions.jitter_ms}:"
                            f"{conditions.loss_percent}")  # fmt: skip
        history, sent_s = new_history(), 0.0
        for _ in range(HISTORY_INTERVALS):
            sent_s += interval_s
            if rng.random() * 100 < conditions.loss_percent:
                continue
            delay_s = max(0.0, rng.gauss(conditions.latency_ms, conditions.jitter_ms)) / 1000
            arrival = _EPOCH + timedelta(seconds=sent_s + delay_s)
            history = record_heartbeat(history, arrival, self._settings)
        return history

    def delays(self, interval_s: float, conditions: NetworkConditions) -> DetectionDelays:
        key = (interval_s, conditions.latency_ms, conditions.jitter_ms, conditions.loss_percent)
        if key not in self._cache:
            settings = replace(self._settings, first_interval_s=interval_s)
            history = self.history(interval_s, conditions)
            at = history.last_heartbeat_at or _EPOCH
            suspect = seconds_until(history, self.thresholds.suspect_phi, at, settings)
            dead = seconds_until(history, self.thresholds.dead_phi, at, settings)
            self._cache[key] = DetectionDelays(
                interval_s * 10 if suspect is None else suspect,
                interval_s * 20 if dead is None else dead,
            )
        return self._cache[key]

    def silence(
        self,
        start_s: float,
        end_s: float | None,
        interval_s: float,
        conditions: NetworkConditions,
        rng: random.Random,
        reconnect_s: float = 1.0,
    ) -> Silence:
        """The transitions of a silence from `start_s` to `end_s` (None: it never ends).

        The last heartbeat came up to one interval before the silence; when it ends the
        agent reports at once (after `reconnect_s`, its back-off).
        """
        delays = self.delays(interval_s, conditions)
        last_s = start_s - rng.uniform(0.0, interval_s)
        back_s = None if end_s is None else end_s + reconnect_s
        suspect_s = last_s + delays.suspect_after_s
        dead_s = last_s + delays.dead_after_s
        offline_s = last_s + ONLINE_WITHIN_INTERVALS * interval_s
        return Silence(
            offline_s if back_s is None or offline_s < back_s else None,
            suspect_s if back_s is None or suspect_s < back_s else None,
            dead_s if back_s is None or dead_s < back_s else None,
            back_s,
        )
