"""The lab's fleet: one `LabDevice` per device to rehearse on — the facts the control plane
would know (labels, inventory, time zone, location, current release) and the behaviour the
device will show (its model's latency and errors, its link, its battery, its heartbeat).

Built from a profile (`lab_fleet_from_profile`: the same blueprints `sim run` starts) or
copied from a real control plane (`fleet_copy.py`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgefleet.core.workloads.terms import Node, PowerSource
from edgefleet.core.workloads.workload import GeoPoint
from edgefleet.sim.blueprint import draw_fleet
from edgefleet.sim.hardware import HardwareSpec, SimHardware
from edgefleet.sim.model_behaviour import ModelBehaviour
from edgefleet.sim.network import NetworkConditions
from edgefleet.sim.profile import FleetProfile

DEVICE_SPREAD_SIGMA = 0.1  # device-to-device spread of latency within a class (log-normal)
WORKLOAD_SHARE = 0.5  # share of a node's cpu and memory placement may use


@dataclass(frozen=True)
class LabDevice:
    id: str
    name: str
    device_class: str
    labels: Mapping[str, str]
    inventory: Mapping[str, Any]
    time_zone: str | None
    region: str
    zone: str
    behaviour: ModelBehaviour = field(default_factory=ModelBehaviour)
    network: NetworkConditions = field(default_factory=NetworkConditions)
    hardware: HardwareSpec = field(default_factory=HardwareSpec)
    heartbeat_interval_s: float = 30.0
    current_release: str | None = None
    residency: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    online: bool = True  # False: offline when the rehearsal starts (and stays so)
    speed_factor: float = 1.0  # this device's latency relative to its class
    battery_start_percent: float | None = None
    seed: int = 0

    def battery_empty_at_s(self, drain_percent_per_hour: float | None = None) -> float | None:
        """Seconds into the rehearsal when the battery runs flat (None: never)."""
        if self.battery_start_percent is None or self.hardware.power is PowerSource.MAINS:
            return None
        battery = self.hardware.battery
        drain = (
            drain_percent_per_hour
            if drain_percent_per_hour is not None
            else (battery.drain_percent_per_hour if battery is not None else 0.0)
        )
        if drain <= 0:
            return None
        return self.battery_start_percent / drain * 3600

    def node(self) -> Node:
        """What placement knows about this device."""
        hardware = self.inventory.get("hardware", {})
        accelerators = list(hardware.get("accelerators") or [])
        location = None
        if self.latitude is not None and self.longitude is not None:
            location = GeoPoint(self.latitude, self.longitude)
        return Node(
            id=self.id,
            region=self.region,
            zone=self.zone,
            cpu_millicores=int(int(hardware.get("cpu_count", 1)) * 1000 * WORKLOAD_SHARE),
            memory_mb=int(int(hardware.get("memory_mb", 512)) * WORKLOAD_SHARE),
            labels=dict(self.labels),
            residency=self.residency,
            location=location,
            accelerators=len(accelerators),
            accelerator_kind=accelerators[0] if accelerators else None,
            power_source=self.hardware.power,
            battery_pct=self.battery_start_percent,
        )


def lab_fleet_from_profile(
    profile: FleetProfile, count: int, seed: int, current_release: str | None = None
) -> list[LabDevice]:
    """`count` devices of `profile`, the same fleet `sim run` would start."""
    fleet = []
    for blueprint in draw_fleet(profile, count, seed):
        rng = random.Random(blueprint.seed)
        device_class = blueprint.device_class
        hardware = SimHardware(device_class.hardware, lambda: 0.0, rng)
        inventory = {
            **hardware.inventory(),
            "location": {"region": blueprint.region.name, "zone": blueprint.zone.name,
                         "timezone": blueprint.time_zone, "latitude": blueprint.latitude,
                         "longitude": blueprint.longitude},
        }  # fmt: skip
        fleet.append(LabDevice(
            id=blueprint.name,
            name=blueprint.name,
            device_class=device_class.name,
            labels=dict(blueprint.labels),
            inventory=inventory,
            time_zone=blueprint.time_zone,
            region=blueprint.region.name,
            zone=blueprint.zone.name,
            behaviour=device_class.model,
            network=device_class.network,
            hardware=device_class.hardware,
            heartbeat_interval_s=profile.heartbeat_interval_s,
            current_release=current_release,
            residency=blueprint.region.residency,
            latitude=blueprint.latitude,
            longitude=blueprint.longitude,
            speed_factor=math.exp(rng.gauss(0.0, DEVICE_SPREAD_SIGMA)),
            battery_start_percent=hardware.battery_percent(),
            seed=blueprint.seed,
        ))  # fmt: skip
    return fleet
