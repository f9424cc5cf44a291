"""Failover steps: hold on suspect, reschedule on dead within residency, rate limits against
a thundering herd, fencing of returning nodes, and forecast-driven drains."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.core.workloads.failover import (
    DrainThreshold,
    FailoverPolicy,
    Trend,
    decide_drain,
    fence_node,
    fit_trend,
    forecast_crossing,
    plan_failover_step,
)
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.placement import (
    DecisionAction,
    Node,
    Placement,
    Topology,
    place,
)
from edgefleet.core.workloads.workload import HardConstraints, Resources, Workload
from edgefleet.errors import InvalidInput
from tests.unit.test_placement import assert_valid, breaks_constraint, fleets, workload_sets

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def node(node_id: str, region: str = "eu-west", zone: str = "a", **kw: object) -> Node:
    fields: dict[str, object] = {
        "cpu_millicores": 4000,
        "memory_mb": 4096,
        "residency": "us" if region.startswith("us") else "eu",
        **kw,
    }
    return Node(node_id, region, f"{region}-{zone}", **fields)  # type: ignore[arg-type]


def workload(name: str, **kw: object) -> Workload:
    return Workload(name, Resources(500, 256), **kw)  # type: ignore[arg-type]


def with_liveness(nodes: list[Node], liveness: Liveness, *ids: str) -> list[Node]:
    return [dataclasses.replace(n, liveness=liveness) if n.id in ids else n for n in nodes]


def test_a_suspect_node_keeps_its_replicas_through_the_grace_period() -> None:
    nodes = [node("a"), node("b", reliability=0.5)]
    first = place([workload("w")], nodes, Topology(), Placement(), NOW)
    suspect = with_liveness(nodes, Liveness.SUSPECT, "a")
    step = plan_failover_step(
        [workload("w")], suspect, Topology(), first.placement, NOW, {"a": NOW}
    )
    (d,) = step.plan.decisions
    assert d.action is DecisionAction.HOLD and d.node_id == "a"
    assert step.plan.placement == first.placement
    later = NOW + timedelta(seconds=31)
    step = plan_failover_step(
        [workload("w")], suspect, Topology(), first.placement, later, {"a": NOW}
    )
    (d,) = step.plan.decisions
    assert d.action is DecisionAction.MOVE and d.node_id == "b" and "node a is dead" in d.reason


def test_backfill_moves_cheap_work_off_a_suspect_node_and_holds_the_rest() -> None:
    nodes = [node("a"), node("b", reliability=0.5)]
    cheap = workload("cheap", priority=0)
    stateful = workload("stateful", priority=0, state_dir="/var/lib/s")
    important = workload("important", priority=50)
    workloads = [cheap, stateful, important]
    first = place(workloads, nodes, Topology(), Placement(), NOW)
    assert set(first.placement.nodes_of("cheap") + first.placement.nodes_of("important")) == {"a"}
    suspect = with_liveness(nodes, Liveness.SUSPECT, "a")
    policy = FailoverPolicy(backfill_max_priority=10)
    step = plan_failover_step(workloads, suspect, Topology(), first.placement, NOW, {}, policy)
    actions = {d.workload: (d.action, d.node_id) for d in step.plan.decisions}
    assert actions["cheap"] == (DecisionAction.MOVE, "b")
    assert actions["stateful"][0] is DecisionAction.HOLD
    assert actions["important"] == (DecisionAction.HOLD, "a")
    assert "backfilled from a (suspect)" in next(
        d.reason for d in step.plan.decisions if d.workload == "cheap"
    )


def test_a_dead_node_fails_over_then_its_return_is_fenced_without_duplicates() -> None:
    nodes = [node("a"), node("b"), node("c")]
    workloads = [workload(f"w{i}", replicas=2) for i in range(4)]
    first = place(workloads, nodes, Topology(), Placement(), NOW)
    running_on_a = [(a.workload, a.replica, a.generation) for a in first.placement.on_node("a")]
    assert running_on_a
    dead = with_liveness(nodes, Liveness.DEAD, "a")
    step = plan_failover_step(workloads, dead, Topology(), first.placement, NOW, {})
    assert not step.deferred
    assert all(a.node_id != "a" for a in step.plan.placement.assignments)
    moved = [d for d in step.plan.decisions if d.action is DecisionAction.MOVE]
    assert len(moved) == len(running_on_a)
    assert step.plan.placement.generation == first.placement.generation + len(moved)
    # Node a returns: it stops every copy it ran, since all moved away.
    fenced = fence_node(step.plan.placement, "a", running_on_a)
    assert not any(f.keep for f in fenced)
    assert all("moved to" in f.reason for f in fenced)
    # Every node keeps exactly the replicas the placement gives it: no duplicates.
    kept = [
        (f.workload, f.replica)
        for n in nodes
        for f in fence_node(
            step.plan.placement,
            n.id,
            [(a.workload, a.replica, a.generation) for a in step.plan.placement.on_node(n.id)]
            + ([] if n.id != "a" else running_on_a),
        )
        if f.keep
    ]
    assert sorted(kept) == sorted((a.workload, a.replica) for a in step.plan.placement.assignments)
    returned = plan_failover_step(workloads, nodes, Topology(), step.plan.placement, NOW, {})
    assert not returned.moves  # hysteresis: the fleet does not flap back


def test_no_failover_across_a_residency_boundary() -> None:
    eu_only = HardConstraints(residency=frozenset({"eu"}))
    workloads = [workload("eu-data", constraints=eu_only), workload("anywhere")]
    nodes = [node("eu-1"), node("us-1", "us-east", reliability=0.5)]
    first = place(workloads, nodes, Topology(), Placement(), NOW)
    assert first.placement.nodes_of("eu-data") == ("eu-1",)
    dead = with_liveness(nodes, Liveness.DEAD, "eu-1")
    step = plan_failover_step(workloads, dead, Topology(), first.placement, NOW, {})
    by_name = {d.workload: d for d in step.plan.decisions}
    refused = by_name["eu-data"]
    assert refused.action is DecisionAction.UNPLACEABLE
    assert "residency in (eu)" in refused.reason and "resumes there if it returns" in refused.reason
    assert step.plan.placement.nodes_of("eu-data") == ("eu-1",)  # never us-1
    assert by_name["anywhere"].node_id == "us-1"
    assert "cross-region failover eu-west -> us-east" in by_name["anywhere"].reason


def test_moves_are_rate_limited_fleet_wide_and_per_zone_and_converge() -> None:
    nodes = [node("src", zone="a", cpu_millicores=64000, memory_mb=64000)] + [
        node(f"{z}{i}", zone=z) for z in "bc" for i in range(4)
    ]
    workloads = [workload(f"w{i:02d}", priority=i % 3) for i in range(20)]
    weights_home = [dataclasses.replace(n, reliability=0.1) if n.id != "src" else n for n in nodes]
    current = place(workloads, weights_home, Topology(), Placement(), NOW).placement
    assert all(a.node_id == "src" for a in current.assignments)
    dead = with_liveness(nodes, Liveness.DEAD, "src")
    policy = FailoverPolicy(max_moves_per_step=6, max_moves_per_zone_per_step=4)
    steps = 0
    while any(a.node_id == "src" for a in current.assignments):
        step = plan_failover_step(workloads, dead, Topology(), current, NOW, {}, policy)
        moves = step.plan.moves
        assert 0 < len(moves) <= 6
        zones = Counter(next(n.zone for n in nodes if n.id == d.node_id) for d in moves)
        assert max(zones.values()) <= 4
        assert all("deferred" in d.reason for d in step.deferred)
        if steps == 0:  # urgent and important first
            assert (
                min(next(w.priority for w in workloads if w.name == d.workload) for d in moves) == 2
            )
        current = step.plan.placement
        steps += 1
    assert steps == 4  # 20 replicas, 6 per step
    assert_valid(step.plan, workloads, dead, step.plan.placement)


@settings(max_examples=30)
@given(workload_sets(), fleets(failures=True), st.integers(1, 3), st.integers(1, 2))
def test_a_step_never_breaks_constraints_capacity_or_limits(
    workloads: list[Workload], nodes: list[Node], fleet_limit: int, zone_limit: int
) -> None:
    healthy = [dataclasses.replace(n, liveness=Liveness.ALIVE, schedulable=True) for n in nodes]
    current = place(workloads, healthy, Topology(), Placement(), NOW).placement
    policy = FailoverPolicy(max_moves_per_step=fleet_limit, max_moves_per_zone_per_step=zone_limit)
    step = plan_failover_step(workloads, nodes, Topology(), current, NOW, {}, policy)
    moves = step.plan.moves
    assert len(moves) <= fleet_limit
    zones = Counter(next(n.zone for n in nodes if n.id == d.node_id) for d in moves)
    assert all(count <= zone_limit for count in zones.values())
    assert_fits(step.plan.placement, workloads, nodes, current)


def assert_fits(
    placement: Placement, workloads: list[Workload], nodes: list[Node], current: Placement
) -> None:
    """Constraints and capacity hold; replicas only arrive on alive, schedulable nodes."""
    by_node = {n.id: n for n in nodes}
    by_name = {w.name: w for w in workloads}
    was = {(a.workload, a.replica): a.node_id for a in current.assignments}
    cpu: Counter[str] = Counter()
    mem: Counter[str] = Counter()
    for a in placement.assignments:
        w, n = by_name[a.workload], by_node[a.node_id]
        assert breaks_constraint(w, n) is None
        if was.get((a.workload, a.replica)) != n.id:
            assert n.liveness is Liveness.ALIVE and n.schedulable
        cpu[n.id] += w.resources.cpu_millicores
        mem[n.id] += w.resources.memory_mb
    for n in nodes:
        assert cpu[n.id] + n.used_cpu_millicores <= n.cpu_millicores
        assert mem[n.id] + n.used_memory_mb <= n.memory_mb


def test_a_preempted_replica_makes_room_in_the_same_step() -> None:
    low = Workload("low", Resources(3000, 256), priority=0)
    high = Workload("high", Resources(3000, 256), priority=9)
    nodes = [node("only")]
    current = place([low], nodes, Topology(), Placement(), NOW).placement
    step = plan_failover_step([low, high], nodes, Topology(), current, NOW, {})
    assert step.plan.placement.nodes_of("high") == ("only",)
    assert step.plan.placement.nodes_of("low") == ()
    assert not step.deferred


def test_fencing_keeps_owned_copies_and_stops_stale_ones() -> None:
    first = place([workload("w")], [node("a")], Topology(), Placement(), NOW).placement
    (a,) = first.assignments
    decisions = fence_node(first, "a", [("w", 0, a.generation), ("w", 0, a.generation - 1)])
    assert [f.keep for f in decisions] == [False, True]
    assert fence_node(first, "a", [("gone", 0, 1)])[0].reason == "no longer in the placement"


def test_policy_validation() -> None:
    with pytest.raises(InvalidInput):
        FailoverPolicy(max_moves_per_step=0)
    with pytest.raises(InvalidInput):
        FailoverPolicy(suspect_grace_s=-1)


# -- forecasts -----------------------------------------------------------------------------


def series(values: list[float], every_s: float = 60) -> list[tuple[datetime, float]]:
    return [(NOW + timedelta(seconds=i * every_s), v) for i, v in enumerate(values)]


def test_a_linear_drain_is_tracked_exactly() -> None:
    trend = fit_trend(series([90 - 0.5 * i for i in range(30)]))
    assert trend is not None
    assert trend.slope_per_s * 60 == pytest.approx(-0.5)
    assert trend.level == pytest.approx(90 - 0.5 * 29)
    crossing = forecast_crossing(trend, 15.0, falling=True)
    assert crossing is not None
    assert (crossing - trend.at).total_seconds() == pytest.approx((75.5 - 15) / 0.5 * 60)


def test_noise_is_smoothed_and_flat_series_never_cross() -> None:
    wobble = [50.0 + (1 if i % 2 else -1) for i in range(40)]
    trend = fit_trend(series(wobble))
    assert trend is not None and abs(trend.slope_per_s) < 0.01
    flat = Trend(level=50.0, slope_per_s=0.0, at=NOW)
    assert forecast_crossing(flat, 15.0, falling=True) is None
    assert forecast_crossing(flat, 60.0, falling=True) == NOW  # already below
    noise = Trend(level=98.8, slope_per_s=-3.1e-15, at=NOW)  # a constant series, fitted
    assert forecast_crossing(noise, 15.0, falling=True) is None
    assert decide_drain("n", {"battery_pct": noise}, NOW).drain is False
    assert fit_trend(series([1.0])) is None
    with pytest.raises(InvalidInput):
        fit_trend(series([1.0, 2.0]), alpha=0)


def test_a_forecast_crossing_within_the_horizon_drains_the_node() -> None:
    draining = Trend(level=30.0, slope_per_s=-1 / 60, at=NOW)  # 1% per minute
    soon = decide_drain("n1", {"battery_pct": draining}, NOW, horizon_s=20 * 60)
    assert soon.drain and soon.crosses_at == NOW + timedelta(minutes=15)
    assert "battery_pct forecast below 15 in 15m" in soon.reason
    later = decide_drain("n1", {"battery_pct": draining}, NOW, horizon_s=10 * 60)
    assert not later.drain and "beyond the horizon" in later.reason
    hot = Trend(level=0.80, slope_per_s=0.001, at=NOW)
    load = decide_drain(
        "n1", {"cpu_load": hot}, NOW, thresholds=[DrainThreshold("cpu_load", 0.95, falling=False)]
    )
    assert load.drain
    assert not decide_drain("n1", {}, NOW).drain


def test_a_drained_node_hands_its_workloads_over_before_it_dies() -> None:
    nodes = [node("solar", reliability=1.0), node("mains", reliability=0.6)]
    workloads = [workload("w", state_dir="/var/lib/w")]
    current = place(workloads, nodes, Topology(), Placement(), NOW).placement
    assert current.nodes_of("w") == ("solar",)
    battery = Trend(level=25.0, slope_per_s=-1 / 60, at=NOW)
    verdict = decide_drain("solar", {"battery_pct": battery}, NOW)
    assert verdict.drain
    cordoned = [dataclasses.replace(n, schedulable=n.id != "solar") for n in nodes]
    step = plan_failover_step(workloads, cordoned, Topology(), current, NOW, {})
    (d,) = step.plan.moves
    assert (d.from_node_id, d.node_id) == ("solar", "mains") and "cordoned" in d.reason
