"""Each node's metric trends, fitted once per new set of samples.

The liveness controller forecasts drains from a node's trends on every tick. Fitting them
(`core.workloads.nodes.trends_of`, Holt over up to 120 samples) is the costly part, and a
node's samples change only with its heartbeats, so one `NodeTrends` per process keeps each
node's trends with the samples they came from, and every reader shares it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from edgefleet.core.workloads.failover import Trend
from edgefleet.core.workloads.node_health import NodeHealth, Sample
from edgefleet.core.workloads.nodes import trends_of


class NodeTrends:
    """Device -> the samples its trends were fitted from, and those trends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the API's threads read it beside the controllers
        self._fitted: dict[str, tuple[tuple[Sample, ...], Mapping[str, Trend]]] = {}

    def of(self, health: NodeHealth) -> Mapping[str, Trend]:
        """The node's trends, fitted again only when its samples changed."""
        samples = health.samples
        with self._lock:
            cached = self._fitted.get(health.device_id)
        if cached is not None and (cached[0] is samples or cached[0] == samples):
            return cached[1]
        trends = trends_of(samples)
        with self._lock:
            self._fitted[health.device_id] = (samples, trends)
        return trends

    def forget(self, device_ids: Iterable[str]) -> None:
        """Drop the trends of nodes that are gone."""
        with self._lock:
            for device_id in device_ids:
                self._fitted.pop(device_id, None)
