"""Placement terms: what placement knows about nodes (`Node`, `Topology`), the weights and
terms of the score, and the fleet as columns of node attributes with the hard-constraint
masks over them. The terms are documented in `edgefleet.core.workloads.placement`.

Everything here is computed once per call of `place` and cached per distinct constraint or
target, so scoring a replica against 10k nodes is a handful of vector operations.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from edgefleet.core.selector import Requirement, Selector
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.workload import GeoPoint, ProximityTarget, Workload
from edgefleet.errors import InvalidInput

REFERENCE_LATENCY_MS = 50.0
UNKNOWN_LATENCY_MS = 500.0
BASE_LATENCY_MS = 2.0
KM_PER_LATENCY_MS = 100.0  # light in fibre covers ~200 km/ms; a round trip twice the path
EARTH_RADIUS_KM = 6371.0
ENERGY_HORIZON_H = 12.0

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.intp]
Bools = npt.NDArray[np.bool_]


class PowerSource(StrEnum):
    MAINS = "mains"
    BATTERY = "battery"
    SOLAR = "solar"


@dataclass(frozen=True)
class Node:
    """What placement needs to know about one device."""

    id: str
    region: str
    zone: str
    cpu_millicores: int  # allocatable to workloads
    memory_mb: int
    labels: Mapping[str, str] = field(default_factory=dict)
    residency: str | None = None  # data residency zone, e.g. "eu"
    location: GeoPoint | None = None
    accelerators: int = 0
    accelerator_kind: str | None = None
    used_cpu_millicores: int = 0  # held by work this plan does not manage
    used_memory_mb: int = 0
    power_source: PowerSource = PowerSource.MAINS
    battery_pct: float | None = None
    energy_budget_wh: float | None = None
    forecast_drain_w: float | None = None
    battery_empty_at: datetime | None = None
    reliability: float = 1.0
    liveness: Liveness = Liveness.ALIVE
    schedulable: bool = True  # False: cordoned or draining, its replicas move off


@dataclass(frozen=True)
class Topology:
    """Where named data sources and users are, and measured round trips to them."""

    sources: Mapping[str, GeoPoint] = field(default_factory=dict)
    latency_ms: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (node, name)


@dataclass(frozen=True)
class Weights:
    proximity: float = 4.0
    energy: float = 1.0
    reliability: float = 2.0
    headroom: float = 1.0
    affinity: float = 1.0
    spread: float = 1.0
    migration: float = 1.0
    stateful_migration: float = 1.0
    # The load curve: (utilisation, weight) kinks; above each, every unit of utilisation
    # costs `weight` more. Convex, so load spreads; piecewise linear, so an ILP is exact.
    load_steps: tuple[tuple[float, float], ...] = ((0.7, 10.0),)

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, float | int) and value < 0:
                raise InvalidInput(f"weights.{name}: must not be negative")
        for at, weight in self.load_steps:
            if not 0 <= at <= 1 or weight < 0:
                raise InvalidInput("weights.load_steps: need 0 <= utilisation <= 1, weight >= 0")

    def load_cost(self, utilisation: Floats) -> Floats:
        """The load curve at each utilisation: sum of weight * max(0, u - kink)."""
        cost: Floats | None = None
        for at, weight in self.load_steps:
            step = weight * np.maximum(utilisation - at, 0.0)
            cost = step if cost is None else cost + step
        return np.zeros_like(utilisation) if cost is None else cost

    def load_cost_at(self, utilisation: float) -> float:
        return sum(weight * max(0.0, utilisation - at) for at, weight in self.load_steps)


@dataclass(frozen=True)
class ScoreTerms:
    """Weighted contributions to one node's score for one replica."""

    proximity: float = 0.0
    energy: float = 0.0
    reliability: float = 0.0
    headroom: float = 0.0
    affinity: float = 0.0
    load: float = 0.0
    spread: float = 0.0
    migration: float = 0.0

    @property
    def total(self) -> float:
        return (
            self.proximity + self.energy + self.reliability + self.headroom + self.affinity
        ) + (self.load + self.spread + self.migration)  # fmt: skip


def violated_constraint(workload: Workload, node: Node) -> str | None:
    """The first hard constraint (not capacity) `node` breaks for `workload`, or None."""
    c, r = workload.constraints, workload.resources
    for req in c.selector.requirements:
        if not req.matches(node.labels):
            return f"selector {req}"
    for what, allowed, value in (
        ("regions", c.regions, node.region),
        ("zones", c.zones, node.zone),
        ("residency", c.residency, node.residency),
    ):
        if allowed and value not in allowed:
            return f"{what} in ({','.join(sorted(allowed))})"
    kind_ok = r.accelerator_kind is None or r.accelerator_kind == node.accelerator_kind
    if r.accelerators and (node.accelerators < r.accelerators or not kind_ok):
        return f"{r.accelerators} x {r.accelerator_kind or 'accelerator'}"
    return None


def estimate_latency_ms(a: GeoPoint, b: GeoPoint) -> float:
    """Round trip from great-circle distance: 2 ms plus 1 ms per 100 km.

    >>> round(estimate_latency_ms(GeoPoint(48.14, 11.58), GeoPoint(52.52, 13.40)), 1)
    7.0
    """
    return float(_latency_ms(np.array([a.lat]), np.array([a.lon]), b)[0])


def energy_term(node: Node, now: datetime) -> float:
    """1 on mains; else 0.5 * charge + 0.5 * endurance (forecast hours of runtime / 12 h)."""
    if node.power_source is PowerSource.MAINS:
        return 1.0
    charge = 0.5 if node.battery_pct is None else min(max(node.battery_pct / 100, 0.0), 1.0)
    hours: list[float] = []
    if node.energy_budget_wh is not None and (node.forecast_drain_w or 0) > 0:
        hours.append(max(0.0, node.energy_budget_wh) / (node.forecast_drain_w or 1.0))
    if node.battery_empty_at is not None:
        hours.append(max(0.0, (node.battery_empty_at - now).total_seconds() / 3600))
    endurance = min(1.0, min(hours) / ENERGY_HORIZON_H) if hours else charge
    return 0.5 * charge + 0.5 * endurance


def _latency_ms(lat: Floats, lon: Floats, to: GeoPoint) -> Floats:
    """Estimated round trips from many points (NaN where unknown) to one."""
    lat1, lat2 = np.radians(lat), math.radians(to.lat)
    h = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * math.cos(lat2) * np.sin((math.radians(to.lon) - np.radians(lon)) / 2) ** 2
    )
    km = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
    latency: Floats = BASE_LATENCY_MS + km / KM_PER_LATENCY_MS
    return np.where(np.isnan(latency), UNKNOWN_LATENCY_MS, latency)


class Column:
    """One categorical node attribute as integer codes (-1: absent) for fast masks."""

    def __init__(self, values: Sequence[str | None]) -> None:
        self.code: dict[str, int] = {}
        for v in values:
            if v is not None and v not in self.code:
                self.code[v] = len(self.code)
        self.codes: Ints = np.array([-1 if v is None else self.code[v] for v in values], np.intp)

    def mask(self, values: Iterable[str]) -> Bools:
        wanted = [self.code[v] for v in values if v in self.code]
        return np.isin(self.codes, np.array(wanted, np.intp))


@dataclass(frozen=True)
class Signature:
    """The nodes a set of hard constraints admits, and each constraint's mask in order."""

    checks: tuple[tuple[str, Bools], ...]
    hard_ok: Bools
    cand: Ints  # indices of alive, schedulable nodes passing every check


class NodeTable:
    """The nodes of one call as columns, with masks cached per constraint."""

    def __init__(self, nodes: Sequence[Node], topology: Topology, now: datetime) -> None:
        self.nodes = nodes
        self.ids = [n.id for n in nodes]
        self.index = {node_id: i for i, node_id in enumerate(self.ids)}
        self.topology = topology
        col = np.array
        self.cap_cpu: Floats = col([n.cpu_millicores for n in nodes], np.float64)
        self.cap_mem: Floats = col([n.memory_mb for n in nodes], np.float64)
        self.cap_acc: Floats = col([n.accelerators for n in nodes], np.float64)
        self.inv_cpu, self.inv_mem = 1.0 / self.cap_cpu, 1.0 / self.cap_mem
        self.base_cpu: Floats = col([n.used_cpu_millicores for n in nodes], np.float64)
        self.base_mem: Floats = col([n.used_memory_mb for n in nodes], np.float64)
        used = np.maximum(self.base_cpu * self.inv_cpu, self.base_mem * self.inv_mem)
        self.headroom: Floats = np.clip(1.0 - used, 0.0, 1.0)
        self.open: Bools = col(
            [n.liveness is Liveness.ALIVE and n.schedulable for n in nodes], np.bool_
        )
        self.energy: Floats = col([energy_term(n, now) for n in nodes], np.float64)
        self.reliability: Floats = np.clip(col([n.reliability for n in nodes], np.float64), 0, 1)
        self.lat: Floats = col([n.location.lat if n.location else np.nan for n in nodes], float)
        self.lon: Floats = col([n.location.lon if n.location else np.nan for n in nodes], float)
        self.region = Column([n.region for n in nodes])
        self.zone = Column([n.zone for n in nodes])
        self.zone_key = Column([f"{n.region}\x00{n.zone}" for n in nodes]).codes
        self.residency = Column([n.residency for n in nodes])
        self.accelerator = Column([n.accelerator_kind for n in nodes])
        self.hash = col([hash64(node_id) for node_id in self.ids], np.uint64)
        self._labels: dict[str, Column] = {}
        self._requirements: dict[Requirement, Bools] = {}
        self._signatures: dict[tuple[object, ...], Signature] = {}
        self._proximity: dict[tuple[object, ...], Floats] = {}
        self._latencies: dict[tuple[str, GeoPoint | None], Floats] = {}
        self._measured: dict[str, list[tuple[int, float]]] | None = None

    def signature(self, w: Workload) -> Signature:
        c, r = w.constraints, w.resources
        key = (c.selector, c.regions, c.zones, c.residency, r.accelerators, r.accelerator_kind)
        found = self._signatures.get(key)
        if found is None:
            checks = self._checks(w)
            hard_ok = np.ones(len(self.ids), np.bool_)
            for _, mask in checks:
                hard_ok = hard_ok & mask
            found = Signature(checks, hard_ok, np.flatnonzero(hard_ok & self.open))
            self._signatures[key] = found
        return found

    def _checks(self, w: Workload) -> tuple[tuple[str, Bools], ...]:
        c, r = w.constraints, w.resources
        checks = [(f"selector {req}", self._requirement(req)) for req in c.selector.requirements]
        for what, column, allowed in (
            ("regions", self.region, c.regions),
            ("zones", self.zone, c.zones),
            ("residency", self.residency, c.residency),
        ):
            if allowed:
                checks.append((f"{what} in ({','.join(sorted(allowed))})", column.mask(allowed)))
        if r.accelerators:
            mask = self.cap_acc >= r.accelerators
            if r.accelerator_kind is not None:
                mask = mask & self.accelerator.mask([r.accelerator_kind])
            kind = r.accelerator_kind or "accelerator"
            checks.append((f"{r.accelerators} x {kind}", mask))
        return tuple(checks)

    def _requirement(self, req: Requirement) -> Bools:
        mask = self._requirements.get(req)
        if mask is None:
            column = self._labels.get(req.key)
            if column is None:
                column = Column([n.labels.get(req.key) for n in self.nodes])
                self._labels[req.key] = column
            # The selector's own matcher is the reference; per distinct value it is cheap.
            probe = {v: Selector((req,)).matches({req.key: v}) for v in column.code}
            allowed = [column.code[v] for v, ok in probe.items() if ok]
            mask = np.isin(column.codes, np.array(allowed, np.intp))
            if Selector((req,)).matches({}):
                mask = mask | (column.codes < 0)
            self._requirements[req] = mask
        return mask

    def proximity(self, w: Workload) -> Floats | None:
        """Weighted mean of 1 / (1 + latency / ref) over the workload's targets."""
        near = w.preferences.near
        if not near:
            return None
        ref_ms = w.slo_latency_ms or REFERENCE_LATENCY_MS
        key = (near, ref_ms)
        found = self._proximity.get(key)
        if found is None:
            total = np.zeros(len(self.ids))
            for target in near:
                total += target.weight / (1.0 + self._latency(target) / ref_ms)
            found = total / sum(t.weight for t in near)
            self._proximity[key] = found
        return found

    def _latency(self, target: ProximityTarget) -> Floats:
        key = (target.name, target.location)
        found = self._latencies.get(key)
        if found is None:
            found = self._latencies[key] = self._measure(target)
        return found

    def _measure(self, target: ProximityTarget) -> Floats:
        location = target.location or self.topology.sources.get(target.name)
        if location is None:
            latency = np.full(len(self.ids), UNKNOWN_LATENCY_MS)
        else:
            latency = _latency_ms(self.lat, self.lon, location)
        if self._measured is None:
            self._measured = {}
            for (node_id, name), ms in sorted(self.topology.latency_ms.items()):
                if node_id in self.index:
                    self._measured.setdefault(name, []).append((self.index[node_id], ms))
        for i, ms in self._measured.get(target.name, ()):
            latency[i] = ms
        return latency

    def why_unplaceable(
        self, w: Workload, sig: Signature, free: tuple[Floats, ...], exclude: Iterable[int]
    ) -> str:
        """How many nodes each filter removed, in order, e.g. for `edgefleet placements`."""
        r = w.resources
        left = np.ones(len(self.ids), np.bool_)
        counts: list[str] = []

        def drop(mask: Bools, what: str) -> None:
            nonlocal left
            removed = int(np.count_nonzero(left & ~mask))
            if removed:
                counts.append(f"{removed} {what}")
            left = left & mask

        drop(self.open, "not alive or cordoned")
        for what, mask in sig.checks:
            drop(mask, f"fail {what}")
        fits = (free[0] >= r.cpu_millicores) & (free[1] >= r.memory_mb)
        drop(fits & (free[2] >= r.accelerators), f"lack room for {r.cpu_millicores}m cpu, "
             f"{r.memory_mb} MB")  # fmt: skip
        held = np.zeros(len(self.ids), np.bool_)
        held[np.array(sorted(exclude), np.intp)] = True
        drop(~held, "hold a replica")
        if not counts:
            return "no node fits: the fleet has no nodes"
        return f"no node fits (of {len(self.ids)} nodes: {'; '.join(counts)})"

    def first_failure(self, w: Workload, i: int, *, liveness: bool = True) -> str | None:
        """The first hard constraint node `i` fails for `w`, liveness first if asked."""
        node = self.nodes[i]
        if liveness and node.liveness is not Liveness.ALIVE:
            return f"node is {node.liveness}"
        if liveness and not node.schedulable:
            return "node is cordoned (draining)"
        for what, mask in self.signature(w).checks:
            if not mask[i]:
                return what
        return None


def positions(cand: Ints, nodes: Iterable[int]) -> Ints:
    """Positions in the sorted index array `cand` of those `nodes` that appear in it."""
    wanted = np.array(sorted(nodes), np.intp)
    pos = np.searchsorted(cand, wanted)
    inside = pos < len(cand)
    pos, wanted = pos[inside], wanted[inside]
    found: Ints = pos[cand[pos] == wanted]
    return found


def demand(w: Workload) -> tuple[int, int, int]:
    r = w.resources
    return r.cpu_millicores, r.memory_mb, r.accelerators


def hash64(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def mix64(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finaliser: a fixed, well-spread permutation of 64-bit integers."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def placement_order(workloads: Mapping[str, Workload]) -> list[str]:
    """Priority descending; within a priority, affinity targets first; then name."""
    depth: dict[str, int] = {}

    def depth_of(name: str, visiting: set[str]) -> int:
        if name in depth:
            return depth[name]
        w, d = workloads[name], 0
        visiting.add(name)
        for term in w.preferences.affinity:
            target = workloads.get(term.workload)
            if target is not None and target.priority == w.priority and target.name not in visiting:
                d = max(d, depth_of(target.name, visiting) + 1)
        visiting.discard(name)
        depth[name] = d
        return d

    for name in sorted(workloads):
        depth_of(name, set())
    return sorted(
        workloads, key=lambda n: (-workloads[n].priority, depth[n], *_scarcity(workloads[n]), n)
    )


def _scarcity(w: Workload) -> tuple[int, float]:
    """Sort keys putting hard-to-fit work first: accelerators, then larger requests."""
    r = w.resources
    return -r.accelerators, -(r.cpu_millicores / 1000 + r.memory_mb / 1024)
