"""The history of replica moves, bounded per workload (`core.placement_move`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select

from edgefleet.core.workloads.move import MOVES_KEPT_PER_WORKLOAD, MoveKind, PlacementMove
from edgefleet.store.tables import placement_moves


def _to_move(row: Row[Any]) -> PlacementMove:
    return PlacementMove(
        workload=row.workload,
        replica=row.replica,
        from_node_id=row.from_node_id,
        to_node_id=row.to_node_id,
        kind=MoveKind(row.kind),
        reason=row.reason,
        generation=row.generation,
        at=row.at,
    )


class PlacementMoveRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def record(self, moves: list[PlacementMove]) -> None:
        """Append `moves`, then drop each touched workload's moves beyond the newest kept."""
        if not moves:
            return
        self._c.execute(insert(placement_moves), [{
            "workload": m.workload, "replica": m.replica, "from_node_id": m.from_node_id,
            "to_node_id": m.to_node_id, "kind": m.kind.value, "reason": m.reason,
            "generation": m.generation, "at": m.at,
        } for m in moves])  # fmt: skip
        for workload in sorted({m.workload for m in moves}):
            oldest_kept = self._c.execute(
                select(placement_moves.c.id)
                .where(placement_moves.c.workload == workload)
                .order_by(placement_moves.c.id.desc())
                .offset(MOVES_KEPT_PER_WORKLOAD - 1)
                .limit(1)
            ).scalar()
            if oldest_kept is not None:
                self._c.execute(delete(placement_moves).where(
                    placement_moves.c.workload == workload, placement_moves.c.id < oldest_kept
                ))  # fmt: skip

    def of_workload(self, workload: str, limit: int) -> list[PlacementMove]:
        """The workload's newest `limit` moves, newest first."""
        rows = self._c.execute(
            select(placement_moves)
            .where(placement_moves.c.workload == workload)
            .order_by(placement_moves.c.id.desc())
            .limit(limit)
        )
        return [_to_move(r) for r in rows]

    def forget(self, workload: str) -> None:
        """Drop a deleted workload's history."""
        self._c.execute(delete(placement_moves).where(placement_moves.c.workload == workload))
