"""Placement nodes from devices: what `place` needs to know about each device, read from its
record, its reported inventory and power, its liveness, and whether it is being drained.

    capacity     hardware.cpu_count x 1000 millicores, hardware.memory_mb; accelerators from
                 hardware.accelerators (count, and the first one's kind)
    region/zone  the reported location (`--region`, `--zone`), else the labels `region` and
                 `zone`; a node without a region is in region `default`, without a zone in
                 its region's name
    residency    the label `residency` (e.g. `residency=eu`); a node without it satisfies no
                 residency constraint
    energy       the heartbeat's `node.power_source` and `node.battery_pct`
    used         resources held by migration copies the placement does not manage
    schedulable  False while a forecast drain (`update_drain`) cordons it

Drain: battery charge and CPU load are sampled from heartbeats; `update_drain` smooths them
with `fit_trend` and asks `decide_drain` whether a threshold is crossed within the horizon.
A drain is sticky: it ends only when the forecast crossing moves beyond twice the horizon (or
away), so a noisy trend does not cordon and release a node on alternate ticks. While the
trends stay (no new samples), `drain_changes_at` says when the drain would next start or end.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from edgefleet.core.workloads.failover import DrainThreshold, Trend, decide_drain, fit_trend
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.node_health import DrainState, Sample
from edgefleet.core.workloads.terms import Node, PowerSource
from edgefleet.core.workloads.workload import GeoPoint

DEFAULT_REGION = "default"
RESIDENCY_LABEL = "residency"


@dataclass(frozen=True)
class NodeFacts:
    """Everything about one device that placement reads."""

    id: str
    labels: Mapping[str, str]
    inventory: Mapping[str, Any]
    liveness: Liveness = Liveness.ALIVE
    reliability: float = 1.0
    power: Mapping[str, Any] = field(default_factory=dict)  # the heartbeat's `node` section
    draining: bool = False
    used_cpu_millicores: int = 0
    used_memory_mb: int = 0


def region_and_zone(labels: Mapping[str, str], inventory: Mapping[str, Any]) -> tuple[str, str]:
    location = inventory.get("location") or {}
    region = location.get("region") or labels.get("region") or DEFAULT_REGION
    zone = location.get("zone") or labels.get("zone") or region
    return str(region), str(zone)


def node_from_facts(facts: NodeFacts) -> Node:
    """The placement `Node` of one device."""
    hardware = facts.inventory.get("hardware") or {}
    location = facts.inventory.get("location") or {}
    region, zone = region_and_zone(facts.labels, facts.inventory)
    accelerators = [str(a) for a in hardware.get("accelerators") or []]
    lat, lon = location.get("latitude"), location.get("longitude")
    source = facts.power.get("power_source")
    battery = facts.power.get("battery_pct")
    return Node(
        id=facts.id,
        region=region,
        zone=zone,
        cpu_millicores=max(1, int(hardware.get("cpu_count") or 1) * 1000),
        memory_mb=max(1, int(hardware.get("memory_mb") or 1)),
        labels=dict(facts.labels),
        residency=facts.labels.get(RESIDENCY_LABEL),
        location=None if lat is None or lon is None else GeoPoint(float(lat), float(lon)),
        accelerators=len(accelerators),
        accelerator_kind=accelerators[0] if accelerators else None,
        used_cpu_millicores=facts.used_cpu_millicores,
        used_memory_mb=facts.used_memory_mb,
        power_source=PowerSource(source) if source in set(PowerSource) else PowerSource.MAINS,
        battery_pct=None if battery is None else float(battery),
        reliability=facts.reliability,
        liveness=facts.liveness,
        schedulable=not facts.draining,
    )


# -- drains ------------------------------------------------------------------------------


def trends_of(
    samples: Sequence[Sample], metrics: Collection[str] | None = None
) -> dict[str, Trend]:
    """A smoothed trend per metric that has at least two samples (of `metrics` only, when
    given: a drain reads the metrics of its thresholds)."""
    by_metric: dict[str, list[tuple[datetime, float]]] = {}
    for at, values in samples:
        for metric, value in values.items():
            if metrics is None or metric in metrics:
                by_metric.setdefault(metric, []).append((at, value))
    trends = {}
    for metric, series in by_metric.items():
        trend = fit_trend(sorted(series))
        if trend is not None:
            trends[metric] = trend
    return trends


def update_drain(
    previous: DrainState,
    node_id: str,
    samples: Sequence[Sample],
    now: datetime,
    horizon_s: float,
    thresholds: Sequence[DrainThreshold],
) -> DrainState:
    """Whether the node is drained now, from the forecast of its sampled metrics."""
    return drain_from_trends(previous, node_id, trends_of(samples), now, horizon_s,
                             thresholds)  # fmt: skip


def drain_from_trends(
    previous: DrainState,
    node_id: str,
    trends: Mapping[str, Trend],
    now: datetime,
    horizon_s: float,
    thresholds: Sequence[DrainThreshold],
) -> DrainState:
    """`update_drain` from trends already fitted (they change only with new samples, so a
    controller that judges every node every second fits them once per heartbeat)."""
    decision = decide_drain(node_id, trends, now, horizon_s, thresholds)
    if decision.drain:
        since = previous.since if previous.draining else now
        return DrainState(True, decision.reason, since, decision.crosses_at)
    if previous.draining:
        crossing = decision.crosses_at
        if crossing is not None and (crossing - now).total_seconds() <= 2 * horizon_s:
            return DrainState(True, previous.reason, previous.since, crossing)
        return DrainState(False, f"drain ended: {decision.reason}", now, crossing)
    return DrainState(False, decision.reason, previous.since, decision.crosses_at)


def drain_changes_at(
    previous: DrainState,
    node_id: str,
    trends: Mapping[str, Trend],
    now: datetime,
    horizon_s: float,
    thresholds: Sequence[DrainThreshold],
) -> datetime | None:
    """The first moment from `now` at which `drain_from_trends` over these `trends` would
    start or end the drain `previous`; None: not while the trends stay.

    The forecast crossing does not move with time, only its distance: a drain that holds
    now holds while the trends stay, and one that has not started starts when the crossing
    comes within the horizon.
    """
    drain = drain_from_trends(previous, node_id, trends, now, horizon_s, thresholds)
    if drain.draining is not previous.draining:
        return now
    crossing = decide_drain(node_id, trends, now, horizon_s, thresholds).crosses_at
    if previous.draining or crossing is None:
        return None
    at = crossing - timedelta(seconds=horizon_s)
    while (crossing - at).total_seconds() > horizon_s:  # rounding, to the microsecond
        at += timedelta(microseconds=1)
    return max(at, now)
