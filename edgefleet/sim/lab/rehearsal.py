"""The accelerated rehearsal: a rollout over a modelled fleet, on simulated time, with the
control plane's pure core making every decision.

    LabDevice ─▶ VirtualAgent + LinkSchedule ──reports──▶ RolloutController (decide,
         │                                                apply_decision) ──assignments──┘
         ├─ silences (outages, partitions, crashes, deaths, flat batteries)
         │        ├─ connection status (online within 3 heartbeats) ─▶ rollout records'
         │        │     `healthy` (max_unavailable), as the server's controller observes it
         │        └─ LabLiveness (the server's liveness controller, in memory): suspect /
         │              dead / alive ─▶ FailoverRehearsal (the server's placement
         │              controller, in memory; fence_node, decide_drain)
         └─ what each device serves ─▶ CohortWatch (core.anomaly per class and KPI)

Everything is driven by one `EventScheduler` and seeded: the same configuration, devices
and seed give the same report (only its `performance` section, wall-clock figures, varies).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from edgefleet.core.rollouts.rollout import InstallReport, Rollout
from edgefleet.core.rollouts.spec import RolloutSpec
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.workload import Workload
from edgefleet.sim.faults import FaultEvent, FaultKind, FaultSpec, FaultTarget, schedule_faults
from edgefleet.sim.lab.cohort_watch import CohortWatch
from edgefleet.sim.lab.controller import RolloutController, TimelineEntry
from edgefleet.sim.lab.failover import FailoverRehearsal
from edgefleet.sim.lab.fleet_model import LabDevice
from edgefleet.sim.lab.link import LinkSchedule
from edgefleet.sim.lab.liveness import LabLiveness, offline_at_s
from edgefleet.sim.lab.scheduler import EventScheduler
from edgefleet.sim.lab.telemetry_model import (
    DEFAULT_DELIVERY,
    DeviceView,
    Serving,
    TelemetryDelivery,
)
from edgefleet.sim.lab.virtual_agent import Assignment, VirtualAgent
from edgefleet.sim.model_behaviour import BadModel, is_bad_release
from edgefleet.sim.network import NetworkModel
from edgefleet.sim.profile import ReleaseFacts

RECONNECT_S = 2.0


@dataclass(frozen=True)
class RehearsalConfig:
    rollout: RolloutSpec
    rollout_id: str
    start: datetime
    hours: float = 24.0
    seed: int = 1
    bad_release: bool = False  # the rollout's release behaves as `bad_model`
    bad_model: BadModel = field(default_factory=BadModel)
    bad_patterns: tuple[str, ...] = ()
    faults: tuple[FaultSpec, ...] = ()
    workloads: tuple[Workload, ...] = ()
    releases: Mapping[str, ReleaseFacts] = field(default_factory=dict)
    controller_interval_s: float = 15.0
    source: str = ""
    telemetry: TelemetryDelivery = DEFAULT_DELIVERY  # how gate telemetry reaches the server

    def release_facts(self, release: str) -> ReleaseFacts:
        return self.releases.get(release) or ReleaseFacts(release)


@dataclass
class _Silence:
    start_s: float
    end_s: float | None
    epoch: int
    last_s: float  # the last heartbeat before it


class Rehearsal:
    def __init__(self, config: RehearsalConfig, devices: list[LabDevice]) -> None:
        self.config = config
        self.devices = sorted(devices, key=lambda d: d.id)
        self.scheduler = EventScheduler()
        self.timeline: list[TimelineEntry] = []
        self.lab_liveness = LabLiveness(self.scheduler, config.start, config.seed,
                                        self._set_liveness)  # fmt: skip
        self.liveness: dict[str, Liveness] = {}
        self.transitions: dict[Liveness, int] = {state: 0 for state in Liveness}
        self._silences: dict[str, _Silence] = {}
        self._epochs: dict[str, int] = {}
        self._battery: dict[str, tuple[float, float, float]] = {}  # level, drain/h, at_s
        self._rng = random.Random(f"rehearsal:{config.seed}")
        self.links: dict[str, LinkSchedule] = {}
        self.agents: dict[str, VirtualAgent] = {}
        for device in self.devices:
            rng = random.Random(f"device:{config.seed}:{device.id}")
            outage = device.network.outage
            phase = rng.uniform(0, outage.every_s) if outage is not None else 0.0
            link = LinkSchedule(NetworkModel(device.network, rng), phase)
            self.links[device.id] = link
            self.agents[device.id] = VirtualAgent(
                device, link, self.scheduler,
                release_facts=config.release_facts, bad_model=self._bad_model,
                on_report=self._on_report, on_live=self._on_live,
                rng=random.Random(rng.getrandbits(63)),
            )  # fmt: skip
            if device.battery_start_percent is not None:
                battery = device.hardware.battery
                drain = battery.drain_percent_per_hour if battery is not None else 0.0
                self._battery[device.id] = (device.battery_start_percent, drain, 0.0)
        self.failover = (
            FailoverRehearsal(config.workloads, self.devices, self.scheduler, config.start,
                              self.timeline)
            if config.workloads else None
        )  # fmt: skip
        rollout = Rollout(config.rollout_id, config.rollout)
        self.controller = RolloutController(
            rollout, self.devices, self.agents, self.scheduler, config.start,
            requirements=config.release_facts(str(config.rollout.release)).requires,
            serving_before=self._view, timeline=self.timeline,
            interval_s=config.controller_interval_s, seed=config.seed,
            delivery=config.telemetry,
        )  # fmt: skip
        self.cohorts = CohortWatch(
            sorted({d.device_class for d in self.devices}), self.scheduler, config.start,
            self.timeline, config.seed,
        )  # fmt: skip
        hosting = self.failover.hosting() if self.failover is not None else {}
        targets = [FaultTarget(i, d.device_class, d.region, d.zone,
                               hosting.get(d.id, frozenset()))
                   for i, d in enumerate(self.devices)]  # fmt: skip
        self.faults = schedule_faults(config.faults, targets, config.hours * 3600, config.seed)
        self.wall_s = 0.0

    # What the pieces ask of each other.

    def _bad_model(self, release: str | None) -> BadModel | None:
        if release is None:
            return None
        ours = self.config.bad_release and release == str(self.config.rollout.release)
        if ours or is_bad_release(release, self.config.bad_patterns):
            return self.config.bad_model
        return None

    def _view(self, device_id: str) -> DeviceView | None:
        agent = self.agents.get(device_id)
        if agent is None:
            return None
        device = agent.device
        before = Serving(device.behaviour, device.speed_factor,
                         self._bad_model(device.current_release))  # fmt: skip
        live = agent.live_release == str(self.config.rollout.release)
        return DeviceView(before, agent.serving() if live else None,
                          agent.live_since_s if live else None)  # fmt: skip

    def _touch(self, device_id: str) -> None:
        """Tell the cohort watch what this device serves now (after any change)."""
        agent = self.agents[device_id]
        running = agent.running and not self.links[device_id].offline(self.scheduler.now_s)
        self.cohorts.update(device_id, agent.device.device_class, running, agent.serving())

    def _on_report(self, device_id: str, assignment: Assignment, outcome: InstallReport) -> None:
        self.controller.observe(device_id, assignment, outcome)

    def _on_live(self, agent: VirtualAgent) -> None:
        self._touch(agent.device.id)

    # Silences and liveness.

    def _silent(self, device_id: str, start_s: float, end_s: float | None) -> None:
        """The device stops heartbeating over [start_s, end_s) (None: for good)."""
        current = self._silences.get(device_id)
        device = self.agents[device_id].device
        interval_s = device.heartbeat_interval_s
        epoch = self._epochs.get(device_id, 0) + 1
        self._epochs[device_id] = epoch
        if current is not None and (current.end_s is None or current.end_s > start_s):
            # The same silence, longer: the last heartbeat stays what it was.
            start_s, last_s = current.start_s, current.last_s
            end_s = None if current.end_s is None or end_s is None else max(current.end_s, end_s)
        else:
            # The last heartbeat came up to one interval before the silence.
            rng = random.Random(f"silence:{self.config.seed}:{device_id}:{epoch}")
            last_s = start_s - rng.uniform(0.0, interval_s)
            self.lab_liveness.fall_silent(device_id, last_s, interval_s, device.network)
        self._silences[device_id] = _Silence(start_s, end_s, epoch, last_s)
        # When it ends the agent reports at once (after its back-off).
        back_s = None if end_s is None else end_s + RECONNECT_S
        if self.failover is not None:
            self.failover.node_failed(device_id)
        at = self.scheduler.at
        offline_s = offline_at_s(last_s, interval_s)
        if back_s is None or offline_s < back_s:
            at(offline_s, self._set_online, device_id, False, epoch)
        if back_s is not None:
            at(back_s, self._set_online, device_id, True, epoch)
            at(back_s, self._back, device_id, epoch)

    def _set_online(self, device_id: str, online: bool, epoch: int) -> None:
        """What rollouts see: online devices are healthy (as `rollout_observation` says)."""
        if self._epochs.get(device_id) == epoch:
            self.controller.set_healthy(device_id, online)

    def _back(self, device_id: str, epoch: int) -> None:
        """The first heartbeat after the silence of `epoch`."""
        if self._epochs.get(device_id) == epoch:
            self._silences.pop(device_id, None)
            self.lab_liveness.heartbeat(device_id, self.scheduler.now_s)

    def _set_liveness(self, device_id: str, state: Liveness) -> None:
        """A verdict of the liveness controller (or a returning heartbeat's)."""
        if self.liveness.get(device_id, Liveness.ALIVE) is state:
            return
        self.liveness[device_id] = state
        self.transitions[state] += 1
        if self.failover is not None:
            self.failover.set_liveness(device_id, state)

    def _watch_outages(self, device_id: str) -> None:
        link = self.links[device_id]
        if link.conditions.outage is None:
            return
        start = link.next_outage_start(self.scheduler.now_s)
        if math.isinf(start) or start > self.config.hours * 3600:
            return
        self.scheduler.at(start, self._outage, device_id)

    def _outage(self, device_id: str) -> None:
        link, now = self.links[device_id], self.scheduler.now_s
        self._touch(device_id)
        back = link.next_online(now)
        self._silent(device_id, now, None if math.isinf(back) else back)
        if not math.isinf(back):
            self.scheduler.at(back, self._outage_over, device_id)

    def _outage_over(self, device_id: str) -> None:
        self._touch(device_id)
        self._watch_outages(device_id)

    # Faults and batteries.

    def _fault(self, event: FaultEvent) -> None:
        now = self.scheduler.now_s
        ids = [self.devices[i].id for i in event.device_indices]
        self.timeline.append(TimelineEntry(now, f"fault-{event.kind.value}",
                                           f"{event.describe()}: {', '.join(ids[:5])}"
                                           + (" ..." if len(ids) > 5 else "")))  # fmt: skip
        for device_id in ids:
            agent, link = self.agents[device_id], self.links[device_id]
            match event.kind:
                case FaultKind.AGENT_CRASH:
                    if agent.running:
                        agent.go_down()
                        self.scheduler.after(event.restart_after_s, self._come_back, device_id)
                        self._silent(device_id, now, now + event.restart_after_s)
                case FaultKind.NODE_DEATH:
                    back = None if event.return_after_s is None else now + event.return_after_s
                    self._kill(device_id, back)
                case FaultKind.PARTITION:
                    link.add_downtime(now, now + event.duration_s)
                    self._silent(device_id, now, now + event.duration_s)
                    self.scheduler.after(event.duration_s, self._touch, device_id)
                case FaultKind.BATTERY_DRAIN:
                    self._set_drain(device_id, event.drain_percent_per_hour)
            self._touch(device_id)

    def _come_back(self, device_id: str) -> None:
        self.agents[device_id].come_back()
        self._touch(device_id)

    def _kill(self, device_id: str, back_s: float | None) -> None:
        now = self.scheduler.now_s
        agent = self.agents[device_id]
        agent.go_down()
        self.links[device_id].add_downtime(now, math.inf if back_s is None else back_s)
        self._silent(device_id, now, back_s)
        if back_s is not None:
            self.scheduler.at(back_s, self._come_back, device_id)
        self._touch(device_id)

    def battery_level(self, device_id: str) -> float | None:
        state = self._battery.get(device_id)
        if state is None:
            return None
        level, drain, at_s = state
        return max(0.0, level - drain * (self.scheduler.now_s - at_s) / 3600)

    def _set_drain(self, device_id: str, drain: float) -> None:
        level = self.battery_level(device_id)
        if level is None:
            return
        self._battery[device_id] = (level, drain, self.scheduler.now_s)
        self._schedule_depletion(device_id)

    def _schedule_depletion(self, device_id: str) -> None:
        level, drain, at_s = self._battery[device_id]
        if drain > 0:
            self.scheduler.at(at_s + level / drain * 3600, self._depleted, device_id,
                              (level, drain, at_s))  # fmt: skip

    def _depleted(self, device_id: str, state: tuple[float, float, float]) -> None:
        if self._battery.get(device_id) == state and self.agents[device_id].running:
            self.timeline.append(
                TimelineEntry(
                    self.scheduler.now_s, "battery-empty", f"{device_id}: battery flat, node down"
                )
            )
            self._kill(device_id, None)

    def _sample_batteries(self) -> None:
        if self.failover is None:
            return
        for device_id in sorted(self.failover.hosting()):
            level = self.battery_level(device_id)
            if level is not None and self.agents[device_id].running:
                self.failover.watch_battery(device_id, level)
        self.scheduler.after(self.failover.battery_sample_s(), self._sample_batteries)

    # The run.

    def run(self) -> Rehearsal:
        horizon_s = self.config.hours * 3600
        began = time.perf_counter()
        for device in self.devices:
            self._touch(device.id)
            if not device.online:
                self._kill(device.id, None)
            self._watch_outages(device.id)
            if device.id in self._battery:
                self._schedule_depletion(device.id)
        for event in self.faults:
            self.scheduler.at(event.at_s, self._fault, event)
        self.controller.request(0.0)
        self.cohorts.start()
        self.scheduler.after(0.0, self._sample_batteries)
        self.scheduler.run(horizon_s)
        for agent in self.agents.values():
            agent.close_exposure()
        self.wall_s = time.perf_counter() - began
        return self
