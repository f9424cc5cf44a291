"""The workload controllers over a real store with a fake clock: a tick on unchanged input
writes nothing, a dead node's replica fails over and the returning node's desired state no
longer lists it, a drained node's healthy replica migrates step by step and the commit
moves it with its reserved generation; each move lands in the workload's move history."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edgefleet.artifacts.blob_files import FilesystemBlobStore
from edgefleet.artifacts.blobstore import BlobInfo
from edgefleet.controllers.liveness import LivenessController
from edgefleet.core.device import Device
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.protocol import Report, from_dict
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.migration import MigrationState, MigrationTrigger
from edgefleet.core.workloads.move import MoveKind
from edgefleet.core.workloads.placement import Assignment, Placement
from edgefleet.core.workloads.record import WorkloadRecord
from edgefleet.server.services.checkpoints import CheckpointService
from edgefleet.server.services.desired import refresh_device, refresh_hosting_nodes
from edgefleet.server.services.device_link import DeviceLinkService
from edgefleet.server.services.liveness_store import SqlLivenessStore
from edgefleet.server.services.migration_controller import MigrationController
from edgefleet.server.services.placement_controller import PlacementController
from edgefleet.server.settings import ServerSettings
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.server.workload_settings import WorkloadSettings
from edgefleet.store import Database
from tests.fake_clock import FakeClock

T0 = datetime(2026, 6, 1, tzinfo=UTC)
INVENTORY = {"hardware": {"cpu_count": 2, "memory_mb": 4096},
             "location": {"region": "eu", "zone": "eu-a"}}  # fmt: skip
DOC = {"kind": "Workload", "metadata": {"name": "det"}, "spec": {
    "resources": {"cpu_millicores": 500, "memory_mb": 256},
    "state_dir": "/var/lib/det", "service": {"port": "auto"}}}  # fmt: skip


class Fleet:
    def __init__(self, db: Database, tmp_path: Path) -> None:
        self.db = db
        self.clock = FakeClock(T0)
        settings = WorkloadSettings(migration_shift_step_s=1, migration_drain_s=1)
        watch = DesiredStateWatch()
        self.link = DeviceLinkService(db, self.clock, ServerSettings(data_dir=tmp_path))
        self.liveness = LivenessController(SqlLivenessStore(db), settings.liveness_policy(),
                                           self.clock.now())  # fmt: skip
        self.placement = PlacementController(db, self.clock, settings, watch)
        self.blobs = FilesystemBlobStore(tmp_path / "blobs")
        self.archives = CheckpointService(db, self.clock, self.blobs, settings)
        self.migrations = MigrationController(db, self.clock, settings, watch, self.blobs,
                                              self.archives)  # fmt: skip
        self.copies: dict[str, list[dict[str, Any]]] = {}
        self.checkpoints: dict[str, list[dict[str, Any]]] = {}

    def add_device(self, device_id: str) -> None:
        with self.db.transaction() as tx:
            # Heartbeating every 0.5 s, as `tick` does (liveness judges by that interval).
            tx.devices.insert(
                Device(
                    device_id,
                    device_id,
                    f"key-{device_id}",
                    EnrollmentState.APPROVED,
                    {},
                    INVENTORY,
                    None,
                    T0,
                    heartbeat_interval_s=0.5,
                )
            )

    def heartbeat(self, device_id: str, **node: Any) -> None:
        with self.db.read() as tx:
            device = tx.devices.get(device_id)
        report = from_dict(Report, {
            "applied_generation": 0,
            "workloads": {"replicas": self.copies.get(device_id, []),
                          "checkpoints": self.checkpoints.get(device_id, [])},
            "node": {"address": "127.0.0.1", "scheduled": True, **node},
        })  # fmt: skip
        self.link.report(device, report)

    def run_copies(self) -> None:
        """Every node does what its desired state says, at once: healthy copies, state
        archives made and restored."""
        with self.db.read() as tx:
            devices = tx.devices.all()
        for d in devices:
            entries = d.desired.get("workloads", {}).get("replicas", [])
            self.copies[d.id] = [
                {"workload": e["workload"], "replica": e["replica"],
                 "generation": e["generation"], "phase": e["phase"],
                 "state": "running" if e["phase"] == "run" else "staged",
                 "health": "ok" if e["phase"] == "run" else "unknown", "port": 9000,
                 "restored_sha256": (e.get("restore") or {}).get("sha256")}
                for e in entries
            ]  # fmt: skip
            self.checkpoints[d.id] = []
            for e in entries:
                if e.get("checkpoint"):
                    info = self.upload(d.id, f"state of {e['workload']}".encode())
                    self.checkpoints[d.id].append({
                        "migration": e["checkpoint"]["migration"], "sha256": info.sha256,
                        "size_bytes": info.size_bytes})  # fmt: skip

    def upload(self, device_id: str, archive: bytes) -> BlobInfo:
        """What the checkpoint route does with an authenticated upload."""
        sha256 = hashlib.sha256(archive).hexdigest()
        with self.archives.receive(device_id, sha256, len(archive)) as incoming:
            incoming.write(archive)
            return self.archives.store(device_id, sha256, incoming)

    def tick(self, seconds: float = 0.5, *, silent: frozenset[str] = frozenset(),
             **node: Any) -> None:  # fmt: skip
        self.clock.at += timedelta(seconds=seconds)
        for device_id in ("a", "b"):
            if device_id not in silent:
                self.heartbeat(device_id, **node.get(device_id, {}))
        self.liveness.tick(self.clock.now())
        self.migrations.tick()
        self.placement.tick()
        self.run_copies()

    def desired(self, device_id: str) -> dict[str, Any]:
        with self.db.read() as tx:
            return dict(tx.devices.get(device_id).desired)

    def where(self) -> tuple[str, int]:
        with self.db.read() as tx:
            [a] = tx.placement.load().placement.assignments
        return a.node_id, a.generation


@pytest.fixture
def fleet(db: Database, tmp_path: Path) -> Fleet:
    fleet = Fleet(db, tmp_path)
    for device_id in ("a", "b"):
        fleet.add_device(device_id)
    for _ in range(20):
        fleet.tick(1.0)
    with db.transaction() as tx:
        tx.workloads.insert(WorkloadRecord("det", DOC, (), "op", T0, "op", T0))
    for _ in range(3):
        fleet.tick()
    return fleet


def test_placement_is_published_and_an_unchanged_tick_writes_nothing(fleet: Fleet) -> None:
    node, generation = fleet.where()
    [entry] = fleet.desired(node)["workloads"]["replicas"]
    assert (entry["workload"], entry["generation"], entry["phase"]) == ("det", generation, "run")
    other = "b" if node == "a" else "a"
    assert "workloads" not in fleet.desired(other)
    assert fleet.placement.tick() is None  # a fixpoint: nothing to write
    with fleet.db.transaction() as tx:
        assert not refresh_device(tx, node)


def test_the_hosting_node_is_told_to_heartbeat_at_the_hosting_interval(fleet: Fleet) -> None:
    node, _ = fleet.where()
    other = "b" if node == "a" else "a"
    with fleet.db.transaction() as tx:  # both at the agent's default of 15 s
        for device_id in ("a", "b"):
            tx.devices.update(replace(tx.devices.get(device_id), heartbeat_interval_s=15.0))
            refresh_device(tx, device_id)
    assert fleet.desired(node)["agent"]["heartbeat_interval_s"] == 1.0  # hosts the replica
    assert fleet.desired(other)["agent"]["heartbeat_interval_s"] == 15.0


def test_when_the_hosting_interval_steps_every_hosting_node_is_re_rendered(
    db: Database, tmp_path: Path
) -> None:
    """Past 50 hosting nodes the interval slows so that they send 50 heartbeats a second in
    all; the nodes already hosting must slow down too, not only the newcomer."""
    fleet = Fleet(db, tmp_path)
    ids = [f"n{i:02d}" for i in range(51)]
    with db.transaction() as tx:
        tx.workloads.insert(WorkloadRecord("det", DOC, (), "op", T0, "op", T0))
    for device_id in ids:
        fleet.add_device(device_id)
        with db.transaction() as tx:  # at the agent's default of 15 s
            tx.devices.update(replace(tx.devices.get(device_id), heartbeat_interval_s=15.0))

    def place(count: int) -> Placement:
        with db.transaction() as tx:
            record = tx.placement.load()
            placement = Placement(
                tuple(Assignment("det", i, ids[i], i + 1) for i in range(count)), count
            )
            tx.placement.save(record, placement, [], T0)
            return record.placement

    place(50)
    with db.transaction() as tx:
        for device_id in ids[:50]:
            refresh_device(tx, device_id)
    intervals = {d: fleet.desired(d)["agent"]["heartbeat_interval_s"] for d in ids[:50]}
    assert set(intervals.values()) == {1.0}

    before = place(51)
    with db.transaction() as tx:
        assert refresh_device(tx, ids[50])
        after = tx.placement.load().placement
        refreshed = refresh_hosting_nodes(tx, before, after, {ids[50]})
    assert refreshed == ids[:50]
    assert {fleet.desired(d)["agent"]["heartbeat_interval_s"] for d in ids} == {1.25}
    with db.transaction() as tx:  # within a step, nothing else is re-rendered
        assert refresh_hosting_nodes(tx, after, after, set()) == []


def test_a_dead_nodes_replica_fails_over_and_the_node_is_fenced(fleet: Fleet) -> None:
    node, generation = fleet.where()
    other = "b" if node == "a" else "a"
    for _ in range(20):  # ten seconds of silence
        fleet.tick(silent=frozenset({node}))
    with fleet.db.read() as tx:
        assert tx.node_health.find(node).state is Liveness.DEAD  # type: ignore[union-attr]
    moved_to, new_generation = fleet.where()
    assert moved_to == other and new_generation > generation
    assert "workloads" not in fleet.desired(node)  # the returning node learns it lost it
    [entry] = fleet.desired(other)["workloads"]["replicas"]
    assert entry["generation"] == new_generation
    with fleet.db.read() as tx:
        assert tx.migrations.active() == []  # a failover, not a migration
        failover, placed = tx.placement_moves.of_workload("det", 10)
    assert (placed.kind, placed.from_node_id, placed.to_node_id) == (MoveKind.PLACED, None, node)
    assert (failover.kind, failover.from_node_id, failover.to_node_id, failover.generation) == (
        MoveKind.FAILOVER, node, other, new_generation)  # fmt: skip
    assert failover.at > placed.at


def test_a_draining_node_migrates_its_replica_through_every_step(fleet: Fleet) -> None:
    node, generation = fleet.where()
    other = "b" if node == "a" else "a"
    level = 60.0
    states: list[MigrationState] = []
    for _ in range(60):
        level = max(1.0, level - 2)
        on_battery: dict[str, Any] = {node: {"power_source": "battery", "battery_pct": level}}
        fleet.tick(**on_battery)
        with fleet.db.read() as tx:
            found = tx.migrations.of_workload("det")
        if found and (not states or states[-1] is not found[0].state):
            states.append(found[0].state)
            if found[0].state is MigrationState.PRESTAGING:
                assert fleet.where() == (node, generation)  # kept on its source meanwhile
        if states and states[-1] is MigrationState.COMPLETED:
            break
    [m] = found
    assert m.trigger is MigrationTrigger.FORECAST and m.target == other
    assert "battery_pct forecast below 15" in m.reason
    assert states == [MigrationState.PENDING, MigrationState.PRESTAGING,
                      MigrationState.CHECKPOINTING, MigrationState.TRANSFERRING,
                      MigrationState.STARTING, MigrationState.SHIFTING,
                      MigrationState.DRAINING, MigrationState.COMPLETED]  # fmt: skip
    assert m.checkpoint_sha256 is not None and m.generation > generation
    assert fleet.where() == (other, m.generation)  # committed at the reserved generation
    assert "workloads" not in fleet.desired(node)  # the source stops its copy
    assert not fleet.blobs.exists(m.checkpoint_sha256)  # the restored archive is deleted
    with fleet.db.read() as tx:  # and no longer counts against the source's quota
        assert tx.checkpoint_archives.bytes_of(node) == 0
        committed, placed = tx.placement_moves.of_workload("det", 10)
    assert placed.kind is MoveKind.PLACED  # held on its source until the commit: no move
    assert (committed.kind, committed.from_node_id, committed.to_node_id) == (
        MoveKind.MIGRATION, node, other)  # fmt: skip
    assert committed.generation == m.generation and m.id in committed.reason


def test_an_archive_no_migration_takes_up_is_forgotten_after_the_step_timeout(
    fleet: Fleet,
) -> None:
    parked = fleet.upload("a", b"parked, never reported for a migration")
    fleet.clock.at += timedelta(seconds=119)
    assert fleet.archives.forget_unused() == 0
    assert fleet.blobs.exists(parked.sha256)
    fleet.clock.at += timedelta(seconds=2)  # past migration_step_timeout_s (120 s)
    assert fleet.archives.forget_unused() == 1
    assert not fleet.blobs.exists(parked.sha256)
    with fleet.db.read() as tx:
        assert tx.checkpoint_archives.bytes_of("a") == 0
