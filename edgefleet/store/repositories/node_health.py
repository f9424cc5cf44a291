"""Node health: each device's liveness, reported replicas, power and forecast drain."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    String,
    bindparam,
    delete,
    insert,
    select,
    type_coerce,
    update,
)

from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.liveness import liveness_from_dict, liveness_to_dict
from edgefleet.core.workloads.node_health import (
    NodeHealth,
    drain_from_dict,
    drain_to_dict,
    samples_from_json,
    samples_to_json,
)
from edgefleet.store.repositories.devices import ID_CHUNK
from edgefleet.store.tables import node_health

_SEVERITY = (Liveness.ALIVE, Liveness.SUSPECT, Liveness.DEAD)
# Statements each heartbeat or controller tick runs, built once (see repositories.devices).
_FIND = select(node_health).where(node_health.c.device_id == bindparam("b_id"))
# reported_at as the driver returns it (a string on SQLite): compared, never read, so not
# converted (half of the query's cost over 10,000 rows).
_MARKERS = select(node_health.c.device_id, type_coerce(node_health.c.reported_at, String),
                  node_health.c.state)  # fmt: skip
_PUT_REPORT = (
    update(node_health)
    .where(node_health.c.device_id == bindparam("b_id"))
    .values({c: bindparam(f"b_{c.name}", type_=c.type)
             for c in node_health.c if c.name != "device_id"})
)  # fmt: skip


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

    def forget(self, device_id: str) -> None:
        """Drop what liveness knew of a device that is deleted."""
        self._c.execute(delete(node_health).where(node_health.c.device_id == device_id))

    def find(self, device_id: str) -> NodeHealth | None:
        row = self._c.execute(_FIND, {"b_id": device_id}).first()
        return _to_health(row) if row else None

    def all(self) -> dict[str, NodeHealth]:
        rows = self._c.execute(select(node_health).order_by(node_health.c.device_id))
        return {row.device_id: _to_health(row) for row in rows}

    def markers(self) -> dict[str, tuple[object, str]]:
        """(reported_at, state) of every node: what changes when a heartbeat or a verdict
        is stored, read without decoding the rest of the row. reported_at is an opaque
        token (the driver's value): equal when the timestamp is."""
        rows = self._c.execute(_MARKERS)
        return {row[0]: (row[1], row[2]) for row in rows}

    def find_many(self, device_ids: Sequence[str]) -> dict[str, NodeHealth]:
        out: dict[str, NodeHealth] = {}
        for start in range(0, len(device_ids), ID_CHUNK):
            chunk = list(device_ids[start : start + ID_CHUNK])
            rows = self._c.execute(select(node_health).where(node_health.c.device_id.in_(chunk)))
            out.update({row.device_id: _to_health(row) for row in rows})
        return out

    def put_report(self, health: NodeHealth) -> None:
        """Store what a heartbeat brought (insert or replace the device's row)."""
        values = _values(health)
        params = {f"b_{k}": v for k, v in values.items() if k != "device_id"}
        result = self._c.execute(_PUT_REPORT, {"b_id": health.device_id, **params})
        if result.rowcount == 0:
            self._c.execute(insert(node_health).values(**values))

    def put_judgement(self, health: NodeHealth, read_reported_at: datetime | None) -> bool:
        """Store the controllers' liveness verdict and drain, unless a heartbeat arrived
        since the row was read (then the next tick judges again), or the stored verdict is
        already worse than this one: without a heartbeat a verdict only worsens, so a worse
        one stored meanwhile is a Will's (`put_liveness`). True when written."""
        values = _values(health)
        condition = (
            node_health.c.reported_at.is_(None)
            if read_reported_at is None
            else node_health.c.reported_at == read_reported_at
        )
        rank = _SEVERITY.index(health.state)
        not_worse = node_health.c.state.in_([s.value for s in _SEVERITY[: rank + 1]])
        result = self._c.execute(
            update(node_health)
            .where(node_health.c.device_id == health.device_id, condition, not_worse)
            .values(liveness=values["liveness"], state=values["state"], drain=values["drain"])
        )
        return result.rowcount == 1

    def put_liveness(self, health: NodeHealth) -> None:
        """Store a node's liveness alone (what a Will changed), leaving what its last
        heartbeat brought as it is."""
        values = _values(health)
        self._c.execute(
            update(node_health)
            .where(node_health.c.device_id == health.device_id)
            .values(liveness=values["liveness"], state=values["state"])
        )
