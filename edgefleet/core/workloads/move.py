"""Placement moves: the history of where each replica went, when and why.

Every time the control plane gives a replica a node (first placement, failover, rebalance,
a migration's commit) it records one `PlacementMove` in the same transaction as the new
placement. The store keeps the newest `MOVES_KEPT_PER_WORKLOAD` of each workload.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from edgefleet.core.workloads.failure_detector import Liveness

MOVES_KEPT_PER_WORKLOAD = 200


class MoveKind(StrEnum):
    PLACED = "placed"  # from nowhere: first placement, or a backfill of an unplaced replica
    FAILOVER = "failover"  # off a dead or suspect node
    REBALANCE = "rebalance"  # off a live node, cold (no healthy copy to hand over)
    MIGRATION = "migration"  # a planned migration committed on its target


@dataclass(frozen=True)
class PlacementMove:
    workload: str
    replica: int
    from_node_id: str | None
    to_node_id: str
    kind: MoveKind
    reason: str
    generation: int
    at: datetime


def classify_move(from_node_id: str | None, source: Liveness | None) -> MoveKind:
    """What kind of move the placement controller made, from the source node's liveness.

    >>> classify_move("d-1", Liveness.DEAD)
    <MoveKind.FAILOVER: 'failover'>
    """
    if from_node_id is None:
        return MoveKind.PLACED
    return MoveKind.REBALANCE if source is Liveness.ALIVE else MoveKind.FAILOVER
