"""Failover and migration steps: what to move this step when nodes fail, come back, or are
forecast to fail, and how a returning node learns which copies it no longer owns.

One step (`plan_failover_step`) is level-triggered: it looks at node liveness and the
placement in force and returns the placement to publish now. Rerun it every tick.

    alive                  nothing special; `place` keeps replicas where they are unless
                           another node is better by more than the migration cost
    suspect (< grace)      replicas are held: paused in place, not moved (the node may come
                           back). Backfill: stateless replicas with priority at most
                           `backfill_max_priority` are restarted elsewhere at once
    suspect (>= grace)     treated as dead
    dead                   replicas are rescheduled onto healthy nodes; never across a
                           residency boundary (`place` filters by residency). A replica no
                           node can take stays assigned to the dead node (it resumes if the
                           node returns) and is reported unplaceable with the reason

Thundering herd: moves (replicas leaving a node, for any reason) are rate-limited per step,
fleet-wide and per destination zone. Urgent moves go first (off dead or gone nodes), then
backfills, then rebalancing; within each, higher priority first. A move admitted must also
fit its destination with the replicas that have not left yet; the rest are deferred (they
stay where they are) and the next step tries again.

Fencing: every replica that lands on a node gets a fresh placement generation, so a node
returning after a failover compares what it runs with the placement (`fence_node`) and stops
the copies it no longer owns; exactly the planned replicas keep running.

Proactive migration: `fit_trend` smooths a metric (battery charge, load) with an EWMA of its
level and slope (Holt's linear method, for irregular sampling); `decide_drain` cordons a
node whose forecast crosses a threshold within the horizon, so `place` moves its replicas
off before it fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from edgefleet.core.durations import format_duration
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.placement import (
    Decision,
    DecisionAction,
    Node,
    Placement,
    PlacementPlan,
    Topology,
    Weights,
    build_plan,
    place,
    violated_constraint,
)
from edgefleet.core.workloads.workload import Workload
from edgefleet.errors import InvalidInput


@dataclass(frozen=True)
class FailoverPolicy:
    suspect_grace_s: float = 30.0
    backfill_max_priority: int | None = None  # None: never backfill, always hold
    max_moves_per_step: int = 20
    max_moves_per_zone_per_step: int = 5

    def __post_init__(self) -> None:
        if self.suspect_grace_s < 0:
            raise InvalidInput("failover.suspect_grace_s: must not be negative")
        if self.max_moves_per_step < 1 or self.max_moves_per_zone_per_step < 1:
            raise InvalidInput("failover: move limits must be at least 1")


class MoveKind(StrEnum):
    FAILOVER = "failover"  # off a dead or vanished node: the replica is not running
    BACKFILL = "backfill"  # off a suspect node, for cheap low-priority work
    REBALANCE = "rebalance"  # a better node, a cordon, a changed constraint


@dataclass(frozen=True)
class FailoverStep:
    plan: PlacementPlan  # the placement to publish now
    target: PlacementPlan  # where the fleet converges if nothing changes
    deferred: tuple[Decision, ...]

    @property
    def moves(self) -> tuple[Decision, ...]:
        return self.plan.moves


def plan_failover_step(
    workloads: Sequence[Workload],
    nodes: Sequence[Node],
    topology: Topology,
    current: Placement,
    now: datetime,
    liveness_since: Mapping[str, datetime],
    policy: FailoverPolicy = FailoverPolicy(),
    weights: Weights = Weights(),
) -> FailoverStep:
    """The placement to publish this step, with failover, backfill and rate limits applied.

    `liveness_since[node_id]` is when the node entered its current liveness state; a
    suspect node without an entry is taken to have just become suspect.
    """
    effective = [_effective(node, now, liveness_since, policy) for node in nodes]
    by_id = {node.id: node for node in effective}
    by_name = {w.name: w for w in workloads}
    backfilled = {
        (a.workload, a.replica)
        for a in current.assignments
        if _backfills(by_name.get(a.workload), by_id.get(a.node_id), policy)
    }
    unpinned = Placement(
        tuple(a for a in current.assignments if (a.workload, a.replica) not in backfilled),
        current.generation,
    )
    target = place(workloads, effective, topology, unpinned, now, weights)
    sources = {(a.workload, a.replica): a.node_id for a in current.assignments}
    decisions = [
        _as_move(d, sources[d.workload, d.replica])
        if (d.workload, d.replica) in backfilled
        else _stay_if_stranded(d, by_name, by_id)
        for d in target.decisions
    ]
    admitted = _rate_limit(decisions, by_name, by_id, current, policy)
    published = build_plan(admitted, current, now)
    deferred = tuple(d for d in admitted if d.action is DecisionAction.DEFER)
    return FailoverStep(published, build_plan(decisions, current, now), deferred)


def _effective(
    node: Node, now: datetime, since: Mapping[str, datetime], policy: FailoverPolicy
) -> Node:
    """A suspect node past its grace period counts as dead."""
    if node.liveness is not Liveness.SUSPECT:
        return node
    suspect_s = (now - since.get(node.id, now)).total_seconds()
    return replace(node, liveness=Liveness.DEAD) if suspect_s >= policy.suspect_grace_s else node


def _backfills(w: Workload | None, node: Node | None, policy: FailoverPolicy) -> bool:
    limit = policy.backfill_max_priority
    return (
        w is not None
        and node is not None
        and node.liveness is Liveness.SUSPECT
        and limit is not None
        and w.priority <= limit
        and not w.stateful
    )


def _as_move(d: Decision, source: str) -> Decision:
    """A backfilled replica was unpinned from its suspect node: report it as a move."""
    if d.node_id is None:
        reason = f"held on {source} (suspect): no other node can take a backfill: {d.reason}"
        return replace(d, action=DecisionAction.HOLD, node_id=source, from_node_id=source,
                       reason=reason)  # fmt: skip
    reason = (
        f"backfilled from {source} (suspect) to {d.node_id}: stateless, priority "
        f"within the backfill limit; {d.reason}"
    )
    return replace(d, action=DecisionAction.MOVE, from_node_id=source, reason=reason)


def _stay_if_stranded(
    d: Decision, workloads: Mapping[str, Workload], nodes: Mapping[str, Node]
) -> Decision:
    """A replica on a dead node that no other node can take stays assigned there (it
    resumes if the node returns) unless the node now breaks one of its constraints."""
    if d.action is not DecisionAction.UNPLACEABLE or d.from_node_id is None:
        return d
    node = nodes.get(d.from_node_id)
    if node is None or node.liveness is not Liveness.DEAD:
        return d
    if violated_constraint(workloads[d.workload], node) is not None:
        return d
    reason = f"{d.reason}; stays assigned to {node.id} and resumes there if it returns"
    return replace(d, node_id=node.id, reason=reason)


def _move_kind(d: Decision, by_id: Mapping[str, Node]) -> MoveKind | None:
    """What kind of move `d` is, or None when it does not take a replica off a node."""
    if d.action is not DecisionAction.MOVE or d.from_node_id is None:
        return None
    source = by_id.get(d.from_node_id)
    if source is None or source.liveness is Liveness.DEAD:
        return MoveKind.FAILOVER
    if source.liveness is Liveness.SUSPECT:
        return MoveKind.BACKFILL
    return MoveKind.REBALANCE


_URGENCY = {MoveKind.FAILOVER: 0, MoveKind.BACKFILL: 1, MoveKind.REBALANCE: 2}


def _rate_limit(
    decisions: Sequence[Decision],
    workloads: Mapping[str, Workload],
    nodes: Mapping[str, Node],
    current: Placement,
    policy: FailoverPolicy,
) -> list[Decision]:
    """Admit moves within the step's limits and the destinations' real free capacity."""
    free = {
        n.id: [n.cpu_millicores - n.used_cpu_millicores, n.memory_mb - n.used_memory_mb,
               n.accelerators]
        for n in nodes.values()
    }  # fmt: skip
    for a in current.assignments:
        if a.node_id in free and a.workload in workloads:
            _take(free[a.node_id], workloads[a.workload], +1)
    for d in decisions:  # copies stopped outright leave at once, without counting as moves
        gone = d.action in (DecisionAction.REMOVE, DecisionAction.UNPLACEABLE)
        if gone and d.node_id is None and d.from_node_id in free and d.workload in workloads:
            _take(free[d.from_node_id], workloads[d.workload], -1)
    kinds = {id(d): _move_kind(d, nodes) for d in decisions}
    arrivals = [d for d in decisions if _arrives(d, current)]
    arrivals.sort(key=lambda d: _admission_key(d, kinds[id(d)], workloads))
    fleet_moves = 0
    zone_moves: dict[str, int] = {}
    verdict: dict[int, str | None] = {}  # id(decision) -> None admitted, or why deferred
    pending = list(arrivals)
    progress = True
    while pending and progress:
        progress = False
        for d in list(pending):
            w, kind = workloads[d.workload], kinds[id(d)]
            dest = nodes[d.node_id or ""]
            limited = kind is not None
            if limited and fleet_moves >= policy.max_moves_per_step:
                verdict[id(d)] = f"fleet-wide limit of {policy.max_moves_per_step} moves per step"
            elif limited and zone_moves.get(dest.zone, 0) >= policy.max_moves_per_zone_per_step:
                verdict[id(d)] = (
                    f"limit of {policy.max_moves_per_zone_per_step} moves per step into zone "
                    f"{dest.zone}"
                )
            elif not _fits(free[dest.id], w):
                verdict[id(d)] = f"{dest.id} has no room until other replicas leave it"
                continue  # may fit once a deferred departure from dest is admitted
            else:
                verdict[id(d)] = None
                _take(free[dest.id], w, +1)
                if d.from_node_id in free:
                    _take(free[d.from_node_id], w, -1)
                if limited:
                    fleet_moves += 1
                    zone_moves[dest.zone] = zone_moves.get(dest.zone, 0) + 1
                progress = True
            pending.remove(d)
    return [_apply_verdict(d, verdict.get(id(d)), current) for d in decisions]


def _arrives(d: Decision, current: Placement) -> bool:
    """Whether `d` puts a replica on a node it is not on now."""
    if d.node_id is None or d.action in (DecisionAction.REMOVE, DecisionAction.HOLD):
        return False
    return d.action is not DecisionAction.KEEP or d.node_id != d.from_node_id


def _admission_key(
    d: Decision, kind: MoveKind | None, workloads: Mapping[str, Workload]
) -> tuple[int, int, str, int]:
    urgency = -1 if kind is None else _URGENCY[kind]  # new replicas fill free room first
    return urgency, -workloads[d.workload].priority, d.workload, d.replica


def _apply_verdict(d: Decision, deferred_because: str | None, current: Placement) -> Decision:
    if deferred_because is None:
        return d
    if d.action is not DecisionAction.MOVE or d.from_node_id is None:
        return replace(
            d, action=DecisionAction.UNPLACEABLE, node_id=None,
            reason=f"placement on {d.node_id} deferred: {deferred_because}",
        )  # fmt: skip
    reason = f"move from {d.from_node_id} to {d.node_id} deferred: {deferred_because}"
    return replace(d, action=DecisionAction.DEFER, node_id=d.from_node_id, reason=reason)


def _fits(free: list[int], w: Workload) -> bool:
    r = w.resources
    return free[0] >= r.cpu_millicores and free[1] >= r.memory_mb and free[2] >= r.accelerators


def _take(free: list[int], w: Workload, sign: int) -> None:
    r = w.resources
    free[0] -= sign * r.cpu_millicores
    free[1] -= sign * r.memory_mb
    free[2] -= sign * r.accelerators


# -- fencing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FenceDecision:
    workload: str
    replica: int
    keep: bool
    reason: str


def fence_node(
    placement: Placement, node_id: str, running: Iterable[tuple[str, int, int]]
) -> tuple[FenceDecision, ...]:
    """For each (workload, replica, generation) a node runs: keep it, or stop it because
    the placement gave that replica to another node (or a newer generation) meanwhile."""
    owner = {(a.workload, a.replica): a for a in placement.assignments}
    out = []
    for workload, replica, generation in sorted(running):
        a = owner.get((workload, replica))
        if a is None:
            keep, reason = False, "no longer in the placement"
        elif a.node_id != node_id:
            keep, reason = False, f"moved to {a.node_id} at generation {a.generation}"
        elif a.generation != generation:
            keep, reason = False, f"superseded: placement generation is {a.generation}"
        else:
            keep, reason = True, f"owned at generation {a.generation}"
        out.append(FenceDecision(workload, replica, keep, reason))
    return tuple(out)


# -- forecasts and proactive migration -----------------------------------------------------


@dataclass(frozen=True)
class Trend:
    """A smoothed metric: its level at `at` and its slope per second."""

    level: float
    slope_per_s: float
    at: datetime

    def value_at(self, when: datetime) -> float:
        return self.level + self.slope_per_s * (when - self.at).total_seconds()


def fit_trend(
    samples: Sequence[tuple[datetime, float]], alpha: float = 0.3, beta: float = 0.2
) -> Trend | None:
    """Holt's linear smoothing over (time, value) samples in time order; None if < 2.

    >>> from datetime import datetime, timedelta, timezone
    >>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> trend = fit_trend([(t0 + timedelta(minutes=i), 80.0 - i) for i in range(10)])
    >>> round(trend.slope_per_s * 60, 2)
    -1.0
    """
    if not (0 < alpha <= 1 and 0 < beta <= 1):
        raise InvalidInput("fit_trend: alpha and beta must be in (0, 1]")
    if len(samples) < 2:
        return None
    (t0, v0), (t1, v1) = samples[0], samples[1]
    dt0 = (t1 - t0).total_seconds()
    level, slope, at = v0, (v1 - v0) / dt0 if dt0 > 0 else 0.0, t0
    for when, value in samples[1:]:
        dt = (when - at).total_seconds()
        if dt <= 0:
            continue
        predicted = level + slope * dt
        new_level = alpha * value + (1 - alpha) * predicted
        slope = beta * (new_level - level) / dt + (1 - beta) * slope
        level, at = new_level, when
    return Trend(level, slope, at)


FORECAST_NEVER_S = 100 * 365 * 86_400.0


def forecast_crossing(trend: Trend, threshold: float, *, falling: bool) -> datetime | None:
    """When the trend reaches `threshold` going down (`falling`) or up; None if never."""
    gap = trend.level - threshold if falling else threshold - trend.level
    if gap <= 0:
        return trend.at
    rate = -trend.slope_per_s if falling else trend.slope_per_s
    # A flat series fits a slope of float noise (1e-15): its crossing is millennia away and
    # would not fit a datetime. Beyond a century is never.
    if rate <= 0 or gap / rate > FORECAST_NEVER_S:
        return None
    return trend.at + timedelta(seconds=gap / rate)


@dataclass(frozen=True)
class DrainThreshold:
    metric: str  # e.g. "battery_pct", "cpu_load"
    value: float
    falling: bool  # True: trouble below `value` (battery); False: above (load)


DEFAULT_DRAIN_THRESHOLDS = (
    DrainThreshold("battery_pct", 15.0, falling=True),
    DrainThreshold("cpu_load", 0.95, falling=False),
)


@dataclass(frozen=True)
class DrainDecision:
    node_id: str
    drain: bool
    reason: str
    crosses_at: datetime | None = None


def decide_drain(
    node_id: str,
    trends: Mapping[str, Trend],
    now: datetime,
    horizon_s: float = 900.0,
    thresholds: Sequence[DrainThreshold] = DEFAULT_DRAIN_THRESHOLDS,
) -> DrainDecision:
    """Drain (cordon) a node whose forecast crosses a threshold within `horizon_s`, so its
    replicas migrate before it fails; the earliest crossing gives the reason."""
    soonest: tuple[datetime, DrainThreshold] | None = None
    for threshold in thresholds:
        trend = trends.get(threshold.metric)
        if trend is None:
            continue
        crossing = forecast_crossing(trend, threshold.value, falling=threshold.falling)
        if crossing is not None and (soonest is None or crossing < soonest[0]):
            soonest = (crossing, threshold)
    if soonest is None:
        return DrainDecision(node_id, False, "no forecast crosses a threshold")
    crossing, threshold = soonest
    in_s = max(0.0, (crossing - now).total_seconds())
    side = "below" if threshold.falling else "above"
    what = f"{threshold.metric} forecast {side} {threshold.value:g} in {format_duration(in_s)}"
    if in_s <= horizon_s:
        horizon = format_duration(horizon_s)
        return DrainDecision(
            node_id, True, f"{what}, within {horizon}: migrate its workloads now", crossing
        )
    return DrainDecision(node_id, False, f"{what}, beyond the horizon", crossing)
