"""Liveness in the lab: the control plane's own liveness controller (`controllers.liveness`:
phi-accrual verdicts) over an in-memory store, ticked on the lab's simulated clock whenever
a node is due; and what only the lab has: the heartbeats it judges.

Heartbeats are not simulated one by one (a day of 10k devices is 29 million of them).
Instead, for each kind of link (heartbeat interval, jitter, loss) a seeded history of
arrival intervals is drawn the way the detector would have recorded it (`LinkHistories`).
When a device falls silent its node is stored as if those heartbeats had arrived up to its
last one, and the controller judges the silence as the server's does: suspect, then dead,
each at the first moment phi crosses its threshold (the controller says when; the lab ticks
it then, where the server ticks every `controller_interval_s`). The first heartbeat after
the silence is recorded with `core.liveness.observe_heartbeat` (alive at once, as on the
server); from then on the node heartbeats on schedule, which never changes a verdict, so
the lab forgets it until its next silence.

What rollouts read of a silence, the connection status (no longer `online` three intervals
after the last heartbeat, `core.device`), follows from the last heartbeat directly
(`offline_at_s`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from edgefleet.controllers.liveness import LivenessController, LivenessPolicy
from edgefleet.controllers.memory_liveness import MemoryLivenessStore
from edgefleet.core.device import ONLINE_WITHIN_INTERVALS
from edgefleet.core.workloads.failure_detector import (
    DEFAULT_SETTINGS,
    DetectorSettings,
    HeartbeatHistory,
    Liveness,
    new_history,
    record_heartbeat,
)
from edgefleet.core.workloads.liveness import NodeLiveness, observe_heartbeat
from edgefleet.core.workloads.node_health import NodeHealth
from edgefleet.sim.lab.scheduler import EventScheduler
from edgefleet.sim.network import NetworkConditions

HISTORY_INTERVALS = 100
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
# The modelled control plane has been watching long before the rehearsal starts.
_LONG_AGO = datetime.min.replace(tzinfo=UTC)

# (device id, its verdict now)
OnChange = Callable[[str, Liveness], None]


class LinkHistories:
    """Seeded detector histories, one per kind of link."""

    def __init__(self, seed: int, settings: DetectorSettings = DEFAULT_SETTINGS) -> None:
        self._seed = seed
        self._settings = settings
        self._cache: dict[tuple[float, float, float, float], HeartbeatHistory] = {}

    def history(self, interval_s: float, conditions: NetworkConditions) -> HeartbeatHistory:
        """A detector history of heartbeats every `interval_s` over `conditions`."""
        key = (interval_s, conditions.latency_ms, conditions.jitter_ms, conditions.loss_percent)
        if key not in self._cache:
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
            self._cache[key] = history
        return self._cache[key]


def offline_at_s(last_s: float, interval_s: float) -> float:
    """When a device last heard from at `last_s` is no longer `online`."""
    return last_s + ONLINE_WITHIN_INTERVALS * interval_s


class LabLiveness:
    """The liveness controller on simulated time. `on_change(device_id, state)` hears every
    verdict: the controller's (suspect, dead) and a returning heartbeat's (alive)."""

    def __init__(
        self,
        scheduler: EventScheduler,
        start: datetime,
        seed: int,
        on_change: OnChange,
        policy: LivenessPolicy = LivenessPolicy(),
    ) -> None:
        self._scheduler = scheduler
        self._start = start
        self._on_change = on_change
        self.histories = LinkHistories(seed)
        self.store = MemoryLivenessStore()
        self.controller = LivenessController(self.store, policy, watching_since=_LONG_AGO)
        self.ticks = 0
        self._pending: datetime | None = None

    def _at(self, t_s: float) -> datetime:
        return self._start + timedelta(seconds=t_s)

    def fall_silent(
        self, device_id: str, last_s: float, interval_s: float, conditions: NetworkConditions
    ) -> None:
        """The device heartbeated every `interval_s` over `conditions` until `last_s`, then
        no more (until `heartbeat`)."""
        last = self._at(last_s)
        history = replace(self.histories.history(interval_s, conditions), last_heartbeat_at=last)
        previous = self.store.get(device_id)
        # No `interval_s` on the record: judged with the detector's default settings (a 3 s
        # pause margin), as the lab always has; the server gives a node the interval it was
        # told, which makes the margin one interval (docs/simulator.md, Liveness).
        liveness = NodeLiveness(history, Liveness.ALIVE, last)
        self.store.put_report(NodeHealth(device_id, liveness, reported_at=last))
        if previous is not None and previous.state is not Liveness.ALIVE:
            self._on_change(device_id, Liveness.ALIVE)  # it heartbeated since
        self._request(self._at(self._scheduler.now_s))

    def heartbeat(self, device_id: str, at_s: float) -> None:
        """The first heartbeat after a silence: the node is alive again."""
        previous = self.store.get(device_id)
        if previous is None:
            return
        liveness = observe_heartbeat(previous.liveness, self._at(at_s))
        self.store.forget(device_id)  # on schedule from now on (see the module docstring)
        if previous.state is not liveness.state:
            self._on_change(device_id, liveness.state)
        self._request(self._at(self._scheduler.now_s))

    def _request(self, at: datetime) -> None:
        if self._pending is not None and self._pending <= at:
            return
        self._pending = at
        self._scheduler.at((at - self._start).total_seconds(), self._tick, at)

    def _tick(self, at: datetime) -> None:
        if self._pending != at:
            return  # an earlier tick was scheduled since
        self._pending = None
        self.ticks += 1
        for change in self.controller.tick(at):
            self._on_change(change.device_id, change.after)
        due = self.controller.next_due()
        if due is not None:
            self._request(due)
