"""Node health: each device's liveness, reported replicas, power and forecast drain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from edgefleet.core.liveness import liveness_from_dict, liveness_to_dict
from edgefleet.core.node_health import (
    NodeHealth,
    drain_from_dict,
    drain_to_dict,
    samples_from_json,
    samples_to_json,
)
from edgefleet.store.tables import node_health


def _to_health(row: Row[Any]) -> NodeHealth:
    return NodeHealth(
        device_id=row.device_id,
        liveness=liveness_from_dict(row.liveness),
        replicas=tuple(row.replicas),
        checkpoints=tuple(row.checkpoints),
        node=row.node,
        samples=tuple(samples_from_json(row.samples)),
        drain=drain_from_dict(row.drain),
        reported_at=row.reported_at,
    )


def _values(health: NodeHealth) -> dict[str, Any]:
    return {
        "device_id": health.device_id,
        "liveness": liveness_to_dict(health.liveness),
        "state": health.liveness.state.value,
        "replicas": [dict(r) for r in health.replicas],
        "checkpoints": [dict(c) for c in health.checkpoints],
        "node": dict(health.node),
        "samples": samples_to_json(health.samples),
        "drain": drain_to_dict(health.drain),
        "reported_at": health.reported_at,
    }


class NodeHealthRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def find(self, device_id: str) -> NodeHealth | None:
        row = self._c.execute(
            select(node_health).where(node_health.c.device_id == device_id)
        ).first()
        return _to_health(row) if row else None

    def all(self) -> dict[str, NodeHealth]:
        rows = self._c.execute(select(node_health).order_by(node_health.c.device_id))
        return {row.device_id: _to_health(row) for row in rows}

    def put_report(self, health: NodeHealth) -> None:
        """Store what a heartbeat brought (insert or replace the device's row)."""
        values = _values(health)
        result = self._c.execute(
            update(node_health).where(node_health.c.device_id == health.device_id).values(**values)
        )
        if result.rowcount == 0:
            self._c.execute(insert(node_health).values(**values))

    def put_judgement(self, health: NodeHealth, read_reported_at: datetime | None) -> bool:
        """Store the controllers' liveness verdict and drain, unless a heartbeat arrived
        since the row was read (then the next tick judges again). True when written."""
        values = _values(health)
        condition = (
            node_health.c.reported_at.is_(None)
            if read_reported_at is None
            else node_health.c.reported_at == read_reported_at
        )
        result = self._c.execute(
            update(node_health)
            .where(node_health.c.device_id == health.device_id, condition)
            .values(liveness=values["liveness"], state=values["state"], drain=values["drain"])
        )
        return result.rowcount == 1
