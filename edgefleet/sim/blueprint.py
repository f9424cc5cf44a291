"""Blueprints: the concrete devices of a fleet drawn from a profile — which class and region
each one has, where it stands, its labels and its own seed.

Class and region counts follow the declared shares exactly (largest remainder), and which
device gets which is a seeded shuffle, so `draw_fleet(profile, n, seed)` is the same fleet
on every machine and in every process (a multi-process `sim run` takes slices of it).

>>> from edgefleet.sim.profile import load_profile
>>> fleet = draw_fleet(load_profile("factory-gateways"), 10, seed=1)
>>> len(fleet), fleet[0].name
(10, 'gw-00000')
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgefleet.sim.faults import FaultTarget
from edgefleet.sim.profile import DeviceClass, FleetProfile, Region, Zone

COORDINATE_SPREAD_DEG = 0.05


@dataclass(frozen=True)
class DeviceBlueprint:
    index: int
    name: str
    device_class: DeviceClass
    region: Region
    zone: Zone
    latitude: float
    longitude: float
    labels: Mapping[str, str]
    seed: int

    @property
    def time_zone(self) -> str:
        return self.region.time_zone

    def fault_target(self) -> FaultTarget:
        return FaultTarget(self.index, self.device_class.name, self.region.name, self.zone.name)


def allocate(shares: Sequence[float], total: int) -> list[int]:
    """Split `total` by `shares` with the largest-remainder method (counts sum to total).

    >>> allocate([70, 30], 10), allocate([1, 1, 1], 10)
    ([7, 3], [4, 3, 3])
    """
    weight = sum(shares)
    exact = [total * s / weight for s in shares]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _spread(items: Sequence[int], counts: list[int], rng: random.Random) -> list[int]:
    picks = [i for i, n in zip(items, counts, strict=True) for _ in range(n)]
    rng.shuffle(picks)
    return picks


def draw_fleet(profile: FleetProfile, count: int, seed: int | None = None) -> list[DeviceBlueprint]:
    """`count` devices of `profile` (seed: the profile's unless given)."""
    seed = profile.seed if seed is None else seed
    rng = random.Random(f"fleet:{seed}:{profile.name}")
    classes = _spread(
        range(len(profile.classes)), allocate([c.share for c in profile.classes], count), rng
    )
    regions = _spread(
        range(len(profile.regions)), allocate([r.share for r in profile.regions], count), rng
    )
    seen_in_region = [0] * len(profile.regions)
    fleet: list[DeviceBlueprint] = []
    for index in range(count):
        device_class = profile.classes[classes[index]]
        region = profile.regions[regions[index]]
        zone = region.zones[seen_in_region[regions[index]] % len(region.zones)]
        seen_in_region[regions[index]] += 1
        labels = {
            **profile.labels,
            **device_class.labels,
            "region": region.name,
            "zone": zone.name,
            "class": device_class.name,
        }
        fleet.append(DeviceBlueprint(
            index=index,
            name=f"{profile.name_prefix}-{index:05d}",
            device_class=device_class,
            region=region,
            zone=zone,
            latitude=max(-90.0, min(90.0, zone.latitude + rng.gauss(0, COORDINATE_SPREAD_DEG))),
            longitude=max(-180.0, min(180.0,
                                      zone.longitude + rng.gauss(0, COORDINATE_SPREAD_DEG))),
            labels=labels,
            seed=rng.getrandbits(63),
        ))  # fmt: skip
    return fleet
