"""Failover and migration rehearsals: the control plane's own placement controller
(`controllers.placement`: plan_failover_step, then failover, planned migration or kept per
move) over an in-memory store, ticked on the lab's simulated clock as the liveness
controller declares nodes suspect and dead; and what only the lab has: when a moved
replica is healthy again, the returning node's fencing, and the battery it drains by.

    node silent ─▶ suspect (phi) ─▶ held in place ─▶ dead (phi), or its grace over ─▶
        placement tick: moves ─▶ each moved replica healthy on its new node after its
        start-up ─▶ recorded
    node back ─▶ fence_node: the copies it no longer owns are stopped ─▶ recorded
    battery falling ─▶ fit_trend + decide_drain: cordon before it is empty ─▶ proactive
        move (recorded with the forecast crossing)

The placement starts empty (the first tick places the profile's workloads, as the control
plane's first tick does) or as copied from a control plane. Ticks run on liveness changes
of nodes that hold replicas, when a drain starts, when a suspect node's grace ends
(`next_due`), and again while moves are deferred by the rate limits. The store reports no
copies of replicas, so a move off a live node (a drain) is a cold move where the control
plane would run a planned migration.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from edgefleet.controllers.memory_placement import MemoryPlacementStore
from edgefleet.controllers.placement import PlacementController, PlacementPolicy
from edgefleet.core.workloads.failover import (
    FailoverPolicy,
    decide_drain,
    fence_node,
    fit_trend,
)
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.placement import Placement
from edgefleet.core.workloads.workload import Workload
from edgefleet.sim.lab.controller import TimelineEntry
from edgefleet.sim.lab.fleet_model import LabDevice
from edgefleet.sim.lab.scheduler import EventScheduler

RETRY_STEP_S = 10.0
BATTERY_SAMPLE_S = 300.0
BATTERY_SAMPLES_KEPT = 12
DEFAULT_PROBE_S = 5.0


@dataclass
class MoveRecord:
    workload: str
    replica: int
    from_node: str | None
    to_node: str | None
    kind: str  # failover, rebalance (a drain), unplaceable
    reason: str
    trigger_s: float | None  # when the node failed (or the drain was decided)
    decided_s: float
    healthy_s: float | None = None


@dataclass
class NodeEvent:
    node: str
    kind: str  # died, returned, drained
    at_s: float
    detail: str = ""
    replicas: list[str] = field(default_factory=list)


class FailoverRehearsal:
    def __init__(
        self,
        workloads: Sequence[Workload],
        devices: Sequence[LabDevice],
        scheduler: EventScheduler,
        start: datetime,
        timeline: list[TimelineEntry],
        policy: FailoverPolicy = FailoverPolicy(),
        placement: Placement | None = None,
    ) -> None:
        self._workloads = list(workloads)
        self._devices = {d.id: d for d in devices}
        self._scheduler = scheduler
        self._start = start
        self._timeline = timeline
        self.store = MemoryPlacementStore(self._workloads, (d.node() for d in devices),
                                          placement)  # fmt: skip
        numbers = itertools.count(1)  # seeded runs give the same report: no random ids
        self.controller = PlacementController(
            self.store, PlacementPolicy(policy), new_id=lambda: f"mig-lab-{next(numbers)}"
        )
        self.moves: list[MoveRecord] = []
        self.events: list[NodeEvent] = []
        self.steps = 0
        self._failed_at: dict[str, float] = {}
        self._held_before: dict[str, list[tuple[str, int, int]]] = {}
        self._step_pending: float | None = None  # when the requested tick runs
        self._batteries: dict[str, list[tuple[datetime, float]]] = {}
        first = self.controller.tick(start)
        unplaceable = () if first is None else first.unplaceable
        self.initial_unplaceable = [(d.workload, d.replica, d.reason) for d in unplaceable]
        placed = len(self.placement.assignments)
        self._log(
            0.0,
            "placement",
            f"placed {placed} replica(s) of {len(self._workloads)} "
            f"workload(s); {len(self.initial_unplaceable)} unplaceable",
        )

    @property
    def placement(self) -> Placement:
        return self.store.placement

    def hosting(self) -> dict[str, frozenset[str]]:
        """Node -> the workloads placed on it now."""
        found: dict[str, set[str]] = {}
        for a in self.placement.assignments:
            found.setdefault(a.node_id, set()).add(a.workload)
        return {node: frozenset(names) for node, names in found.items()}

    def _now(self) -> datetime:
        return self._start + timedelta(seconds=self._scheduler.now_s)

    def _log(self, t: float, kind: str, text: str) -> None:
        self._timeline.append(TimelineEntry(t, kind, text))

    def _holds(self, node_id: str) -> bool:
        return any(a.node_id == node_id for a in self.placement.assignments)

    # Liveness.

    def node_failed(self, node_id: str) -> None:
        """The node went silent now (died, partitioned, crashed)."""
        if self._holds(node_id):
            self._failed_at[node_id] = self._scheduler.now_s
            self._held_before[node_id] = [
                (a.workload, a.replica, a.generation) for a in self.placement.on_node(node_id)
            ]

    def set_liveness(self, node_id: str, liveness: Liveness) -> None:
        node = self.store.node(node_id)
        if node is None or node.liveness is liveness:
            return
        self.store.set_liveness(node_id, liveness, self._now())
        held = node_id in self._held_before
        if liveness is Liveness.ALIVE:
            self._returned(node_id)
        if held or self._holds(node_id):
            self._request_step()

    def _returned(self, node_id: str) -> None:
        running = self._held_before.pop(node_id, None)
        self._failed_at.pop(node_id, None)
        if running is None:
            return
        fenced = fence_node(self.placement, node_id, running)
        stopped = [f"{f.workload}#{f.replica}" for f in fenced if not f.keep]
        self.events.append(NodeEvent(node_id, "returned", self._scheduler.now_s,
                                     f"stopped {len(stopped)} copy(ies) it no longer owns",
                                     stopped))  # fmt: skip
        self._log(
            self._scheduler.now_s,
            "node-returned",
            f"{node_id} is back: fenced, stopped {', '.join(stopped) or 'nothing'}",
        )

    # Steps.

    def _request_step(self, delay_s: float = 0.0) -> None:
        at_s = self._scheduler.now_s + delay_s
        if self._step_pending is None or at_s < self._step_pending:
            self._step_pending = at_s
            self._scheduler.at(at_s, self._step, at_s)

    def _step(self, at_s: float) -> None:
        if self._step_pending != at_s:
            return  # an earlier step was requested since
        self._step_pending = None
        now_s = self._scheduler.now_s
        tick = self.controller.tick(self._now())
        self.steps += 1
        for move in () if tick is None else tick.moves:
            source = move.from_node_id
            failed_at = self._failed_at.get(source or "")
            kind = "failover" if failed_at is not None else "rebalance"
            record = MoveRecord(move.workload, move.replica, source, move.node_id, kind,
                                move.reason, failed_at if failed_at is not None else now_s,
                                now_s)  # fmt: skip
            self.moves.append(record)
            self._scheduler.after(self._deploy_s(move.node_id, move.workload),
                                  self._healthy, record)  # fmt: skip
            self._log(
                now_s,
                kind,
                f"{move.workload}#{move.replica}: {source} -> {move.node_id}: {move.reason}",
            )
        for decision in () if tick is None else tick.unplaceable:
            if decision.from_node_id and decision.from_node_id in self._failed_at:
                self._log(
                    now_s,
                    "unplaceable",
                    f"{decision.workload}#{decision.replica}: {decision.reason}",
                )
        if tick is not None and tick.deferred:
            self._request_step(RETRY_STEP_S)
        due = self.controller.next_due  # a suspect node's grace ends: its replicas move
        if due is not None:
            self._request_step((due - self._now()).total_seconds())

    def _deploy_s(self, node_id: str | None, workload: str) -> float:
        device = self._devices.get(node_id or "")
        behaviour = device.behaviour if device is not None else None
        spec = next((w for w in self._workloads if w.name == workload), None)
        probe = spec.health_check.interval_s if spec and spec.health_check else DEFAULT_PROBE_S
        start = behaviour.start_s + behaviour.sandbox_s if behaviour is not None else 5.0
        return start + probe

    def _healthy(self, record: MoveRecord) -> None:
        record.healthy_s = self._scheduler.now_s

    # Proactive drains.

    def watch_battery(self, node_id: str, level_at: float) -> None:
        """Record a battery reading of a node holding replicas; drain it when the forecast
        crosses the threshold within the horizon."""
        node = self.store.node(node_id)
        if node is None or not node.schedulable or not self._holds(node_id):
            return
        samples = self._batteries.setdefault(node_id, [])
        samples.append((self._now(), level_at))
        del samples[:-BATTERY_SAMPLES_KEPT]
        trend = fit_trend(samples)
        if trend is None:
            return
        decision = decide_drain(node_id, {"battery_pct": trend}, self._now())
        if not decision.drain:
            return
        self.store.cordon(node_id, decision.reason)
        replicas = [f"{a.workload}#{a.replica}" for a in self.placement.on_node(node_id)]
        crosses = decision.crosses_at
        crosses_s = None if crosses is None else (crosses - self._start).total_seconds()
        self.events.append(NodeEvent(node_id, "drained", self._scheduler.now_s,
                                     decision.reason, replicas))  # fmt: skip
        self._log(
            self._scheduler.now_s,
            "drain",
            f"{node_id}: {decision.reason} "
            f"(battery {level_at:.0f}%, threshold crossed at "
            f"{'?' if crosses_s is None else round(crosses_s)}s)",
        )
        self._request_step()

    def battery_sample_s(self) -> float:
        return BATTERY_SAMPLE_S

    def summary_times(self) -> list[float]:
        """Seconds from a node failing to each of its replicas being healthy elsewhere."""
        return [m.healthy_s - m.trigger_s for m in self.moves
                if m.kind == "failover" and m.healthy_s is not None
                and m.trigger_s is not None and not math.isinf(m.healthy_s)]  # fmt: skip
