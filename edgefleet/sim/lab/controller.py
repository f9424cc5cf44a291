"""The lab's rollout controller: the control plane's controller step
(`controllers.rollout.reconcile`: load, decide, gather gate telemetry, decide again, apply)
over an in-memory store, on simulated time.

    report / liveness change / next look ─▶ request() ─▶ (at most once per interval)
        reconcile(MemoryRolloutStore) ─▶ publish to agents, note the timeline

Runs are coalesced to one per `interval_s` of simulated time (the real controller runs on
reports as they come; between two runs nothing but reports can change a decision, and
those are all taken into account at the next run). The next look is the one the shared
step schedules, without the control plane's blind rescan (here every change is announced).
While gates wait for data the control plane looks every `data_recheck_s`; the lab skips the
looks before the next telemetry window arrives, which would see the same data, and takes
the first look after it (or the wait's end, if sooner) — the same decision at the same time.
Each rollout-level action lands in the timeline with the engine's own reason; wave
milestones and device outcomes are kept for the report.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from edgefleet.controllers.memory import MemoryRolloutStore
from edgefleet.controllers.rollout import Outcome, Timing, reconcile, waits_for_data
from edgefleet.core.rollouts.actions import (
    Action,
    AssignRelease,
    MarkDevice,
    RecordGates,
    RevertRelease,
    StartRollout,
    StartSoak,
)
from edgefleet.core.rollouts.gates import DeviceTelemetry
from edgefleet.core.rollouts.rollout import (
    FINAL_STATES,
    DeviceState,
    InstallReport,
    Rollout,
    RolloutDevice,
    RolloutState,
)
from edgefleet.core.updates.compat import Requirements, evaluate_compatibility
from edgefleet.sim.lab.fleet_model import LabDevice
from edgefleet.sim.lab.scheduler import EventScheduler
from edgefleet.sim.lab.telemetry_model import DeviceView, LabTelemetry, TelemetryDelivery
from edgefleet.sim.lab.virtual_agent import Assignment, VirtualAgent

# Every change reaches the lab's controller as an event: no blind rescans.
LAB_TIMING = Timing(rescan_s=None)


@dataclass(frozen=True)
class TimelineEntry:
    at_s: float
    kind: str
    text: str


@dataclass
class WaveRecord:
    index: int
    label: str
    size: int
    soak_s: float
    first_assigned_s: float | None = None
    last_assigned_s: float | None = None
    settled_s: float | None = None
    soak_until_s: float | None = None
    gates: list[RecordGates] = field(default_factory=list)


class RolloutController:
    def __init__(
        self,
        rollout: Rollout,
        devices: list[LabDevice],
        agents: Mapping[str, VirtualAgent],
        scheduler: EventScheduler,
        start: datetime,
        *,
        requirements: Requirements,
        serving_before: Callable[[str], DeviceView | None],
        timeline: list[TimelineEntry],
        interval_s: float,
        seed: int,
        delivery: TelemetryDelivery,
    ) -> None:
        self._id = rollout.id
        self._agents = agents
        self._scheduler = scheduler
        self._start = start
        self._view = serving_before
        self._timeline = timeline
        self._interval_s = interval_s
        self._seed = seed
        self._delivery = delivery
        self._epoch_s = start.timestamp()
        # When the controller last saw each device installed: its gate telemetry starts
        # there (`installed_at` of the server's records; a new assignment clears it).
        self.installed_s: dict[str, float] = {}
        targets = [d for d in devices if rollout.spec.target.matches(d.labels)]
        self._store = MemoryRolloutStore(self._gate_telemetry, self._applied)
        self._store.add(rollout, {
            d.id: RolloutDevice(
                d.id,
                healthy=agents[d.id].running,
                time_zone=d.time_zone,
                compatibility=evaluate_compatibility(requirements, d.inventory, d.labels),
                current_release=d.current_release,
            )
            for d in targets
        })  # fmt: skip
        self.waves: list[WaveRecord] = []
        self.decisions = 0
        self.actions: Counter[str] = Counter()
        self.wall_s = 0.0
        self.window_marked_s: dict[str, float] = {}
        self.window_waits_s: list[float] = []
        self.ever_outside_window: set[str] = set()
        self.failure_reasons: Counter[str] = Counter()
        # Per device, the kinds of the actions taken on it, in order (for comparisons).
        self.device_actions: dict[str, list[str]] = {}
        self.finished_s: float | None = None
        self._pending_s: float | None = None
        self._last_run_s = -math.inf

    @property
    def rollout(self) -> Rollout:
        return self._store.get(self._id).rollout

    @property
    def records(self) -> Mapping[str, RolloutDevice]:
        return self._store.get(self._id).devices

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._scheduler.now_s)

    # When to decide.

    def request(self, at_s: float | None = None) -> None:
        """Decide again at `at_s` (default: now), or at the next controller slot."""
        if self.rollout.state in FINAL_STATES:
            return
        when = max(self._scheduler.now_s if at_s is None else at_s,
                   self._last_run_s + self._interval_s)  # fmt: skip
        if self._pending_s is not None and self._pending_s <= when:
            return
        self._pending_s = when
        self._scheduler.at(when, self._run, when)

    def _run(self, when: float) -> None:
        if self._pending_s != when:
            return  # an earlier run was scheduled since
        self._pending_s = None
        self._last_run_s = self._scheduler.now_s
        began = time.perf_counter()
        decision = reconcile(self._store, self._id, self.now(), LAB_TIMING)
        self.wall_s += time.perf_counter() - began
        if decision is not None:
            self.decisions += 1

    def _gate_telemetry(self, rollout: Rollout, now: datetime) -> Mapping[str, DeviceTelemetry]:
        planned = list(rollout.plan.device_ids) if rollout.plan else list(self.records)
        return LabTelemetry(self._view, planned, self._scheduler.now_s, self._seed,
                            installed_s=self.installed_s, delivery=self._delivery,
                            epoch_s=self._epoch_s)  # fmt: skip

    def _applied(self, outcome: Outcome) -> None:
        t = self._scheduler.now_s
        for action in outcome.decision.actions:
            self._carry_out(action, t)
        if outcome.rollout.state in FINAL_STATES and self.finished_s is None:
            self.finished_s = t
        if outcome.due_at is not None:
            due_s: float | None = (outcome.due_at - self._start).total_seconds()
            if waits_for_data(outcome.rollout):
                due_s = self._data_look_s(t, outcome)
            if due_s is not None:
                self.request(due_s)

    def _data_look_s(self, t: float, outcome: Outcome) -> float | None:
        """The next look when the shared step asks for data rechecks (every `data_recheck_s`
        while the gates wait for data): the first recheck after the next telemetry window
        arrives, or, if sooner, when the decision may change anyway (`next_check_at`: the
        wait's end, a deadline)."""
        check_at = outcome.decision.next_check_at
        other_s = math.inf if check_at is None else (check_at - self._start).total_seconds()
        look_s = math.inf
        arrival_s = self._delivery.next_arrival_s(t + self._epoch_s) - self._epoch_s
        if not math.isinf(arrival_s):
            step = LAB_TIMING.data_recheck_s
            look_s = t + max(1, math.ceil((arrival_s - t) / step)) * step
        due_s = min(look_s, other_s)
        return None if math.isinf(due_s) else due_s

    # What a decision asks for.

    def _carry_out(self, action: Action, t: float) -> None:
        self.actions[action.kind] += 1
        if isinstance(action, AssignRelease | RevertRelease | MarkDevice):
            self.device_actions.setdefault(action.device_id, []).append(action.kind)
        match action:
            case AssignRelease() | RevertRelease():
                self.installed_s.pop(action.device_id, None)
                record = self.records[action.device_id]
                assert record.assigned_at is not None
                self._agents[action.device_id].publish(
                    Assignment(action.release, record.assigned_at)
                )
                if isinstance(action, AssignRelease):
                    self._assigned(action, t)
            case MarkDevice():
                self._marked(action, t)
            case StartRollout():
                self.waves = [WaveRecord(w.index, w.label, w.size, w.soak_s)
                              for w in action.plan.waves]  # fmt: skip
                self._note(t, action)
            case StartSoak():
                wave = self.waves[action.wave]
                wave.settled_s = t
                wave.soak_until_s = (action.until - self._start).total_seconds()
                self._note(t, action)
            case RecordGates():
                self.waves[action.evaluation.wave].gates.append(action)
                self._note(t, action)
            case _:
                self._note(t, action)

    def _note(self, t: float, action: Action) -> None:
        self._timeline.append(TimelineEntry(t, action.kind, action.reason))

    def _assigned(self, action: AssignRelease, t: float) -> None:
        wave = self.waves[action.wave]
        if wave.first_assigned_s is None:
            wave.first_assigned_s = t
        wave.last_assigned_s = t
        marked = self.window_marked_s.pop(action.device_id, None)
        if marked is not None:
            self.window_waits_s.append(t - marked)

    def _marked(self, action: MarkDevice, t: float) -> None:
        if action.state is DeviceState.INSTALLED:
            self.installed_s[action.device_id] = t
        elif action.state is DeviceState.OUTSIDE_WINDOW:
            self.window_marked_s.setdefault(action.device_id, t)
            self.ever_outside_window.add(action.device_id)
        elif action.state in (DeviceState.FAILED, DeviceState.RETRY_WAIT):
            reason = action.reason.split(";", 1)[0]
            self.failure_reasons[reason] += 1

    # What devices tell it.

    def observe(self, device_id: str, assignment: Assignment, outcome: InstallReport) -> None:
        """A device reported on an assignment (stale reports are ignored, as the real
        controller ignores a report about an earlier attempt)."""
        record = self.records.get(device_id)
        if record is None or record.assigned_at != assignment.token or record.report is outcome:
            return
        self._store.observe_device(self._id, replace(record, report=outcome))
        self.request()

    def set_healthy(self, device_id: str, healthy: bool) -> None:
        """The device's liveness changed: it counts against max_unavailable when touched."""
        record = self.records.get(device_id)
        if record is None or record.healthy is healthy:
            return
        self._store.observe_device(self._id, replace(record, healthy=healthy))
        if record.touched and self.rollout.state in (
            RolloutState.PROGRESSING,
            RolloutState.ROLLING_BACK,
        ):
            self.request()
