"""Forecast destinations (`EDGEFLEET_PLACEMENT_FORECAST_HORIZON_S`) over a real store: nodes
heartbeat their battery and load through the device link for half an hour, then the
placement controller places a replica. Off (0), it takes the node that looks best now; with
a horizon, a node whose battery drains or whose load climbs loses to a steady one that
looks worse now, and the decision says it saw forecast values. A replica's own load does
not push it off its node."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edgefleet.controllers.liveness import LivenessController
from edgefleet.core.device import Device
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.protocol import Report, from_dict
from edgefleet.core.workloads.placement import Assignment, Placement
from edgefleet.core.workloads.record import WorkloadRecord
from edgefleet.server.services.device_link import DeviceLinkService
from edgefleet.server.services.liveness_store import SqlLivenessStore
from edgefleet.server.services.node_trends import NodeTrends
from edgefleet.server.services.placement_controller import PlacementController
from edgefleet.server.settings import ServerSettings
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.server.workload_settings import WorkloadSettings
from edgefleet.store import Database
from tests.fake_clock import FakeClock

T0 = datetime(2026, 6, 1, 8, tzinfo=UTC)
INVENTORY = {"hardware": {"cpu_count": 2, "memory_mb": 4096},
             "location": {"region": "eu", "zone": "eu-a"}}  # fmt: skip
HEARTBEAT_S = 30.0
HISTORY_MIN = 30  # the samples' window (node_health.SAMPLE_WINDOW_S)
HORIZON_S = 3600.0
NOTE = "forecast 3600 s ahead"

NodeAt = Callable[[float], dict[str, Any]]  # minutes from the start -> the heartbeat's node


def workload(cpu_millicores: int) -> dict[str, Any]:
    return {"kind": "Workload", "metadata": {"name": "agg"}, "spec": {
        "resources": {"cpu_millicores": cpu_millicores, "memory_mb": 256},
        "service": {"port": "auto"}}}  # fmt: skip


class Fleet:
    def __init__(self, db: Database, tmp_path: Path, horizon_s: float) -> None:
        self.db = db
        self.clock = FakeClock(T0)
        settings = WorkloadSettings(placement_forecast_horizon_s=horizon_s)
        trends = NodeTrends()
        self.link = DeviceLinkService(db, self.clock, ServerSettings(data_dir=tmp_path))
        self.liveness = LivenessController(SqlLivenessStore(db), settings.liveness_policy(),
                                           self.clock.now(), trends)  # fmt: skip
        self.placement = PlacementController(db, self.clock, settings, DesiredStateWatch(),
                                             trends)  # fmt: skip

    def run(self, nodes: dict[str, NodeAt]) -> None:
        """Half an hour of heartbeats of `nodes`, each reporting what its function says."""
        with self.db.transaction() as tx:
            for device_id in nodes:
                tx.devices.insert(Device(
                    device_id, device_id, f"key-{device_id}", EnrollmentState.APPROVED, {},
                    INVENTORY, None, T0, heartbeat_interval_s=HEARTBEAT_S,
                ))  # fmt: skip
        steps = int(HISTORY_MIN * 60 / HEARTBEAT_S)
        for step in range(steps + 1):
            self.clock.at = T0 + timedelta(seconds=step * HEARTBEAT_S)
            for device_id, node_at in nodes.items():
                with self.db.read() as tx:
                    device = tx.devices.get(device_id)
                report = from_dict(Report, {"applied_generation": 0, "node": {
                    "address": "127.0.0.1", "scheduled": True,
                    **node_at(step * HEARTBEAT_S / 60)}})  # fmt: skip
                self.link.report(device, report)
            self.liveness.tick(self.clock.now())

    def declare(self, cpu_millicores: int) -> None:
        with self.db.transaction() as tx:
            tx.workloads.insert(WorkloadRecord("agg", workload(cpu_millicores), (), "op",
                                               T0, "op", T0))  # fmt: skip

    def placed(self) -> tuple[str, str]:
        """Where the replica is, and why."""
        with self.db.read() as tx:
            record = tx.placement.load()
        [a] = record.placement.assignments
        [d] = record.decisions
        return a.node_id, str(d["reason"])


def battery(start_pct: float, per_min: float) -> NodeAt:
    return lambda t_min: {"power_source": "battery", "battery_pct": start_pct + per_min * t_min}


def mains(load: float, per_min: float = 0.0) -> NodeAt:
    return lambda t_min: {"power_source": "mains", "cpu_load": load + per_min * t_min}


@pytest.mark.parametrize(("horizon_s", "chosen"), [(0.0, "fading"), (HORIZON_S, "steady")])
def test_a_draining_battery_loses_to_a_steady_one_that_is_lower_now(
    db: Database, tmp_path: Path, horizon_s: float, chosen: str
) -> None:
    fleet = Fleet(db, tmp_path, horizon_s)
    fleet.run({
        "fading": battery(100.0, per_min=-0.5),  # 85 % now, flat in under three hours
        "steady": battery(60.0, per_min=0.0),
    })  # fmt: skip
    fleet.declare(500)
    assert fleet.placement.tick() is not None
    node_id, reason = fleet.placed()
    assert node_id == chosen
    assert (NOTE in reason) == (horizon_s > 0)


@pytest.mark.parametrize(("horizon_s", "chosen"), [(0.0, "climbing"), (HORIZON_S, "steady")])
def test_a_climbing_load_loses_to_a_steady_one_that_is_busier_now(
    db: Database, tmp_path: Path, horizon_s: float, chosen: str
) -> None:
    fleet = Fleet(db, tmp_path, horizon_s)
    fleet.run({
        "climbing": mains(0.0, per_min=0.01),  # 30 % now, 90 % within the hour
        "steady": lambda t_min: {**battery(80.0, 0.0)(t_min), "cpu_load": 0.5},
    })  # fmt: skip
    fleet.declare(500)
    assert fleet.placement.tick() is not None
    node_id, reason = fleet.placed()
    assert node_id == chosen
    assert (NOTE in reason) == (horizon_s > 0)


@pytest.mark.parametrize("horizon_s", [0.0, HORIZON_S])
def test_a_replica_is_not_pushed_off_its_node_by_its_own_load(
    db: Database, tmp_path: Path, horizon_s: float
) -> None:
    """`home` runs a replica requesting 1500m of its 2000m and measures 75 % load: the
    replica's own. Counted again as foreign work, it would leave no room for the replica."""
    fleet = Fleet(db, tmp_path, horizon_s)
    fleet.run({"home": mains(0.75), "idle": mains(0.0)})
    fleet.declare(1500)
    with db.transaction() as tx:
        record = tx.placement.load()
        tx.placement.save(record, Placement((Assignment("agg", 0, "home", 1),), 1), [], T0)
    fleet.placement.tick()
    node_id, reason = fleet.placed()
    assert node_id == "home", reason
    with db.read() as tx:
        assert tx.migrations.active() == []
