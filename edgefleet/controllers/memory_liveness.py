"""The in-memory `LivenessStore`: node health in a dictionary, for the lab (one process, one
simulated clock). Its owner stores heartbeats with `put_report`, as the server's device
link does; the controller's judgements go through the port with the same guard as the SQL
store's: refused when a heartbeat arrived since the node was read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from edgefleet.controllers.liveness import Marker, marker_of
from edgefleet.core.workloads.node_health import NodeHealth


class MemoryLivenessStore:
    def __init__(self) -> None:
        self._nodes: dict[str, NodeHealth] = {}

    def get(self, device_id: str) -> NodeHealth | None:
        return self._nodes.get(device_id)

    def put_report(self, health: NodeHealth) -> None:
        """Store what a heartbeat brought (insert or replace the node)."""
        self._nodes[health.device_id] = health

    def forget(self, device_id: str) -> None:
        self._nodes.pop(device_id, None)

    # The port.

    def markers(self) -> Mapping[str, Marker]:
        return {device_id: marker_of(h) for device_id, h in self._nodes.items()}

    def find_many(self, device_ids: Sequence[str]) -> Mapping[str, NodeHealth]:
        nodes = self._nodes
        return {d: nodes[d] for d in device_ids if d in nodes}

    def put_judgement(self, health: NodeHealth, read_reported_at: datetime | None) -> bool:
        stored = self._nodes.get(health.device_id)
        if stored is None or stored.reported_at != read_reported_at:
            return False
        self._nodes[health.device_id] = replace(stored, liveness=health.liveness,
                                                drain=health.drain)  # fmt: skip
        return True
