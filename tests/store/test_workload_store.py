"""Workload tables on every backend: workloads and the placement with optimistic versions,
node health written by heartbeats and judged by controllers without losing a heartbeat,
migrations with their steps."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from edgefleet.core.protocol import NodeStatus, ReplicaState, ReplicaStatus, WorkloadsReport
from edgefleet.core.updates.release import Ref
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.liveness import evaluate_liveness
from edgefleet.core.workloads.migration import Migration, MigrationState, MigrationTrigger, move_to
from edgefleet.core.workloads.node_health import DrainState, record_report
from edgefleet.core.workloads.placement import Assignment, Placement
from edgefleet.core.workloads.record import WorkloadRecord
from edgefleet.errors import Conflict, NotFound
from edgefleet.store import Database

T0 = datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=UTC)
DOC = {
    "kind": "Workload",
    "metadata": {"name": "det"},
    "spec": {"resources": {"cpu_millicores": 100, "memory_mb": 64}},
}


def record(version: int = 1) -> WorkloadRecord:
    return WorkloadRecord("det", DOC, (Ref("models", "1.0.0"),), "op", T0, "op", T0, version)


def test_workloads_round_trip_and_update_optimistically(db: Database) -> None:
    with db.transaction() as tx:
        tx.workloads.insert(record())
        with pytest.raises(Conflict):
            tx.workloads.insert(record())
    with db.read() as tx:
        loaded = tx.workloads.get("det")
    assert loaded == record() and loaded.spec.name == "det"
    with db.transaction() as tx:
        assert tx.workloads.update(loaded).version == 2
    with db.transaction() as tx, pytest.raises(Conflict):
        tx.workloads.update(loaded)  # read before the update above
    with db.transaction() as tx:
        tx.workloads.delete("det")
        with pytest.raises(NotFound):
            tx.workloads.get("det")


def test_the_placement_row_is_created_once_and_guarded_by_its_version(db: Database) -> None:
    with db.read() as tx:
        empty = tx.placement.load()
    assert empty.version == 0 and empty.placement == Placement()
    placed = Placement((Assignment("det", 0, "d-1", 1), Assignment("det", 1, "d-2", 2)), 2)
    decisions = [{"workload": "det", "replica": 0, "action": "place", "node_id": "d-1",
                  "from_node_id": None, "reason": "best", "generation": 1}]  # fmt: skip
    with db.transaction() as tx:
        saved = tx.placement.save(empty, placed, decisions, T0)
    with db.read() as tx:
        loaded = tx.placement.load()
    assert loaded == saved and loaded.placement == placed
    assert loaded.decisions[0]["reason"] == "best"
    with db.transaction() as tx, pytest.raises(Conflict):
        tx.placement.save(empty, placed, [], T0)  # a second controller with a stale read
    with db.transaction() as tx:
        tx.placement.save(loaded, Placement(placed.assignments, 3), decisions, T0)
    with db.transaction() as tx, pytest.raises(Conflict):
        tx.placement.save(loaded, placed, [], T0)


def test_a_judgement_never_overwrites_a_newer_heartbeat(db: Database) -> None:
    copy = ReplicaStatus(workload="det", replica=0, generation=1, state=ReplicaState.RUNNING)
    first = record_report(None, "d-1", T0, WorkloadsReport(replicas=(copy,)),
                          NodeStatus(address="10.0.0.1", battery_pct=50))  # fmt: skip
    with db.transaction() as tx:
        tx.node_health.put_report(first)
    with db.read() as tx:
        read = tx.node_health.find("d-1")
    assert read == first
    dead = dataclasses.replace(
        read, liveness=evaluate_liveness(read.liveness, T0 + timedelta(seconds=60), T0),
        drain=DrainState(True, "battery", T0),
    )  # fmt: skip
    assert dead.state is Liveness.DEAD
    newer = record_report(first, "d-1", T0 + timedelta(seconds=61), None, None)
    with db.transaction() as tx:
        tx.node_health.put_report(newer)
        assert not tx.node_health.put_judgement(dead, read.reported_at)
    with db.transaction() as tx:
        assert tx.node_health.put_judgement(dead, newer.reported_at)
    with db.read() as tx:
        stored = tx.node_health.all()["d-1"]
    assert stored.state is Liveness.DEAD and stored.drain.draining
    assert stored.reported_at == newer.reported_at and len(stored.samples) == 1


def test_migrations_keep_their_steps_and_leave_the_active_list_when_done(db: Database) -> None:
    m = Migration("mig-1", "det", 0, "d-1", "d-2", MigrationTrigger.FORECAST, "battery", True,
                  "system", T0, 3)  # fmt: skip
    with db.transaction() as tx:
        tx.migrations.insert(m)
    with db.transaction() as tx:
        stored = tx.migrations.get("mig-1")
        assert stored == m
        moved = tx.migrations.update(move_to(stored, MigrationState.PRESTAGING, T0, "go",
                                             generation=7))  # fmt: skip
    assert moved.version == 2 and moved.steps[-1].detail == "go" and moved.generation == 7
    with db.transaction() as tx, pytest.raises(Conflict):
        tx.migrations.update(move_to(stored, MigrationState.ABORTED, T0, "stale"))
    with db.transaction() as tx:
        assert [x.id for x in tx.migrations.active()] == ["mig-1"]
        tx.migrations.update(move_to(moved, MigrationState.ABORTED, T0, "stop"))
    with db.read() as tx:
        assert tx.migrations.active() == []
        [done] = tx.migrations.of_workload("det")
    assert done.state is MigrationState.ABORTED
    assert [s.state for s in done.steps] == [MigrationState.PRESTAGING, MigrationState.ABORTED]
