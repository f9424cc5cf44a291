"""Random, seeded placement instances for the benchmarks: a fleet over four regions of
four zones each, with residency zones, labels, accelerators, batteries and named data
sources, and workloads that use every kind of constraint and preference."""

from __future__ import annotations

import random
from dataclasses import dataclass

from edgefleet.core.selector import parse_selector
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.placement import Node, PowerSource, Topology
from edgefleet.core.workloads.workload import (
    AffinityScope,
    AffinityTerm,
    GeoPoint,
    HardConstraints,
    Preferences,
    ProximityTarget,
    Resources,
    Workload,
)

REGIONS = {
    # region: (residency zone, centre)
    "eu-west": ("eu", GeoPoint(48.8, 2.3)),
    "eu-central": ("eu", GeoPoint(50.1, 8.7)),
    "us-east": ("us", GeoPoint(39.0, -77.5)),
    "ap-south": ("ap", GeoPoint(19.1, 72.9)),
}
SELECTORS = ["", "", "kind=camera", "tier in (edge)", "kind!=server", "!canary"]


@dataclass(frozen=True)
class Instance:
    nodes: list[Node]
    workloads: list[Workload]
    topology: Topology


def make_instance(
    n_nodes: int,
    n_workloads: int,
    seed: int,
    *,
    n_sources: int = 50,
    liveness: bool = True,
    affinity: bool = True,
    size: float = 1.0,
    priorities: tuple[int, ...] = (0, 0, 10, 100),
) -> Instance:
    """`size` scales workload requests (larger: tighter capacity)."""
    rng = random.Random(seed)
    regions = sorted(REGIONS)
    nodes = []
    for i in range(n_nodes):
        region = rng.choice(regions)
        residency, centre = REGIONS[region]
        battery = rng.random() < 0.3
        acc = rng.random() < 0.1
        state = Liveness.ALIVE
        if liveness:
            roll = rng.random()
            state = Liveness.DEAD if roll < 0.01 else Liveness.SUSPECT if roll < 0.02 else state
        cpu = rng.choice([2000, 4000, 8000])
        mem = rng.choice([2048, 4096, 8192, 16384])
        nodes.append(
            Node(
                id=f"node-{i:05d}",
                region=region,
                zone=f"{region}-{rng.choice('abcd')}",
                cpu_millicores=cpu,
                memory_mb=mem,
                labels={
                    "kind": rng.choice(["camera", "gateway", "server"]),
                    "tier": rng.choice(["edge", "core"]),
                    **({"canary": "yes"} if rng.random() < 0.05 else {}),
                },
                residency=residency,
                location=GeoPoint(centre.lat + rng.uniform(-4, 4), centre.lon + rng.uniform(-6, 6)),
                accelerators=rng.choice([1, 2]) if acc else 0,
                accelerator_kind=rng.choice(["npu", "gpu"]) if acc else None,
                used_cpu_millicores=int(cpu * rng.uniform(0, 0.4)),
                used_memory_mb=int(mem * rng.uniform(0, 0.4)),
                power_source=PowerSource.BATTERY if battery else PowerSource.MAINS,
                battery_pct=rng.uniform(5, 100) if battery else None,
                energy_budget_wh=rng.uniform(10, 200) if battery else None,
                forecast_drain_w=rng.uniform(2, 15) if battery else None,
                reliability=rng.uniform(0.8, 1.0),
                liveness=state,
            )
        )
    sources = {}
    for s in range(n_sources):
        _, centre = REGIONS[rng.choice(regions)]
        sources[f"source-{s}"] = GeoPoint(
            centre.lat + rng.uniform(-4, 4), centre.lon + rng.uniform(-6, 6)
        )
    workloads = []
    for j in range(n_workloads):
        acc = rng.random() < 0.1
        allowed = rng.choice(["eu", "us", "ap"]) if rng.random() < 0.5 else None
        regions_allowed = (
            frozenset([rng.choice(regions)]) if rng.random() < 0.1 and not allowed else frozenset()
        )
        near = tuple(
            ProximityTarget(name, None, rng.choice([1.0, 2.0]))
            for name in rng.sample(sorted(sources), rng.choice([0, 1, 1, 2]))
        )
        terms: tuple[AffinityTerm, ...] = ()
        if affinity and j > 0 and rng.random() < 0.1:
            terms = (
                AffinityTerm(
                    f"w-{rng.randrange(j):04d}",
                    rng.choice(list(AffinityScope)),
                    1.0,
                    anti=rng.random() < 0.5,
                ),
            )
        workloads.append(
            Workload(
                name=f"w-{j:04d}",
                resources=Resources(
                    cpu_millicores=int(rng.randint(100, 2000) * size),
                    memory_mb=int(rng.randint(64, 2048) * size),
                    accelerators=1 if acc else 0,
                    accelerator_kind=rng.choice(["npu", "gpu", None]) if acc else None,
                ),
                replicas=rng.choice([1, 1, 1, 1, 2, 2, 3]),
                priority=rng.choice(priorities),
                constraints=HardConstraints(
                    selector=parse_selector(rng.choice(SELECTORS)),
                    regions=regions_allowed,
                    residency=frozenset([allowed]) if allowed else frozenset(),
                ),
                preferences=Preferences(near=near, affinity=terms, spread_zones=rng.random() < 0.3),
                state_dir="/var/lib/state" if rng.random() < 0.3 else None,
                slo_latency_ms=rng.choice([None, 20.0, 50.0]),
            )
        )
    return Instance(nodes, workloads, Topology(sources=sources))
