"""The fleet as the workload controllers see it: one consistent read of devices, node health,
workloads, the placement in force and the active migrations, and the placement inputs
(`Node`s, liveness times) derived from it with the pure functions of `core`; the nodes as
they are now, or as forecast (`node_trends.DestinationForecast`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from edgefleet.core.device import Device
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.migration import Migration
from edgefleet.core.workloads.node_health import NodeHealth
from edgefleet.core.workloads.nodes import NodeFacts, node_from_facts, region_and_zone
from edgefleet.core.workloads.placement import Node
from edgefleet.core.workloads.placement_record import PlacementRecord
from edgefleet.core.workloads.record import WorkloadRecord
from edgefleet.core.workloads.workload import Workload
from edgefleet.server.services.node_trends import DestinationForecast
from edgefleet.store import Transaction


@dataclass(frozen=True)
class FleetView:
    devices: dict[str, Device]  # approved devices that have reported node health
    health: dict[str, NodeHealth]
    workloads: dict[str, WorkloadRecord]
    placement: PlacementRecord
    migrations: tuple[Migration, ...]  # active ones
    now: datetime
    quarantined: frozenset[str] = frozenset()  # the attestation policy keeps work off them

    @property
    def specs(self) -> list[Workload]:
        return [record.spec for record in self.workloads.values()]

    def liveness(self, device_id: str) -> Liveness:
        health = self.health.get(device_id)
        return Liveness.DEAD if health is None else health.state

    def liveness_since(self) -> dict[str, datetime]:
        return {device_id: h.liveness.since for device_id, h in self.health.items()}

    def zone_of(self) -> dict[str, str]:
        return {d.id: region_and_zone(d.labels, d.inventory)[1] for d in self.devices.values()}

    def nodes(self, forecast: DestinationForecast | None = None) -> list[Node]:
        """Placement nodes; migration copies hold resources on their targets. With
        `forecast`, each node's load and battery as forecast over its horizon."""
        held: dict[str, list[int]] = {}
        for m in self.migrations:
            record = self.workloads.get(m.workload)
            if record is None or m.target not in self.devices:
                continue
            r = record.spec.resources
            used = held.setdefault(m.target, [0, 0])
            used[0] += r.cpu_millicores
            used[1] += r.memory_mb
        placed = self._placed_cpu_millicores() if forecast is not None else {}
        out = []
        for device in self.devices.values():
            health = self.health[device.id]
            used = held.get(device.id, [0, 0])
            node = node_from_facts(
                NodeFacts(
                    id=device.id,
                    labels=device.labels,
                    inventory=device.inventory,
                    liveness=health.state,
                    reliability=health.liveness.reliability(self.now),
                    power=health.node,
                    draining=health.drain.draining or device.id in self.quarantined,
                    used_cpu_millicores=used[0],
                    used_memory_mb=used[1],
                )
            )
            if forecast is not None:
                node = forecast.node(node, health, self.now, placed.get(device.id, 0))
            out.append(node)
        return out

    def _placed_cpu_millicores(self) -> dict[str, int]:
        """Per node, the CPU its placed replicas request: part of the load it measures."""
        out: dict[str, int] = {}
        for a in self.placement.placement.assignments:
            record = self.workloads.get(a.workload)
            if record is not None:
                cpu = record.spec.resources.cpu_millicores
                out[a.node_id] = out.get(a.node_id, 0) + cpu
        return out


def load_view(tx: Transaction, now: datetime) -> FleetView:
    health = tx.node_health.all()
    devices = {
        d.id: d
        for d in tx.devices.all()
        if d.enrollment is EnrollmentState.APPROVED and d.id in health
    }
    return FleetView(
        devices=devices,
        health={k: v for k, v in health.items() if k in devices},
        workloads={w.name: w for w in tx.workloads.all()},
        placement=tx.placement.load(),
        migrations=tuple(tx.migrations.active()),
        now=now,
        quarantined=tx.attestations.withholding_workloads(),
    )
