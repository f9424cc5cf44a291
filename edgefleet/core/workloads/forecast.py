"""Forecast nodes: a node as a migration destination should see it over the coming horizon,
not only as it is now.

Placement scores a node by what `Node` says: its used CPU (headroom and the load curve)
and its battery (the energy term: charge now and the hours until it is empty). A node
whose load is climbing or whose battery drains fast looks fine *now* and is a poor place to
move a replica to: the replica has to move again within the hour. `forecast_node` rewrites
those fields from the node's smoothed trends (`failover.fit_trend`, Holt's linear method,
over the heartbeats' `cpu_load` fraction and `battery_pct`):

    used CPU      the largest of the load now, the load forecast at the horizon and, when
                  given, the peak its learned weekly profile expects over the horizon
    battery_pct   the smaller of the charge now and the charge forecast at the horizon
    empty at      when the battery trend reaches 0 %, if sooner than what the node said

so the unchanged scoring prefers destinations that still have room and charge at the end
of the horizon. Off by default (`horizon_s` 0 leaves the node as it is).

The measured load is the whole host's, replicas included, while `Node.used_cpu_millicores`
is work the plan does not manage: the plan counts its own replicas by their requests. So
the control plane passes `placed_cpu_millicores`, what the replicas placed on the node
request, and the forecast holds only the rest; counted twice, a replica's own load would
push it off its node (and then off the next one).

>>> from datetime import UTC, datetime
>>> from edgefleet.core.workloads.failover import Trend
>>> now = datetime(2026, 1, 1, tzinfo=UTC)
>>> node = Node("n1", "r", "z", cpu_millicores=1000, memory_mb=512)
>>> rising = Trend(level=0.4, slope_per_s=0.1 / 3600, at=now)  # +10 points an hour
>>> forecast_node(node, {"cpu_load": rising}, now, horizon_s=3 * 3600).used_cpu_millicores
700
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta

from edgefleet.core.workloads.failover import Trend
from edgefleet.core.workloads.terms import Node, PowerSource
from edgefleet.errors import InvalidInput

LOAD_METRIC = "cpu_load"  # fraction of the node's CPU in use, 0..1
BATTERY_METRIC = "battery_pct"
DEFAULT_FORECAST_HORIZON_S = 3600.0
MAX_EMPTY_FORECAST_S = 365 * 86400.0  # a slower drain than this is no drain


def forecast_node(
    node: Node,
    trends: Mapping[str, Trend],
    now: datetime,
    horizon_s: float,
    *,
    seasonal_peak_load: float | None = None,
    placed_cpu_millicores: int = 0,
) -> Node:
    """`node` with its load and battery as forecast over `[now, now + horizon_s]`.
    `seasonal_peak_load`, when known, is the highest CPU load (0..1) the node's learned
    weekly profile (`core.telemetry.quiet_hours`, CPU alone) expects within the horizon:
    a trend cannot see a shop opening before it opens. `placed_cpu_millicores`: CPU the plan
    counts on this node itself (its replicas' requests), taken off the forecast load.

    >>> from datetime import UTC, datetime
    >>> now = datetime(2026, 1, 1, tzinfo=UTC)
    >>> node = Node("n1", "r", "z", cpu_millicores=2000, memory_mb=512)
    >>> steady = Trend(level=0.75, slope_per_s=0.0, at=now)  # a replica of 1500m, busy
    >>> forecast_node(node, {"cpu_load": steady}, now, 3600,
    ...               placed_cpu_millicores=1500).used_cpu_millicores
    0
    """
    if horizon_s < 0:
        raise InvalidInput("forecast horizon_s must not be negative")
    if placed_cpu_millicores < 0:
        raise InvalidInput("forecast placed_cpu_millicores must not be negative")
    if horizon_s == 0:
        return node
    end = now + timedelta(seconds=horizon_s)
    changes: dict[str, object] = {}
    load = trends.get(LOAD_METRIC)
    peaks = [] if seasonal_peak_load is None else [seasonal_peak_load]
    if load is not None:
        peaks += [load.value_at(now), load.value_at(end)]
    if peaks:
        peak = min(max(*peaks, 0.0), 1.0)
        held = round(peak * node.cpu_millicores) - placed_cpu_millicores
        changes["used_cpu_millicores"] = max(node.used_cpu_millicores, held)
    battery = trends.get(BATTERY_METRIC)
    if battery is not None and node.power_source is not PowerSource.MAINS:
        at_end = min(max(battery.value_at(end), 0.0), 100.0)
        now_pct = node.battery_pct if node.battery_pct is not None else battery.value_at(now)
        changes["battery_pct"] = min(now_pct, at_end)
        if battery.slope_per_s < 0:
            empty_in_s = max(0.0, battery.level) / -battery.slope_per_s
            if empty_in_s <= MAX_EMPTY_FORECAST_S:
                empty = battery.at + timedelta(seconds=empty_in_s)
                known = node.battery_empty_at
                changes["battery_empty_at"] = empty if known is None else min(known, empty)
    return replace(node, **changes)  # type: ignore[arg-type]
