"""The placement controller over the in-memory store: the first tick places, an unchanged
fleet soon is a fixpoint, a dead node's replicas fail over with fresh generations (recorded as
failovers), a suspect node holds them until its grace ends (`next_due` says when), a move
off a live node with a healthy copy becomes a planned migration, a workload a policy holds
gets no new placements, and a plan over a placement that changed since it was read is
refused."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from edgefleet.controllers.memory_placement import MemoryPlacementStore
from edgefleet.controllers.placement import (
    HELD_BY_POLICY,
    PlacementController,
    PlacementPolicy,
    decide,
)
from edgefleet.core.workloads.failover import FailoverPolicy
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.migration import CopyState, CopyStatus, MigrationTrigger
from edgefleet.core.workloads.move import MoveKind
from edgefleet.core.workloads.placement import DecisionAction, Node, Placement
from edgefleet.core.workloads.workload import Resources, Workload
from edgefleet.errors import Conflict

T0 = datetime(2026, 6, 1, tzinfo=UTC)
GRACE_S = 30.0
POLICY = PlacementPolicy(FailoverPolicy(suspect_grace_s=GRACE_S))


def node(node_id: str, **kw: object) -> Node:
    fields: dict[str, object] = {"cpu_millicores": 2000, "memory_mb": 2048, **kw}
    return Node(node_id, "eu", "eu-a", **fields)  # type: ignore[arg-type]


def fleet(replicas: int = 2, nodes: int = 3) -> MemoryPlacementStore:
    workload = Workload("det", Resources(500, 256), replicas=replicas)
    return MemoryPlacementStore([workload], [node(f"n{i}") for i in range(nodes)])


def test_the_first_tick_places_and_an_unchanged_fleet_is_a_fixpoint() -> None:
    store = fleet()
    controller = PlacementController(store, POLICY)
    tick = controller.tick(T0)
    assert tick is not None and not tick.moves and not tick.unplaceable
    assigned = store.placement.assignments
    assert [(a.replica, a.generation) for a in assigned] == [(0, 1), (1, 2)]
    assert len({a.node_id for a in assigned}) == 2  # at most one replica per node
    assert set(tick.devices) == {a.node_id for a in assigned}
    assert [m.kind for m in store.history] == [MoveKind.PLACED, MoveKind.PLACED]
    # The next tick stores the decisions as kept (no device changes), then nothing changes.
    kept = controller.tick(T0 + timedelta(seconds=1))
    assert kept is not None and not kept.devices and store.placement.assignments == assigned
    assert {d["action"] for d in store.record.decisions} == {DecisionAction.KEEP.value}
    assert controller.tick(T0 + timedelta(seconds=2)) is None
    assert store.record.version == 2


def test_a_dead_nodes_replica_fails_over_with_a_fresh_generation() -> None:
    store = fleet()
    controller = PlacementController(store, POLICY)
    controller.tick(T0)
    victim = store.placement.assignments[0]
    spare = ({"n0", "n1", "n2"} - {a.node_id for a in store.placement.assignments}).pop()
    later = T0 + timedelta(seconds=5)
    store.set_liveness(victim.node_id, Liveness.DEAD, later)
    tick = controller.tick(later)
    assert tick is not None
    (move,) = tick.moves
    assert (move.workload, move.replica, move.from_node_id, move.node_id) == (
        "det", victim.replica, victim.node_id, spare)  # fmt: skip
    assert move.generation == 3
    assert set(tick.devices) == {victim.node_id, spare}
    assert (store.history[-1].kind, store.history[-1].to_node_id) == (MoveKind.FAILOVER, spare)
    last = store.record.decisions[victim.replica]["last_move"]
    assert (last["from"], last["to"]) == (victim.node_id, spare)


def test_a_suspect_node_holds_its_replica_until_its_grace_ends() -> None:
    store = fleet(replicas=1)
    controller = PlacementController(store, POLICY)
    controller.tick(T0)
    (held,) = store.placement.assignments
    suspect_at = T0 + timedelta(seconds=5)
    store.set_liveness(held.node_id, Liveness.SUSPECT, suspect_at)
    tick = controller.tick(suspect_at)  # the hold is stored: `placements show` says so
    assert tick is not None and not tick.moves
    assert store.record.decisions[0]["action"] == DecisionAction.HOLD.value
    grace_over = suspect_at + timedelta(seconds=GRACE_S)
    assert controller.next_due == grace_over
    assert controller.tick(grace_over - timedelta(seconds=1)) is None
    tick = controller.tick(grace_over)
    assert tick is not None
    (move,) = tick.moves
    assert move.from_node_id == held.node_id and move.node_id != held.node_id
    assert controller.next_due is None


def test_a_move_off_a_live_node_with_a_healthy_copy_becomes_a_planned_migration() -> None:
    store = fleet(replicas=1)
    controller = PlacementController(store, POLICY)
    controller.tick(T0)
    (running,) = store.placement.assignments
    store.cordon(running.node_id, "battery_pct forecast below 15 in 600 s")
    view = store.load(T0)
    assert view is not None
    healthy = CopyStatus(running.generation, CopyState.RUNNING, healthy=True)
    with_copy = replace(view, copies={(running.node_id, "det", 0): healthy})
    outcome = decide(with_copy, POLICY, T0, new_id=lambda: "mig-1")
    assert outcome is not None
    (decision,) = outcome.plan.decisions
    assert (decision.action, decision.node_id) == (DecisionAction.KEEP, running.node_id)
    (migration,) = outcome.migrations
    assert (migration.id, migration.source, migration.trigger) == (
        "mig-1", running.node_id, MigrationTrigger.FORECAST)  # fmt: skip
    assert migration.reason == "battery_pct forecast below 15 in 600 s"
    assert outcome.plan.placement == store.placement  # it stays until the migration commits
    # Without a healthy copy to hand over (the lab's store reports none) it is a cold move.
    tick = controller.tick(T0)
    assert tick is not None and not tick.migrations
    (move,) = tick.moves
    assert move.from_node_id == running.node_id
    assert store.history[-1].kind is MoveKind.REBALANCE


def test_a_workload_a_policy_holds_gets_no_new_placements() -> None:
    store = fleet(replicas=1)
    view = store.load(T0)
    assert view is not None
    outcome = decide(replace(view, held={"det": "residency eu only"}), POLICY, T0)
    assert outcome is not None
    (decision,) = outcome.plan.decisions
    assert decision.action is DecisionAction.UNPLACEABLE
    assert decision.reason == f"{HELD_BY_POLICY} residency eu only"
    assert outcome.plan.placement == Placement()


def test_a_plan_over_a_placement_changed_since_it_was_read_is_refused() -> None:
    store = fleet()
    stale = store.load(T0)
    assert stale is not None
    PlacementController(store, POLICY).tick(T0)
    outcome = decide(stale, POLICY, T0)
    assert outcome is not None
    with pytest.raises(Conflict):
        store.apply(stale, outcome, T0)
    assert store.record.version == 1
