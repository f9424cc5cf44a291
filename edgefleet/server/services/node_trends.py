"""Each node's metric trends, fitted once per new set of samples, and the forecast through
which placement may see its destinations.

The liveness controller forecasts drains from a node's trends on every tick; with
`placement_forecast_horizon_s` set, placement judges destinations by the same trends (the
placement controller's ticks, `placements explain`, `workloads migrate`). Fitting them
(`core.workloads.nodes.trends_of`, Holt over up to 120 samples) is the costly part, and a
node's samples change only with its heartbeats, so one `NodeTrends` per process keeps each
node's trends with the samples they came from, and every reader shares it.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from edgefleet.controllers.placement import note_forecast
from edgefleet.core.workloads.failover import Trend
from edgefleet.core.workloads.forecast import forecast_node
from edgefleet.core.workloads.node_health import NodeHealth, Sample
from edgefleet.core.workloads.nodes import trends_of
from edgefleet.core.workloads.placement import Decision, Node
from edgefleet.server.workload_settings import WorkloadSettings


class NodeTrends:
    """Device -> the samples its trends were fitted from, and those trends; of `metrics`
    only, when given (`node_trends_for`)."""

    def __init__(self, metrics: Collection[str] | None = None) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()  # the API's threads read it beside the controllers
        self._fitted: dict[str, tuple[tuple[Sample, ...], Mapping[str, Trend]]] = {}

    def of(self, health: NodeHealth) -> Mapping[str, Trend]:
        """The node's trends, fitted again only when its samples changed."""
        samples = health.samples
        with self._lock:
            cached = self._fitted.get(health.device_id)
        if cached is not None and (cached[0] is samples or cached[0] == samples):
            return cached[1]
        trends = trends_of(samples, self._metrics)
        with self._lock:
            self._fitted[health.device_id] = (samples, trends)
        return trends

    def forget(self, device_ids: Iterable[str]) -> None:
        """Drop the trends of nodes that are gone."""
        with self._lock:
            for device_id in device_ids:
                self._fitted.pop(device_id, None)


@dataclass(frozen=True)
class DestinationForecast:
    """Placement sees each node's load and battery as forecast `horizon_s` ahead."""

    horizon_s: float
    trends: NodeTrends

    def node(
        self, node: Node, health: NodeHealth, now: datetime, placed_cpu_millicores: int
    ) -> Node:
        """`node` as forecast from its health samples' trends (`core.workloads.forecast`);
        `placed_cpu_millicores`: what the replicas placed on it request (the plan counts
        them itself)."""
        return forecast_node(node, self.trends.of(health), now, self.horizon_s,
                             placed_cpu_millicores=placed_cpu_millicores)  # fmt: skip

    def noted(self, d: Decision) -> Decision:
        """`d`, its reason saying that the nodes it weighed (scores, free capacity) were
        forecast; a removal or a hold on a suspect node weighs none."""
        return note_forecast(d, self.note)

    @property
    def note(self) -> str:
        return f"nodes seen by load and battery forecast {self.horizon_s:g} s ahead"


def node_trends_for(settings: WorkloadSettings) -> NodeTrends:
    """The process's trends: of every metric while placement forecasts destinations, else
    of the drain thresholds' metrics only (the battery, by default: half the fitting)."""
    if settings.placement_forecast_horizon_s > 0:
        return NodeTrends()
    return NodeTrends({t.metric for t in settings.drain_thresholds()})


def forecast_destinations(
    settings: WorkloadSettings, trends: NodeTrends
) -> DestinationForecast | None:
    """The forecast placement uses under `settings`, None when it judges values now."""
    horizon_s = settings.placement_forecast_horizon_s
    return DestinationForecast(horizon_s, trends) if horizon_s > 0 else None
