"""Placement controller: every tick, compute the failover step over the whole fleet and
publish the placement, each replica with its placement generation, in the desired state of
the nodes whose replicas changed.

    find: one read of the fleet (devices, node health, workloads, placement, migrations);
          with `placement_forecast_horizon_s`, its nodes as forecast over that horizon
          (`node_trends`), and each scored decision's reason says so
    decide: core.failover.plan_failover_step (place + hold on suspect + reschedule on dead
            within residency + rate limits), then per move:
              off a dead node or a suspect one (backfill)  -> published as is (failover)
              off a live node whose copy is healthy         -> kept where it is, and a planned
                                                               migration is queued instead
              a replica a migration is moving               -> kept until the migration commits
    do: one transaction: the placement (optimistic version), new migrations, the affected
        devices' desired state; then wake their long polls

A tick is idempotent: on unchanged input the plan is a fixpoint and nothing is written. Two
control-plane replicas running it race on the placement row's version; the loser retries on
its next tick.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from edgefleet.clock import Clock
from edgefleet.core.workloads.failover import plan_failover_step
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.migration import Migration, MigrationTrigger
from edgefleet.core.workloads.move import PlacementMove, classify_move
from edgefleet.core.workloads.placement import (
    Decision,
    DecisionAction,
    Node,
    Placement,
    Topology,
    build_plan,
    violated_constraint,
)
from edgefleet.core.workloads.placement_record import decision_key, decision_to_dict
from edgefleet.server.services.desired import refresh_device, refresh_hosting_nodes
from edgefleet.server.services.fleet_view import FleetView, load_view
from edgefleet.server.services.node_trends import NodeTrends, forecast_destinations
from edgefleet.server.services.policies import residency_holds
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.server.workload_settings import WorkloadSettings
from edgefleet.store import Database

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system"
HELD_BY_POLICY = "no new placements:"  # how a held workload's decisions say why


def new_migration_id() -> str:
    return f"mig-{secrets.token_hex(6)}"


@dataclass(frozen=True)
class PlacementTick:
    moves: tuple[Decision, ...]
    unplaceable: tuple[Decision, ...]
    migrations: tuple[Migration, ...]
    devices: tuple[str, ...]  # whose desired state changed


class PlacementController:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: WorkloadSettings,
        watch: DesiredStateWatch,
        trends: NodeTrends | None = None,  # shared with the liveness controller
    ) -> None:
        self._db = db
        self._clock = clock
        self._settings = settings
        self._watch = watch
        self._forecast = forecast_destinations(settings, trends or NodeTrends())

    def tick(self) -> PlacementTick | None:
        """One placement step; None when nothing had to change."""
        now = self._clock.now()
        with self._db.read() as tx:
            if not tx.workloads.all() and not tx.placement.load().placement.assignments:
                return None  # nothing declared, nothing placed: no need to read the fleet
            view = load_view(tx, now)
            held = residency_holds(tx, view.specs)
        current = view.placement.placement
        nodes = view.nodes(self._forecast)
        step = plan_failover_step(
            view.specs, nodes, Topology(), current, now, view.liveness_since(),
            self._settings.failover_policy(),
        )  # fmt: skip
        by_id = {n.id: n for n in nodes}
        decisions: list[Decision] = []
        queued: list[Migration] = []
        for d in step.plan.decisions:
            if self._forecast is not None:
                d = self._forecast.noted(d)
            if d.workload in held:
                decisions.append(hold_for_policy(d, held[d.workload]))
                continue
            decided, migration = self._plan_move(d, view, by_id, current, now)
            decisions.append(decided)
            if migration is not None:
                queued.append(migration)
        plan = build_plan(decisions, current, now)
        stored = _with_last_moves(plan.decisions, view.placement.decisions, now)
        same_decisions = [_stored_key(d, held) for d in stored] == [
            _stored_key(d, held) for d in view.placement.decisions
        ]
        if plan.placement == current and same_decisions and not queued:
            return None
        affected = _changed_nodes(current, plan.placement)
        refreshed: list[str] = []
        created: list[Migration] = []
        with self._db.transaction() as tx:
            tx.placement.save(view.placement, plan.placement, stored, now)
            tx.placement_moves.record(_moves(plan.decisions, view, now))
            busy = {(m.workload, m.replica) for m in tx.migrations.active()}
            for m in queued:
                if (m.workload, m.replica) not in busy:
                    tx.migrations.insert(m)
                    busy.add((m.workload, m.replica))
                    created.append(m)
            refreshed = [d for d in sorted(affected) if refresh_device(tx, d)]
            refreshed += refresh_hosting_nodes(tx, current, plan.placement, affected)
        for device_id in refreshed:
            self._watch.notify(device_id)
        result = PlacementTick(plan.moves, plan.unplaceable, tuple(created), tuple(refreshed))
        self._log(result, current, plan.placement)
        return result

    def _plan_move(
        self,
        d: Decision,
        view: FleetView,
        nodes: Mapping[str, Node],
        current: Placement,
        now: datetime,
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
        assignment = next(a for a in current.assignments if (a.workload, a.replica) == key)
        copy = view.health[source].copy_status(d.workload, d.replica)
        if copy is None or copy.generation != assignment.generation or not copy.healthy:
            return d, None  # nothing healthy to hand over: a cold move loses nothing
        record = view.workloads[d.workload]
        draining = not source_node.schedulable
        unsuitable = violated_constraint(record.spec, source_node) is not None
        if not (draining or unsuitable or self._settings.rebalance_migrations):
            return _kept(d, source, f"kept on {source}: rebalance migrations are off "
                                    f"({d.reason})"), None  # fmt: skip
        trigger = MigrationTrigger.FORECAST if draining else MigrationTrigger.REBALANCE
        why = view.health[source].drain.reason if draining else d.reason
        migration = Migration(
            id=new_migration_id(), workload=d.workload, replica=d.replica, source=source,
            target=d.node_id or "", trigger=trigger, reason=why, stateful=record.spec.stateful,
            created_by=SYSTEM_ACTOR, created_at=now, source_generation=assignment.generation,
        )  # fmt: skip
        reason = f"kept on {source} while a planned migration ({trigger}) moves it to " \
                 f"{d.node_id}: {why}"  # fmt: skip
        return _kept(d, source, reason), migration

    def _log(self, tick: PlacementTick, before: Placement, after: Placement) -> None:
        for d in tick.moves:
            log.info(
                "replica moved",
                extra={
                    "workload": d.workload,
                    "replica": d.replica,
                    "from": d.from_node_id,
                    "to": d.node_id,
                    "generation": d.generation,
                    "reason": d.reason,
                },
            )
        for d in tick.unplaceable:
            log.warning(
                "replica unplaceable",
                extra={"workload": d.workload, "replica": d.replica, "reason": d.reason},
            )
        for m in tick.migrations:
            log.info(
                "migration queued",
                extra={
                    "migration": m.id,
                    "workload": m.workload,
                    "replica": m.replica,
                    "from": m.source,
                    "to": m.target,
                    "trigger": m.trigger.value,
                },
            )
        if before.generation != after.generation:
            log.info(
                "placement published",
                extra={"generation": after.generation, "devices": ",".join(tick.devices)},
            )


def _with_last_moves(
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


def _moves(decisions: Sequence[Decision], view: FleetView, now: datetime) -> list[PlacementMove]:
    """The history rows of this tick: each replica given a node it was not on."""
    return [
        PlacementMove(
            workload=d.workload, replica=d.replica, from_node_id=d.from_node_id,
            to_node_id=d.node_id, reason=d.reason, generation=d.generation, at=now,
            kind=classify_move(d.from_node_id, None if d.from_node_id is None
                               else view.liveness(d.from_node_id)),
        )
        for d in decisions
        if d.action in (DecisionAction.MOVE, DecisionAction.PLACE)
        and d.node_id is not None and d.generation is not None  # build_plan numbered it
    ]  # fmt: skip


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


def _stored_key(d: Mapping[str, Any], held: Mapping[str, str]) -> tuple[Any, ...]:
    """`decision_key`, plus the reason of a held workload's decisions, so that a hold
    starting or ending is stored (and shown) even when no replica moves."""
    shown = d["workload"] in held or HELD_BY_POLICY in d["reason"]
    return (*decision_key(d), d["reason"] if shown else "")


def _kept(d: Decision, source: str, reason: str) -> Decision:
    return replace(d, action=DecisionAction.KEEP, node_id=source, reason=reason, terms=None)


def _changed_nodes(before: Placement, after: Placement) -> set[str]:
    """Nodes that gain or lose a replica, or hold one at a new generation."""
    old = {(a.workload, a.replica): (a.node_id, a.generation) for a in before.assignments}
    new = {(a.workload, a.replica): (a.node_id, a.generation) for a in after.assignments}
    nodes: set[str] = set()
    for key in old.keys() | new.keys():
        if old.get(key) != new.get(key):
            nodes.update(value[0] for value in (old.get(key), new.get(key)) if value)
    return nodes
