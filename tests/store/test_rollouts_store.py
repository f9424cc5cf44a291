"""Rollouts on every backend: the repositories, and the rollout controller and services over
a real database with a fixed clock. Devices are rows whose heartbeats the test writes the
way the device API does (`record_report`), standing in for agents that install whatever
their desired state names; tests/integration/test_rollouts.py does the same with real
agents.

Covered: round trips and optimistic versions; waves, gates and success; a controller thrown
away mid-rollout and a new one resuming without re-assigning or skipping a gate; two
controllers racing on one rollout; one active rollout per device (refusal, supersede); a
failed canary gate rolling back only the canary; commands; the report; release trains.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edgefleet.artifacts.blob_files import FilesystemBlobStore
from edgefleet.core.device import Device
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.rollouts.observation import CurrentAssignment, stamp_last_good
from edgefleet.core.rollouts.record import DeviceRecord, RolloutRecord, TimelineEntry
from edgefleet.core.rollouts.release_train_spec import TrainState
from edgefleet.core.rollouts.rollout import (
    DeviceState,
    OperatorCommand,
    Rollout,
    RolloutDevice,
    RolloutState,
    desired_release,
)
from edgefleet.core.rollouts.spec import parse_rollout_spec
from edgefleet.core.telemetry.windows import MetricKind, Window
from edgefleet.core.updates.release import Artifact, ArtifactKind, Ref, Release
from edgefleet.errors import Conflict, IllegalTransition, InvalidInput, NotFound
from edgefleet.security.rbac import Principal, Role
from edgefleet.server.metrics import ServerMetrics
from edgefleet.server.services.audit import OperatorContext
from edgefleet.server.services.deltas import DeltaService
from edgefleet.server.services.desired import render_device
from edgefleet.server.services.release_trains import ReleaseTrainService
from edgefleet.server.services.releases import ReleaseService, assign_release_to_device
from edgefleet.server.services.rollout_controller import RolloutController
from edgefleet.server.services.rollout_report import render_markdown
from edgefleet.server.services.rollouts import RolloutService
from edgefleet.server.services.telemetry import TelemetryService
from edgefleet.server.settings import ServerSettings
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.store import Database
from tests.fake_clock import FakeClock

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ADMIN = OperatorContext(Principal("tok-1", "alice", Role.ADMIN), "req-1")
VIEWER = OperatorContext(Principal("tok-2", "val", Role.VIEWER), "req-2")


class Plane:
    """The control plane's rollout services over one database, as the app wires them."""

    def __init__(self, db: Database, clock: FakeClock, data_dir: Path) -> None:
        self.db = db
        self.clock = clock
        watch = DesiredStateWatch()
        blobs = FilesystemBlobStore(data_dir / "blobs")
        self.deltas = DeltaService(blobs, data_dir / "deltas")
        releases = ReleaseService(db, blobs, clock, watch, self.deltas)
        settings = ServerSettings(data_dir=data_dir)
        telemetry = TelemetryService(db, clock, watch, ServerMetrics(), settings)
        self.trains = ReleaseTrainService(db, clock, lambda: None)
        self.controller = RolloutController(db, clock, watch, releases, telemetry, self.trains)
        self.rollouts = RolloutService(db, clock, lambda: None)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def plane(db: Database, clock: FakeClock, tmp_path: Path) -> Iterator[Plane]:
    plane = Plane(db, clock, tmp_path)
    yield plane
    plane.deltas.close()


def add_device(db: Database, name: str, labels: dict[str, str] | None = None,
               arch: str = "x86_64") -> str:  # fmt: skip
    device = Device(
        id=f"d-{name}", name=name, public_key=f"key-{name}",
        enrollment=EnrollmentState.APPROVED, labels=labels or {"kind": "camera"},
        inventory={"hardware": {"arch": arch, "cpu_count": 2, "memory_mb": 1024,
                                "disk_mb": 1000},
                   "location": {"timezone": "Europe/Berlin"}},
        enrollment_token_id=None, created_at=T0, last_seen=T0, heartbeat_interval_s=15,
    )  # fmt: skip
    with db.transaction() as tx:
        tx.devices.insert(render_device(tx, device))
    return device.id


def add_release(db: Database, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    model = Artifact(f"{name}-model", version, ArtifactKind.FILE, f"{version:0<8}".ljust(64, "a"),
                     10, "model.bin", requires, {}, "alice", T0)  # fmt: skip
    with db.transaction() as tx:
        tx.artifacts.insert(model)
        tx.releases.insert(Release(name, version, (model.ref,), "alice", T0, targets_version=1))


def manifest(release: str, **spec: Any) -> dict[str, Any]:
    return {"kind": "Rollout", "spec": {"release": release, "target": "kind=camera", **spec}}


FAST = {"waves": [1, "50%", "100%"], "soak": "60s", "max_unavailable": "100%"}
INSTALL_GATE = {"install_failure_rate": {"max_percent": 0, "min_devices": 1}}


class Agents:
    """Stands in for agents: each heartbeat reports the device's desired release installed
    and live (or failed, for releases in `bad`: the live release stays what it was), and the
    devices stay online. The control plane stamps each report as the device API does."""

    def __init__(self, db: Database, clock: FakeClock, bad: tuple[str, ...] = ()) -> None:
        self.db = db
        self.clock = clock
        self.bad = set(bad)
        self.installs: dict[str, list[tuple[str, int]]] = {}

    def heartbeat(self) -> None:
        with self.db.transaction() as tx:
            for device in tx.devices.all():
                status = dict(device.release_status)
                assignment = device.release_assignment
                if assignment is not None and status.get("serial") != assignment.serial:
                    release = f"{assignment.name}@{assignment.version}"
                    failed = release in self.bad
                    live = {"name": assignment.name, "version": assignment.version}
                    status = {
                        "name": assignment.name,
                        "version": assignment.version,
                        "serial": assignment.serial,
                        "state": "failed" if failed else "installed",
                        "reason": "",
                        "active": status.get("active") if failed else live,
                    }
                    self.installs.setdefault(device.id, []).append((release, assignment.serial))
                status = stamp_last_good(device.release_status, status)
                tx.devices.record_report(device.id, self.clock.now(), dict(device.inventory),
                                         device.desired_generation, status)  # fmt: skip


def drive(
    plane: Plane,
    agents: Agents,
    rollout_id: str,
    step_s: float = 10,
    until: tuple[RolloutState, ...] | None = None,
    max_steps: int = 200,
) -> RolloutRecord:
    """Controller passes, heartbeats and clock steps until the rollout reaches `until`
    (default: any final state)."""
    final = until or (RolloutState.SUCCEEDED, RolloutState.FAILED, RolloutState.ABORTED,
                      RolloutState.ROLLED_BACK)  # fmt: skip
    for _ in range(max_steps):
        plane.controller.run_once()
        with plane.db.read() as tx:
            record = tx.rollouts.get(rollout_id)
        if record.state in final:
            return record
        agents.heartbeat()
        plane.clock.advance(step_s)
    raise AssertionError(f"rollout stuck in {record.state}: {record.rollout.reason}")


def devices_of(db: Database, rollout_id: str) -> dict[str, DeviceRecord]:
    with db.read() as tx:
        return tx.rollouts.devices(rollout_id)


def events_of(db: Database, rollout_id: str) -> list[TimelineEntry]:
    with db.read() as tx:
        return tx.rollouts.events(rollout_id)


# --- repositories ---------------------------------------------------------------------------


def test_rollout_record_round_trip_and_optimistic_version(db: Database) -> None:
    spec = parse_rollout_spec(manifest("det@2.0.0", strategy=FAST))
    record = RolloutRecord(Rollout("ro-1", spec), "det", manifest("det@2.0.0", strategy=FAST),
                           "alice", T0, T0, T0)  # fmt: skip
    with db.transaction() as tx:
        tx.rollouts.insert(record)
    with db.read() as tx:
        assert tx.rollouts.get("ro-1") == record
        assert tx.rollouts.resolve("det") == record
        assert tx.rollouts.due(T0, 10) == ["ro-1"]
        assert tx.rollouts.due(T0 - timedelta(seconds=1), 10) == []
    moved = replace(record.rollout, state=RolloutState.ABORTED, reason="abort by alice")
    with db.transaction() as tx:
        saved = tx.rollouts.update(replace(record, rollout=moved, due_at=None))
    assert saved.version == 2 and saved.state is RolloutState.ABORTED and not saved.active
    with pytest.raises(Conflict) as stale, db.transaction() as tx:
        tx.rollouts.update(record)  # read at version 1
    assert stale.value.code == "concurrent_update"
    with db.read() as tx:
        assert tx.rollouts.due(T0 + timedelta(days=1), 10) == []
        assert tx.rollouts.recent(active_only=True) == []
        with pytest.raises(NotFound):
            tx.rollouts.get("ro-2")


def test_device_records_claims_and_timeline(db: Database) -> None:
    device = DeviceRecord(
        RolloutDevice("d-1", DeviceState.UPDATING, attempts=1, assigned_at=T0,
                      previous_release="det@1.0.0", reason="wave 1"),
        wave=0, assignment=CurrentAssignment("det@2.0.0", 4, 9), first_assigned_at=T0,
    )  # fmt: skip
    with db.transaction() as tx:
        tx.rollouts.put_devices("ro-1", [device])
        tx.rollouts.put_devices("ro-1", [replace(device, installed_at=T0)])
        tx.rollouts.claim("ro-1", ["d-1", "d-2"])
        tx.rollouts.claim("ro-1", ["d-1"])  # idempotent for its holder
        tx.rollouts.append_events(
            "ro-1",
            [
                TimelineEntry(T0, "create", "created"),
                TimelineEntry(T0, "assign-release", "go", "c", "d-1"),
            ],
        )
        tx.rollouts.append_events("ro-1", [TimelineEntry(T0, "pause", "by alice")])
    with db.read() as tx:
        assert tx.rollouts.devices("ro-1") == {"d-1": replace(device, installed_at=T0)}
        assert tx.rollouts.claims(["d-1", "d-3"]) == {"d-1": "ro-1"}
        assert [e.seq for e in tx.rollouts.events("ro-1")] == [1, 2, 3]
        assert [e.kind for e in tx.rollouts.events("ro-1", limit=1)] == ["pause"]
        assert tx.rollouts.state_counts(["ro-1"]) == {"ro-1": {"updating": 1}}
    with pytest.raises(Conflict) as taken, db.transaction() as tx:
        tx.rollouts.claim("ro-2", ["d-3", "d-2"])
    assert taken.value.code == "device_in_rollout" and "ro-1" in taken.value.message
    with db.transaction() as tx:
        tx.rollouts.release("ro-1", ["d-2"])
        tx.rollouts.claim("ro-2", ["d-2"])
        tx.rollouts.release("ro-1")
    with db.read() as tx:
        assert tx.rollouts.claims() == {"d-2": "ro-2"}


# --- the controller -------------------------------------------------------------------------


def fleet(db: Database, n: int = 5) -> list[str]:
    add_release(db, "det", "1.0.0")
    add_release(db, "det", "2.0.0")
    return [add_device(db, f"cam-{i}") for i in range(n)]


def serials(db: Database) -> dict[str, int]:
    with db.read() as tx:
        return {d.id: d.release_assignment.serial if d.release_assignment else 0
                for d in tx.devices.all()}  # fmt: skip


def test_waves_soak_gates_then_success(plane: Plane, db: Database) -> None:
    ids = fleet(db)
    created = plane.rollouts.create(ADMIN, manifest("det@2.0.0", strategy=FAST,
                                                    gates=INSTALL_GATE))  # fmt: skip
    agents = Agents(db, plane.clock)
    record = drive(plane, agents, created.record.id)
    assert record.state is RolloutState.SUCCEEDED, record.rollout.reason
    rollout = record.rollout
    assert rollout.plan is not None and [w.size for w in rollout.plan.waves] == [1, 2, 2]
    assert [e.wave for e in rollout.gate_evaluations] == [0, 1, 2]
    assert all(e.results[0].measured == 0.0 for e in rollout.gate_evaluations)
    assert {d: [r for r, _ in agents.installs[d]] for d in ids} == {d: ["det@2.0.0"] for d in ids}
    # Each wave was assigned only after the previous wave's gates passed.
    events = events_of(db, record.id)
    gate_times = [e.at for e in events if e.kind == "record-gates"]
    for device_id, wave in ((d, rollout.plan.wave_of(d)) for d in ids):
        assigned = next(e.at for e in events if e.kind == "assign-release"
                        and e.device_id == device_id)  # fmt: skip
        assert wave is not None and (wave == 0 or assigned >= gate_times[wave - 1])
    with db.read() as tx:
        assert tx.rollouts.claims(ids) == {}  # a finished rollout holds no device
        actions = [r.action for r in tx.audit.latest(50)]
    assert "rollout.create" in actions and "rollout.complete-rollout" in actions


def test_a_new_controller_resumes_without_reassigning_or_skipping_a_gate(
    plane: Plane, db: Database, tmp_path: Path
) -> None:
    ids = fleet(db)
    before = serials(db)
    created = plane.rollouts.create(ADMIN, manifest("det@2.0.0", strategy=FAST,
                                                    gates=INSTALL_GATE))  # fmt: skip
    agents = Agents(db, plane.clock)
    # Until the second wave is assigned, then the controller is thrown away mid-wave.
    for _ in range(100):
        plane.controller.run_once()
        if sum(r.device.touched for r in devices_of(db, created.record.id).values()) >= 2:
            break
        agents.heartbeat()
        plane.clock.advance(10)
    plane.deltas.close()
    restarted = Plane(db, plane.clock, tmp_path / "again")
    record = drive(restarted, agents, created.record.id)
    restarted.deltas.close()
    assert record.state is RolloutState.SUCCEEDED
    assert [e.wave for e in record.rollout.gate_evaluations] == [0, 1, 2]
    assert {d: serials(db)[d] - before[d] for d in ids} == {d: 1 for d in ids}
    assigns = [e.device_id for e in events_of(db, record.id) if e.kind == "assign-release"]
    assert Counter(assigns) == Counter(ids)  # each device assigned exactly once
    # What each device's desired state names follows from the stored records alone.
    records = devices_of(db, record.id)
    with db.read() as tx:
        for device_id in ids:
            wanted = desired_release(record.rollout, records[device_id].device)
            assignment = tx.devices.get(device_id).release_assignment
            assert wanted is not None and assignment is not None
            assert wanted.release == f"{assignment.name}@{assignment.version}"


def test_two_controllers_racing_on_one_rollout_assign_each_device_once(
    plane: Plane, db: Database, tmp_path: Path
) -> None:
    ids = fleet(db, 4)
    strategy = {**FAST, "waves": ["100%"]}
    created = plane.rollouts.create(ADMIN, manifest("det@2.0.0", strategy=strategy))
    other = Plane(db, plane.clock, tmp_path / "replica")
    plane.controller.reconcile(created.record.id)  # start: plan the waves
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(p: Plane) -> None:
        barrier.wait()
        try:
            p.controller.reconcile(created.record.id)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(p,)) for p in (plane, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    other.deltas.close()
    assert errors == []
    assert serials(db) == {d: 1 for d in ids}
    assigns = [e.device_id for e in events_of(db, created.record.id) if e.kind == "assign-release"]
    assert Counter(assigns) == Counter(ids)  # each device assigned exactly once


def test_a_failed_canary_gate_rolls_back_only_the_canary(plane: Plane, db: Database) -> None:
    ids = fleet(db)
    agents = Agents(db, plane.clock)
    with db.transaction() as tx:
        for device_id in ids:  # every device runs 1.0.0 before the rollout
            release = tx.releases.get(Ref("det", "1.0.0"))
            assign_release_to_device(tx, tx.devices.get(device_id), release)
    agents.heartbeat()
    before = serials(db)
    gates = {"workload_error_rate": {"max_percent": 5, "min_devices": 1, "min_requests": 50}}
    created = plane.rollouts.create(ADMIN, manifest("det@2.0.0", strategy=FAST, gates=gates))
    rollout_id = created.record.id
    canary: str | None = None
    for _ in range(50):
        plane.controller.run_once()
        records = devices_of(db, rollout_id)
        installed = [d for d, r in records.items() if r.installed_at is not None]
        if installed and canary is None:
            canary = installed[0]
            # The canary's workload answers 30 of 100 requests with an error.
            start_s = int(plane.clock.now().timestamp()) + 2
            windows = [Window("inference.requests", MetricKind.COUNTER, (), start_s, 2, 100,
                              100.0, 1.0, 1.0, 1.0),
                       Window("inference.errors", MetricKind.COUNTER, (), start_s, 2, 30,
                              30.0, 1.0, 1.0, 1.0)]  # fmt: skip
            with db.transaction() as tx:
                tx.telemetry.insert_windows(canary, 1, windows)
        with db.read() as tx:
            if tx.rollouts.get(rollout_id).state in (RolloutState.ROLLED_BACK,
                                                     RolloutState.FAILED):  # fmt: skip
                break
        agents.heartbeat()
        plane.clock.advance(10)
    with db.read() as tx:
        record = tx.rollouts.get(rollout_id)
        desired = {d.id: d.release_assignment for d in tx.devices.all()}
    assert record.state is RolloutState.ROLLED_BACK, record.rollout.reason
    gate = record.rollout.gate_evaluations[-1]
    assert gate.wave == 0 and gate.results[0].measured == 30.0
    assert "30 errors in 100 requests" in gate.results[0].reason
    assert canary is not None
    touched = {d for d, r in devices_of(db, rollout_id).items() if r.device.touched}
    assert touched == {canary}
    for device_id in ids:
        assignment = desired[device_id]
        assert assignment is not None and assignment.version == "1.0.0"
        expected = 2 if device_id == canary else 0  # the install and the revert
        assert serials(db)[device_id] - before[device_id] == expected
    assert agents.installs[canary][-2:] == [
        ("det@2.0.0", before[canary] + 1),
        ("det@1.0.0", before[canary] + 2),
    ]


def test_one_active_rollout_per_device(plane: Plane, db: Database) -> None:
    fleet(db, 3)
    add_device(db, "gw-1", {"kind": "gateway"})
    closed = [{"cron": "0 3 1 1 *", "duration": "1m", "time_zone": "UTC"}]  # Jan 1st only
    held = {**manifest("det@2.0.0", maintenance_windows=closed), "metadata": {"name": "held"}}
    first = plane.rollouts.create(ADMIN, held)
    plane.controller.run_once()
    with pytest.raises(Conflict) as refused:
        plane.rollouts.create(ADMIN, {**manifest("det@1.0.0"), "metadata": {"name": "other"}})
    assert refused.value.code == "devices_in_rollout"
    message = refused.value.message
    assert "3 target device(s)" in message and first.record.id in message
    assert "cam-0" in message and "--supersede" in message
    # Other devices are free; re-applying the same manifest changes nothing.
    gateways = {"kind": "Rollout", "spec": {"release": "det@2.0.0", "target": "kind=gateway"}}
    assert plane.rollouts.create(ADMIN, gateways).created
    again = plane.rollouts.create(ADMIN, held)
    assert not again.created and again.record.id == first.record.id
    with pytest.raises(Conflict) as renamed:
        plane.rollouts.create(ADMIN, {**held, "spec": {**held["spec"], "target": "kind=gateway"}})
    assert renamed.value.code == "rollout_exists"
    taken = plane.rollouts.create(ADMIN, {**manifest("det@1.0.0"), "metadata": {"name": "b"}},
                                  supersede=True)  # fmt: skip
    assert taken.superseded == (first.record.id,)
    with db.read() as tx:
        old = tx.rollouts.get(first.record.id)
        assert old.state is RolloutState.ABORTED and "superseded by" in old.rollout.reason
        assert set(tx.rollouts.claims().values()) >= {taken.record.id}


def test_bad_manifests_name_the_field(plane: Plane, db: Database) -> None:
    fleet(db, 1)
    cases = [
        (manifest("det@2.0.0", strategy={"waves": [1, "0%"]}), "spec.strategy.waves[1]"),
        (
            manifest("det@2.0.0", gates={"kpis": [{"kpi": "fps", "max_increase": 1}]}),
            "spec.gates.kpis[0].kpi: unknown KPI 'fps'",
        ),
        (manifest("det@2.0.0", surprise=1), "spec.surprise: unknown field"),
    ]
    for doc, message in cases:
        with pytest.raises(InvalidInput) as bad:
            plane.rollouts.create(ADMIN, doc)
        assert message in bad.value.message
    with pytest.raises(NotFound):
        plane.rollouts.create(ADMIN, manifest("det@9.0.0"))
    with pytest.raises(Exception) as forbidden:
        plane.rollouts.create(VIEWER, manifest("det@2.0.0"))
    assert getattr(forbidden.value, "code", "") == "insufficient_role"


def test_commands_follow_the_state_machine_and_are_audited(plane: Plane, db: Database) -> None:
    fleet(db, 2)
    closed = [{"cron": "0 3 1 1 *", "duration": "1m", "time_zone": "UTC"}]
    created = plane.rollouts.create(ADMIN, manifest("det@2.0.0", maintenance_windows=closed))
    plane.controller.run_once()
    rid = created.record.id
    assert plane.rollouts.command(ADMIN, rid, OperatorCommand.PAUSE, "lunch").state is (
        RolloutState.PAUSED
    )
    plane.controller.run_once()  # a paused rollout stays paused
    with db.read() as tx:
        assert tx.rollouts.get(rid).state is RolloutState.PAUSED
    assert plane.rollouts.command(ADMIN, rid, OperatorCommand.RESUME).state is (
        RolloutState.PROGRESSING
    )
    aborted = plane.rollouts.command(ADMIN, rid, OperatorCommand.ABORT, "wrong release")
    assert aborted.state is RolloutState.ABORTED and aborted.due_at is None
    with pytest.raises(IllegalTransition):
        plane.rollouts.command(ADMIN, rid, OperatorCommand.RESUME)
    kinds = [e.kind for e in events_of(db, rid)]
    assert kinds[0] == "create" and kinds[-3:] == ["pause", "resume", "abort"]
    with db.read() as tx:
        actions = [r.action for r in tx.audit.latest(10)]
        assert tx.rollouts.claims() == {}
    assert {"rollout.pause", "rollout.resume", "rollout.abort"} <= set(actions)


def test_the_report_tells_what_happened(plane: Plane, db: Database) -> None:
    fleet(db, 3)
    add_device(db, "old-cam", arch="riscv64")
    add_release(db, "arm", "1.0.0", requires=("arch=x86_64",))
    created = plane.rollouts.create(ADMIN, manifest("arm@1.0.0", strategy=FAST,
                                                    gates=INSTALL_GATE))  # fmt: skip
    drive(plane, Agents(db, plane.clock), created.record.id)
    report = plane.rollouts.report(VIEWER, created.record.id)
    assert report["rollout"]["state"] == "succeeded"
    assert [w["size"] for w in report["waves"]] == [1, 1, 1]
    assert [s["name"] for s in report["skipped"]] == ["old-cam"]
    assert "arch=x86_64" in report["skipped"][0]["reason"]
    assert report["failed"] == [] and report["rollback"]["actions"] == []
    assert len(report["gates"]) == 3 and report["gates"][0]["results"][0]["measured"] == 0
    kinds = [e["kind"] for e in report["timeline"]]
    assert kinds.count("assign-release") == 3 and kinds[-1] == "complete-rollout"
    text = render_markdown(report)
    for needle in (
        "# Rollout arm-1-0-0",
        "## Waves",
        "## Gate evaluations",
        "install_failure_rate",
        "≤ 0%",
        "## Devices skipped",
        "old-cam",
        "## Timeline",
        "No rollback.",
    ):
        assert needle in text


def test_a_release_train_starts_the_next_rollout_after_passing_gates(
    plane: Plane, db: Database
) -> None:
    fleet(db, 3)
    add_release(db, "det", "3.0.0")
    train: dict[str, Any] = {"kind": "ReleaseTrain", "metadata": {"name": "det"},
             "spec": {"releases": ["det@2.0.0", "det@3.0.0", "det@4.0.0"],
                      "rollout": {"target": "kind=camera", "strategy": FAST,
                                  "gates": INSTALL_GATE}}}  # fmt: skip
    record, action = plane.trains.apply(ADMIN, train)
    assert action == "created" and record.state is TrainState.RUNNING
    agents = Agents(db, plane.clock, bad=("det@3.0.0",))
    started: list[str] = []
    for _ in range(200):
        plane.controller.run_once()
        with db.read() as tx:
            current = tx.release_trains.get("det")
        if current.rollout_id and current.rollout_id not in started:
            started.append(current.rollout_id)
        if current.state is TrainState.STOPPED:
            break
        agents.heartbeat()
        plane.clock.advance(10)
    with db.read() as tx:
        rollouts = [tx.rollouts.get(r) for r in started]
    assert [r.release for r in rollouts] == ["det@2.0.0", "det@3.0.0"]
    assert [r.state for r in rollouts] == [RolloutState.SUCCEEDED, RolloutState.ROLLED_BACK]
    assert all(r.train == "det" for r in rollouts)
    assert current.state is TrainState.STOPPED and "rolled-back" in current.reason
    # An update may append releases, never move one that started.
    moved = {**train, "spec": {**train["spec"], "releases": ["det@3.0.0", "det@2.0.0"]}}
    with pytest.raises(Conflict):
        plane.trains.apply(ADMIN, moved)


def test_gates_waiting_for_telemetry_decide_as_soon_as_it_arrives(
    plane: Plane, db: Database
) -> None:
    ids = fleet(db, 2)
    gates = {"workload_error_rate": {"max_percent": 5, "min_devices": 1, "min_requests": 50},
             "insufficient_data": {"wait": "1h", "then": "fail"}}  # fmt: skip
    strategy = {**FAST, "waves": [1, "100%"]}
    created = plane.rollouts.create(ADMIN, manifest("det@2.0.0", strategy=strategy, gates=gates))
    record = drive(plane, Agents(db, plane.clock), created.record.id, until=(RolloutState.SOAKING,))
    for _ in range(10):  # soak over, no telemetry: the wave waits for data
        plane.clock.advance(30)
        plane.controller.run_once()
    with db.read() as tx:
        record = tx.rollouts.get(created.record.id)
    assert record.state is RolloutState.SOAKING and record.rollout.gate_wait_until is not None
    canary = next(d for d, r in devices_of(db, record.id).items() if r.installed_at is not None)
    start_s = int(plane.clock.now().timestamp())
    with db.transaction() as tx:
        tx.telemetry.insert_windows(canary, 1, [
            Window("inference.requests", MetricKind.COUNTER, (), start_s, 2, 80, 80.0, 1.0,
                   1.0, 1.0)])  # fmt: skip
    plane.clock.advance(5)
    plane.controller.run_once()
    with db.read() as tx:
        record = tx.rollouts.get(created.record.id)
    assert record.state is RolloutState.PROGRESSING and record.rollout.wave == 1
    assert "0 errors in 80 requests" in record.rollout.gate_evaluations[-1].reason
    assert len(ids) == 2


def test_an_operator_rolls_back_a_finished_rollout(plane: Plane, db: Database) -> None:
    ids = fleet(db, 3)
    add_device(db, "gw-1", {"kind": "gateway"})
    with db.transaction() as tx:
        release = tx.releases.get(Ref("det", "1.0.0"))
        for device_id in ids:
            assign_release_to_device(tx, tx.devices.get(device_id), release)
    agents = Agents(db, plane.clock)
    agents.heartbeat()
    done = drive(plane, agents, plane.rollouts.create(ADMIN, manifest("det@2.0.0",
                 strategy=FAST)).record.id)  # fmt: skip
    assert done.state is RolloutState.SUCCEEDED
    # Another active rollout holds one of its devices: the rollback is refused.
    other = plane.rollouts.create(ADMIN, {"kind": "Rollout", "spec": {
        "release": "det@1.0.0", "target": f"id={ids[0]}"}})  # fmt: skip
    with db.transaction() as tx:
        tx.rollouts.claim(other.record.id, [ids[0]])
    with pytest.raises(Conflict, match=other.record.id):
        plane.rollouts.command(ADMIN, done.id, OperatorCommand.ROLLBACK)
    plane.rollouts.command(ADMIN, other.record.id, OperatorCommand.ABORT)
    back = plane.rollouts.command(ADMIN, done.id, OperatorCommand.ROLLBACK, "regret")
    assert back.state is RolloutState.ROLLING_BACK
    final = drive(plane, agents, done.id)
    assert final.state is RolloutState.ROLLED_BACK
    with db.read() as tx:
        versions = {d.id: d.release_assignment.version for d in tx.devices.all()
                    if d.release_assignment}  # fmt: skip
    assert versions == {d: "1.0.0" for d in ids}
