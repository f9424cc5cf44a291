"""The liveness controller's SQL store (`controllers.liveness.LivenessStore`): node health
rows, read in short read transactions and judged in one write transaction each, guarded by
the row's `reported_at` so that a verdict never overwrites a heartbeat stored meanwhile (by
this replica or another)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from edgefleet.controllers.liveness import Marker
from edgefleet.core.workloads.node_health import NodeHealth
from edgefleet.store import Database


class SqlLivenessStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def markers(self) -> Mapping[str, Marker]:
        with self._db.read() as tx:
            return tx.node_health.markers()

    def find_many(self, device_ids: Sequence[str]) -> Mapping[str, NodeHealth]:
        with self._db.read() as tx:
            return tx.node_health.find_many(device_ids)

    def put_judgement(self, health: NodeHealth, read_reported_at: datetime | None) -> bool:
        with self._db.transaction() as tx:
            return tx.node_health.put_judgement(health, read_reported_at)
