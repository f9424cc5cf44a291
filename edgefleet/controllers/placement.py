"""The placement controller's step, one for the control plane and the lab: load → decide →
apply, through a `PlacementStore` port. Every tick computes the failover step over the
whole fleet and publishes the placement, each replica with its placement generation.

    store.load ─▶ plan_failover_step ─▶ per move: failover, planned migration or kept
        ─▶ build_plan ─▶ anything changed? ─▶ store.apply (placement with its version,
        moves, new migrations, the affected devices' desired state)

1. *Load*: one consistent read of the fleet (`PlacementView`): the declared workloads, the
   nodes as placement sees them (now, or as forecast: the store decides), when each node
   entered its liveness, the placement in force with its version, the active migrations,
   the copies the nodes report, and the workloads a policy holds. None when nothing is
   declared and nothing placed.
2. *Decide* (`decide`, pure but for migration ids): `core.workloads.failover.plan_failover_step`
   (place + hold on suspect + reschedule on dead within residency + rate limits), then per
   move:

       off a dead node or a suspect one (backfill)  -> published as is (failover)
       off a live node whose copy is healthy         -> kept where it is, and a planned
                                                        migration is queued instead
       a replica a migration is moving               -> kept until the migration commits

3. *Apply*: the store writes the placement (refused with `Conflict` when its version moved:
   another replica got there first, and the next tick decides again), the move history,
   the new migrations (none for a replica already migrating), and the desired state of
   every node whose replicas changed, together; then wakes those devices.

A tick is idempotent: on unchanged input the plan is a fixpoint and nothing is applied.
The control plane's store is SQL (`server/services/placement_store.py`), ticked every
`controller_interval_s`; the lab's is in memory (`controllers/memory_placement.py`), ticked
on its simulated clock when liveness changes, a drain starts, or a suspect node's grace
ends (`PlacementController.next_due`). Both run this code.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, Protocol

from edgefleet.core.workloads.failover import FailoverPolicy, plan_failover_step
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.migration import CopyStatus, Migration, MigrationTrigger
from edgefleet.core.workloads.move import PlacementMove, classify_move
from edgefleet.core.workloads.placement import (
    Decision,
    DecisionAction,
    Node,
    Placement,
    PlacementPlan,
    Topology,
    build_plan,
    violated_constraint,
)
from edgefleet.core.workloads.placement_record import (
    PlacementRecord,
    decision_key,
    decision_to_dict,
)
from edgefleet.core.workloads.workload import Workload

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system"
HELD_BY_POLICY = "no new placements:"  # how a held workload's decisions say why

CopyKey = tuple[str, str, int]  # (node, workload, replica)


def new_migration_id() -> str:
    return f"mig-{secrets.token_hex(6)}"


@dataclass(frozen=True)
class PlacementPolicy:
    """What the controller decides by (the server's `WorkloadSettings.placement_policy`)."""

    failover: FailoverPolicy = field(default_factory=FailoverPolicy)
    rebalance_migrations: bool = True  # a better node alone starts a planned migration


@dataclass(frozen=True)
class PlacementView:
    """The fleet as one tick sees it, from one consistent read."""

    workloads: Mapping[str, Workload]  # by name, in the store's order
    nodes: Sequence[Node]  # as placement sees them (forecast, when the store forecasts)
    liveness_since: Mapping[str, datetime]  # node -> when it entered its liveness
    record: PlacementRecord  # the placement in force, its stored decisions and version
    migrations: Sequence[Migration] = ()  # the active ones
    copies: Mapping[CopyKey, CopyStatus] = field(default_factory=dict)  # as nodes report
    drain_reasons: Mapping[str, str] = field(default_factory=dict)  # why a node drains
    held: Mapping[str, str] = field(default_factory=dict)  # workload -> the policy's refusal
    forecast_note: str | None = None  # the nodes were seen by forecast: decisions say so

    def liveness(self, node_id: str) -> Liveness:
        """The node's liveness as stored (a node the view lacks is dead)."""
        node = self.nodes_by_id.get(node_id)
        return Liveness.DEAD if node is None else node.liveness

    @cached_property
    def nodes_by_id(self) -> Mapping[str, Node]:
        return {n.id: n for n in self.nodes}


@dataclass(frozen=True)
class PlacementOutcome:
    """What a store applies: the plan, the decisions to store, the history rows, the
    migrations to queue, and the nodes whose replicas changed."""

    plan: PlacementPlan
    decisions: tuple[Mapping[str, Any], ...]  # as stored (`placements show`)
    moves: tuple[PlacementMove, ...]
    migrations: tuple[Migration, ...]
    affected: frozenset[str]

    @property
    def deferred(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.plan.decisions if d.action is DecisionAction.DEFER)


@dataclass(frozen=True)
class Applied:
    migrations: tuple[Migration, ...]  # created (a replica already migrating gets none)
    devices: tuple[str, ...]  # whose desired state changed


class PlacementStore(Protocol):
    """The port the placement controller runs on."""

    def load(self, now: datetime) -> PlacementView | None:
        """The fleet in one read; None when nothing is declared and nothing placed."""
        ...

    def apply(self, view: PlacementView, outcome: PlacementOutcome, now: datetime) -> Applied:
        """Store `outcome` over the placement read in `view`, publish the affected devices'
        desired state, and wake them; raises `Conflict` when the placement changed since."""
        ...


@dataclass(frozen=True)
class PlacementTick:
    moves: tuple[Decision, ...]
    unplaceable: tuple[Decision, ...]
    migrations: tuple[Migration, ...]
    devices: tuple[str, ...]  # whose desired state changed
    deferred: tuple[Decision, ...] = ()  # moves a rate limit postponed


class PlacementController:
    """`new_id`: how queued migrations are named."""

    def __init__(
        self,
        store: PlacementStore,
        policy: PlacementPolicy,
        new_id: Callable[[], str] = new_migration_id,
    ) -> None:
        self._store = store
        self._policy = policy
        self._new_id = new_id
        self.next_due: datetime | None = None  # when waiting alone changes the plan

    def tick(self, now: datetime) -> PlacementTick | None:
        """One placement step; None when nothing had to change."""
        view = self._store.load(now)
        if view is None:
            self.next_due = None
            return None
        self.next_due = grace_ends_at(view, self._policy.failover, now)
        outcome = decide(view, self._policy, now, self._new_id)
        if outcome is None:
            return None
        applied = self._store.apply(view, outcome, now)
        plan = outcome.plan
        tick = PlacementTick(plan.moves, plan.unplaceable, applied.migrations, applied.devices,
                             outcome.deferred)  # fmt: skip
        _log(tick, view.record.placement, plan.placement)
        return tick


def decide(
    view: PlacementView,
    policy: PlacementPolicy,
    now: datetime,
    new_id: Callable[[], str] = new_migration_id,
) -> PlacementOutcome | None:
    """The placement step over `view`; None when it would store what is stored."""
    current = view.record.placement
    step = plan_failover_step(
        list(view.workloads.values()), view.nodes, Topology(), current, now,
        view.liveness_since, policy.failover,
    )  # fmt: skip
    by_id = view.nodes_by_id
    decisions: list[Decision] = []
    queued: list[Migration] = []
    for d in step.plan.decisions:
        if view.forecast_note is not None:
            d = note_forecast(d, view.forecast_note)
        if d.workload in view.held:
            decisions.append(hold_for_policy(d, view.held[d.workload]))
            continue
        decided, migration = plan_move(d, view, by_id, policy, now, new_id)
        decisions.append(decided)
        if migration is not None:
            queued.append(migration)
    plan = build_plan(decisions, current, now)
    stored = with_last_moves(plan.decisions, view.record.decisions, now)
    held = view.held
    same_decisions = [stored_key(d, held) for d in stored] == [
        stored_key(d, held) for d in view.record.decisions
    ]
    if plan.placement == current and same_decisions and not queued:
        return None
    return PlacementOutcome(
        plan, tuple(stored), moves_of(plan.decisions, view, now), tuple(queued),
        frozenset(changed_nodes(current, plan.placement)),
    )  # fmt: skip


def plan_move(
    d: Decision,
    view: PlacementView,
    nodes: Mapping[str, Node],
    policy: PlacementPolicy,
    now: datetime,
    new_id: Callable[[], str] = new_migration_id,
) -> tuple[Decision, Migration | None]:
    """A move off a live node becomes a planned migration (the replica stays put until
    it commits); moves off dead or suspect nodes are failovers and go ahead."""
    source = d.from_node_id
    if d.action is not DecisionAction.MOVE or source is None or d.node_id in (None, source):
        return d, None
    key = (d.workload, d.replica)
    active = next((m for m in view.migrations if (m.workload, m.replica) == key), None)
    source_node = nodes.get(source)
    if active is not None and view.liveness(source) is not Liveness.DEAD:
        reason = f"held on {source}: migration {active.id} moves it to {active.target} " \
                 f"({active.state})"  # fmt: skip
        return _kept(d, source, reason), None
    if source_node is None or source_node.liveness is not Liveness.ALIVE:
        return d, None  # failover or backfill: the copy is not (reliably) running
    assignment = next(a for a in view.record.placement.assignments
                      if (a.workload, a.replica) == key)  # fmt: skip
    copy = view.copies.get((source, d.workload, d.replica))
    if copy is None or copy.generation != assignment.generation or not copy.healthy:
        return d, None  # nothing healthy to hand over: a cold move loses nothing
    spec = view.workloads[d.workload]
    draining = not source_node.schedulable
    unsuitable = violated_constraint(spec, source_node) is not None
    if not (draining or unsuitable or policy.rebalance_migrations):
        return _kept(d, source, f"kept on {source}: rebalance migrations are off "
                                f"({d.reason})"), None  # fmt: skip
    trigger = MigrationTrigger.FORECAST if draining else MigrationTrigger.REBALANCE
    why = view.drain_reasons.get(source, "") if draining else d.reason
    migration = Migration(
        id=new_id(), workload=d.workload, replica=d.replica, source=source,
        target=d.node_id or "", trigger=trigger, reason=why, stateful=spec.stateful,
        created_by=SYSTEM_ACTOR, created_at=now, source_generation=assignment.generation,
    )  # fmt: skip
    reason = f"kept on {source} while a planned migration ({trigger}) moves it to " \
             f"{d.node_id}: {why}"  # fmt: skip
    return _kept(d, source, reason), migration


def grace_ends_at(view: PlacementView, policy: FailoverPolicy, now: datetime) -> datetime | None:
    """The next moment a suspect node holding replicas counts as dead (its grace over),
    after `now`; None when none will (news aside)."""
    hosting = {a.node_id for a in view.record.placement.assignments}
    grace = timedelta(seconds=policy.suspect_grace_s)
    nodes = view.nodes_by_id
    ends = [
        view.liveness_since.get(node_id, now) + grace
        for node_id in hosting
        if node_id in nodes and nodes[node_id].liveness is Liveness.SUSPECT
    ]
    later = [at for at in ends if at > now]
    return min(later) if later else None


def note_forecast(d: Decision, note: str) -> Decision:
    """`d`, its reason saying that the nodes it weighed (scores, free capacity) were
    forecast; a removal or a hold on a suspect node weighs none."""
    if d.action in (DecisionAction.REMOVE, DecisionAction.HOLD):
        return d
    return replace(d, reason=f"{d.reason}; {note}")


def hold_for_policy(d: Decision, violation: str) -> Decision:
    """`d` for a workload a policy now refuses: what runs stays where it is, nothing is
    placed anew, and each replica says why."""
    why = f"{HELD_BY_POLICY} {violation}"
    if d.action in (DecisionAction.PLACE, DecisionAction.MOVE) and d.from_node_id is None:
        return replace(d, action=DecisionAction.UNPLACEABLE, node_id=None, reason=why, terms=None)
    if d.action is DecisionAction.MOVE and d.from_node_id is not None:
        return _kept(d, d.from_node_id, f"kept on {d.from_node_id}; {why}")
    if d.action is DecisionAction.REMOVE:
        return d
    return replace(d, reason=f"{d.reason}; {why}")


def with_last_moves(
    decisions: Sequence[Decision], previous: Sequence[Mapping[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    """Decisions to store, each with the last time its replica moved and why (a failover's
    reason outlives the tick that made it: `workloads show` reports it)."""
    before = {(d["workload"], d["replica"]): d.get("last_move") for d in previous}
    out = []
    for d in decisions:
        stored = decision_to_dict(d)
        if d.action in (DecisionAction.MOVE, DecisionAction.PLACE) and d.node_id is not None:
            stored["last_move"] = {"at": now.isoformat(), "from": d.from_node_id,
                                   "to": d.node_id, "reason": d.reason}  # fmt: skip
        elif before.get((d.workload, d.replica)):
            stored["last_move"] = before[(d.workload, d.replica)]
        out.append(stored)
    return out


def moves_of(
    decisions: Sequence[Decision], view: PlacementView, now: datetime
) -> tuple[PlacementMove, ...]:
    """The history rows of this tick: each replica given a node it was not on."""
    return tuple(
        PlacementMove(
            workload=d.workload, replica=d.replica, from_node_id=d.from_node_id,
            to_node_id=d.node_id, reason=d.reason, generation=d.generation, at=now,
            kind=classify_move(d.from_node_id, None if d.from_node_id is None
                               else view.liveness(d.from_node_id)),
        )
        for d in decisions
        if d.action in (DecisionAction.MOVE, DecisionAction.PLACE)
        and d.node_id is not None and d.generation is not None  # build_plan numbered it
    )  # fmt: skip


def stored_key(d: Mapping[str, Any], held: Mapping[str, str]) -> tuple[Any, ...]:
    """`decision_key`, plus the reason of a held workload's decisions, so that a hold
    starting or ending is stored (and shown) even when no replica moves."""
    shown = d["workload"] in held or HELD_BY_POLICY in d["reason"]
    return (*decision_key(d), d["reason"] if shown else "")


def changed_nodes(before: Placement, after: Placement) -> set[str]:
    """Nodes that gain or lose a replica, or hold one at a new generation."""
    old = {(a.workload, a.replica): (a.node_id, a.generation) for a in before.assignments}
    new = {(a.workload, a.replica): (a.node_id, a.generation) for a in after.assignments}
    nodes: set[str] = set()
    for key in old.keys() | new.keys():
        if old.get(key) != new.get(key):
            nodes.update(value[0] for value in (old.get(key), new.get(key)) if value)
    return nodes


def _kept(d: Decision, source: str, reason: str) -> Decision:
    return replace(d, action=DecisionAction.KEEP, node_id=source, reason=reason, terms=None)


def _log(tick: PlacementTick, before: Placement, after: Placement) -> None:
    for d in tick.moves:
        log.info("replica moved", extra={
            "workload": d.workload, "replica": d.replica, "from": d.from_node_id,
            "to": d.node_id, "generation": d.generation, "reason": d.reason,
        })  # fmt: skip
    for d in tick.unplaceable:
        log.warning(
            "replica unplaceable",
            extra={"workload": d.workload, "replica": d.replica, "reason": d.reason},
        )
    for m in tick.migrations:
        log.info("migration queued", extra={
            "migration": m.id, "workload": m.workload, "replica": m.replica,
            "from": m.source, "to": m.target, "trigger": m.trigger.value,
        })  # fmt: skip
    if before.generation != after.generation:
        log.info(
            "placement published",
            extra={"generation": after.generation, "devices": ",".join(tick.devices)},
        )
