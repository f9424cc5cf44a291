"""What placement reads about devices (capacity, location, residency, power, drains), the
node health heartbeats feed, how an operator's migration picks its target, and how
workloads resolve their releases."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edgefleet.core.protocol import (
    CheckpointReport,
    NodeStatus,
    ReplicaHealth,
    ReplicaState,
    ReplicaStatus,
    WorkloadsReport,
)
from edgefleet.core.selector import parse_selector
from edgefleet.core.updates.release import Ref, Release
from edgefleet.core.workloads.failover import DrainThreshold
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.migration import CopyState
from edgefleet.core.workloads.migration_targets import choose_migration_target
from edgefleet.core.workloads.node_health import NOT_DRAINING, add_sample, record_report
from edgefleet.core.workloads.nodes import (
    NodeFacts,
    drain_changes_at,
    drain_from_trends,
    node_from_facts,
    trends_of,
    update_drain,
)
from edgefleet.core.workloads.placement import Assignment, Placement, Topology
from edgefleet.core.workloads.placement_record import with_assignment
from edgefleet.core.workloads.record import resolve_release_ref
from edgefleet.core.workloads.terms import PowerSource
from edgefleet.core.workloads.workload import HardConstraints, Resources, Workload
from edgefleet.errors import Conflict, NotFound

T0 = datetime(2026, 5, 1, tzinfo=UTC)
INVENTORY = {
    "hardware": {"cpu_count": 4, "memory_mb": 8192, "accelerators": ["npu"]},
    "location": {"region": "eu-west", "zone": "eu-west-b", "latitude": 52.5,
                 "longitude": 13.4},
}  # fmt: skip
BATTERY = (DrainThreshold("battery_pct", 15.0, falling=True),)


def test_a_node_from_a_device_report() -> None:
    node = node_from_facts(
        NodeFacts(
            "d1",
            {"residency": "eu", "tier": "a"},
            INVENTORY,
            power={"power_source": "battery", "battery_pct": 40},
        )
    )
    assert (node.region, node.zone, node.residency) == ("eu-west", "eu-west-b", "eu")
    assert (node.cpu_millicores, node.memory_mb) == (4000, 8192)
    assert (node.accelerators, node.accelerator_kind) == (1, "npu")
    assert node.location is not None and node.location.lat == 52.5
    assert (node.power_source, node.battery_pct) == (PowerSource.BATTERY, 40.0)
    assert node.schedulable and node.liveness is Liveness.ALIVE


def test_labels_stand_in_for_a_missing_location_and_a_drain_cordons() -> None:
    bare = {"hardware": {"cpu_count": 1, "memory_mb": 512}}
    node = node_from_facts(NodeFacts("d2", {"region": "us", "zone": "us-1"}, bare,
                                     draining=True, used_cpu_millicores=250))  # fmt: skip
    assert (node.region, node.zone, node.residency) == ("us", "us-1", None)
    assert not node.schedulable and node.used_cpu_millicores == 250
    nowhere = node_from_facts(NodeFacts("d3", {}, bare))
    assert (nowhere.region, nowhere.zone, nowhere.power_source) == (
        "default",
        "default",
        PowerSource.MAINS,
    )


def draining_samples(start: float, per_s: float, count: int) -> list[Any]:
    samples: list[Any] = []
    for i in range(count):
        samples = add_sample(samples, T0 + timedelta(seconds=i),
                             {"battery_pct": start - per_s * i})  # fmt: skip
    return samples


def test_a_battery_forecast_drains_the_node_and_the_drain_is_sticky() -> None:
    steep = draining_samples(90, 1.0, 20)  # -1 %/s: below 15% in about a minute
    now = T0 + timedelta(seconds=19)
    drained = update_drain(NOT_DRAINING, "d1", steep, now, 900, BATTERY)
    assert drained.draining and "battery_pct forecast below 15" in drained.reason
    assert drained.since == now
    slow = draining_samples(90, 0.01, 20)  # crossing in ~2 h: beyond twice the horizon
    assert not update_drain(NOT_DRAINING, "d1", slow, now, 900, BATTERY).draining
    later = now + timedelta(seconds=5)
    gentle = draining_samples(90, 0.05, 20)  # crossing in ~25 min: within twice the horizon
    kept = update_drain(drained, "d1", gentle, later, 900, BATTERY)
    assert kept.draining and kept.since == now  # hysteresis: no release on a wobble
    released = update_drain(drained, "d1", slow, later, 900, BATTERY)
    assert not released.draining and released.reason.startswith("drain ended")


def test_a_drain_starts_when_predicted_and_holds_while_the_trends_stay() -> None:
    now = T0 + timedelta(seconds=19)
    slow = trends_of(draining_samples(90, 0.01, 20))  # crossing in ~2 h
    starts = drain_changes_at(NOT_DRAINING, "d1", slow, now, 900, BATTERY)
    assert starts is not None and starts > now

    def draining(when: datetime) -> bool:
        return drain_from_trends(NOT_DRAINING, "d1", slow, when, 900, BATTERY).draining

    assert draining(starts) and not draining(starts - timedelta(microseconds=1))
    drained = drain_from_trends(NOT_DRAINING, "d1", slow, starts, 900, BATTERY)
    assert drain_changes_at(drained, "d1", slow, starts, 900, BATTERY) is None  # sticky
    assert drain_changes_at(NOT_DRAINING, "d1", {}, now, 900, BATTERY) is None  # no samples
    steep = trends_of(draining_samples(90, 1.0, 20))
    assert drain_changes_at(NOT_DRAINING, "d1", steep, now, 900, BATTERY) == now
    assert drain_changes_at(drained, "d1", slow, now + timedelta(days=1), 900, BATTERY) is None


def test_samples_are_bounded_in_count_and_age() -> None:
    samples = draining_samples(100, 0.0, 500)
    assert len(samples) == 120
    old = add_sample(samples, T0 + timedelta(hours=2), {"battery_pct": 50})
    assert len(old) == 1
    assert add_sample(samples, T0, {}) == samples


def test_a_heartbeat_records_liveness_reports_and_samples() -> None:
    running = ReplicaStatus(workload="w", replica=0, generation=4, state=ReplicaState.RUNNING,
                            health=ReplicaHealth.OK, port=9000)  # fmt: skip
    workloads = WorkloadsReport(
        replicas=(running,),
        checkpoints=(CheckpointReport(migration="m1", sha256="ab" * 32, size_bytes=10),),
    )
    node = NodeStatus(address="10.0.0.5", battery_pct=80, cpu_load=0.5)
    health = record_report(None, "d1", T0, workloads, node)
    assert health.state is Liveness.ALIVE and health.address == "10.0.0.5"
    copy = health.copy_status("w", 0)
    assert copy is not None and copy.healthy and copy.state is CopyState.RUNNING
    assert health.copy_status("w", 1) is None
    checkpoint = health.checkpoint_for("m1")
    assert checkpoint is not None and checkpoint.sha256 == "ab" * 32
    again = record_report(health, "d1", T0 + timedelta(seconds=1), None, node)
    assert len(again.samples) == 2 and again.replicas == ()
    starting_copy = dataclasses.replace(running, state=ReplicaState.STARTING)
    starting = record_report(None, "d1", T0, WorkloadsReport(replicas=(starting_copy,)), None)
    unhealthy = starting.copy_status("w", 0)
    assert unhealthy is not None and not unhealthy.healthy


def fleet() -> list[Any]:
    def node(node_id: str, zone: str, **kw: Any) -> Any:
        facts = NodeFacts(node_id, {"zone": zone, "region": "eu", "residency": "eu", **kw},
                          {"hardware": {"cpu_count": 2, "memory_mb": 4096}})  # fmt: skip
        return node_from_facts(facts)

    return [node("a", "z1"), node("b", "z2", tier="gold"), node("c", "z3"),
            dataclasses.replace(node("d", "z4"), liveness=Liveness.DEAD)]  # fmt: skip


W = Workload(
    "w", Resources(500, 256), replicas=2, constraints=HardConstraints(residency=frozenset({"eu"}))
)
PLACED = Placement((Assignment("w", 0, "a", 3), Assignment("w", 1, "c", 4)), 4)


def test_a_migration_target_by_name_or_by_selector() -> None:
    chosen = choose_migration_target("w", 0, [W], fleet(), Topology(), PLACED, T0, to="b")
    assert chosen.node_id == "b"
    gold = choose_migration_target("w", 0, [W], fleet(), Topology(), PLACED, T0,
                                   selector=parse_selector("tier=gold"))  # fmt: skip
    assert gold.node_id == "b"
    best = choose_migration_target("w", 0, [W], fleet(), Topology(), PLACED, T0,
                                   selector=parse_selector(""))  # fmt: skip
    assert best.node_id == "b"  # not a (its own node), not c (the other replica), not dead d


def test_a_migration_target_refusal_says_why() -> None:
    def target(to: str) -> str:
        return choose_migration_target("w", 0, [W], fleet(), Topology(), PLACED, T0,
                                       to=to).reason  # fmt: skip

    assert "d is dead" in target("d")
    assert "already runs another replica" in target("c")
    with pytest.raises(Conflict, match="already runs on a"):
        target("a")
    with pytest.raises(NotFound):
        target("nope")
    none = choose_migration_target("w", 0, [W], fleet(), Topology(), PLACED, T0,
                                   selector=parse_selector("tier=platinum"))  # fmt: skip
    assert none.node_id is None and "selector tier=platinum" in none.reason


def test_releases_resolve_to_an_exact_or_the_newest_signed_version() -> None:
    def release(version: str, signed: bool = True) -> Release:
        return Release("m", version, (), "op", T0, 1 if signed else None)

    releases = [release("1.2.0"), release("1.10.0"), release("2.0.0", signed=False)]
    assert resolve_release_ref("m", releases) == Ref("m", "1.10.0")
    assert resolve_release_ref("m@1.2.0", releases) == Ref("m", "1.2.0")
    with pytest.raises(Conflict, match="not signed"):
        resolve_release_ref("m@2.0.0", releases)
    with pytest.raises(NotFound):
        resolve_release_ref("m@9.9.9", releases)
    with pytest.raises(NotFound, match="no release"):
        resolve_release_ref("other", releases)


def test_a_commit_moves_one_replica_and_never_lowers_the_generation() -> None:
    moved = with_assignment(PLACED, Assignment("w", 0, "b", 9))
    assert moved.nodes_of("w") == ("b", "c") and moved.generation == 9
    older = with_assignment(moved, Assignment("w", 1, "a", 5))
    assert older.generation == 9 and older.nodes_of("w") == ("b", "a")
