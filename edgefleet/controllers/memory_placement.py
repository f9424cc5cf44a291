"""The in-memory `PlacementStore`: the workloads, the nodes as placement sees them, the
placement in force with its version, and the migrations in dictionaries, for the lab (one
process, one simulated clock).

Its owner keeps the nodes current as the server's heartbeats and liveness controller keep
node health: `set_liveness` (a verdict, and when it came), `cordon` (a drain). It reports
no copies of replicas, so a move off a live node is published as a cold move, as the server
does for a replica without a healthy copy to hand over (the lab does not model planned
migrations). The optimistic version check of the SQL store becomes an identity check: a
plan made on a placement that another tick changed since it was loaded is refused with the
same `Conflict`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime

from edgefleet.controllers.placement import Applied, PlacementOutcome, PlacementView
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.migration import Migration
from edgefleet.core.workloads.move import PlacementMove
from edgefleet.core.workloads.placement import Node, Placement
from edgefleet.core.workloads.placement_record import PlacementRecord
from edgefleet.core.workloads.workload import Workload
from edgefleet.errors import Conflict


class MemoryPlacementStore:
    def __init__(
        self,
        workloads: Sequence[Workload],
        nodes: Iterable[Node],
        placement: Placement | None = None,
    ) -> None:
        self._workloads = {w.name: w for w in workloads}
        self._nodes = {n.id: n for n in nodes}
        self._since: dict[str, datetime] = {}
        self._drain_reasons: dict[str, str] = {}
        self.record = PlacementRecord(placement or Placement())
        self.migrations: list[Migration] = []  # queued (the lab runs none)
        self.history: list[PlacementMove] = []

    @property
    def placement(self) -> Placement:
        return self.record.placement

    def node(self, node_id: str) -> Node | None:
        return self._nodes.get(node_id)

    def set_liveness(self, node_id: str, liveness: Liveness, since: datetime) -> None:
        """The node's verdict changed at `since`."""
        node = self._nodes[node_id]
        self._nodes[node_id] = replace(node, liveness=liveness)
        self._since[node_id] = since

    def cordon(self, node_id: str, reason: str) -> None:
        """A drain: placement takes no more replicas there and moves its replicas off."""
        self._nodes[node_id] = replace(self._nodes[node_id], schedulable=False)
        self._drain_reasons[node_id] = reason

    # The port.

    def load(self, now: datetime) -> PlacementView | None:
        if not self._workloads and not self.record.placement.assignments:
            return None
        return PlacementView(
            workloads=self._workloads,
            nodes=list(self._nodes.values()),
            liveness_since=self._since,
            record=self.record,
            migrations=tuple(self.migrations),
            drain_reasons=self._drain_reasons,
        )

    def apply(self, view: PlacementView, outcome: PlacementOutcome, now: datetime) -> Applied:
        if self.record is not view.record:
            raise Conflict("the placement was changed concurrently; retry",
                           code="concurrent_update")  # fmt: skip
        self.record = PlacementRecord(outcome.plan.placement, outcome.decisions, now,
                                      self.record.version + 1)  # fmt: skip
        self.history.extend(outcome.moves)
        busy = {(m.workload, m.replica) for m in self.migrations}
        created = [m for m in outcome.migrations if (m.workload, m.replica) not in busy]
        self.migrations.extend(created)
        return Applied(tuple(created), tuple(sorted(outcome.affected)))
