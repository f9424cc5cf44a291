"""Workloads and the placement in force (one row, updated with an optimistic version)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, update

from edgefleet.core.updates.release import Ref
from edgefleet.core.workloads.placement import Placement
from edgefleet.core.workloads.placement_record import (
    PlacementRecord,
    assignments_from_json,
    assignments_to_json,
)
from edgefleet.core.workloads.record import WorkloadRecord
from edgefleet.errors import Conflict, NotFound
from edgefleet.store.tables import placement_state, workloads

PLACEMENT_ROW = "fleet"


def _to_workload(row: Row[Any]) -> WorkloadRecord:
    return WorkloadRecord(
        name=row.name,
        document=row.document,
        releases=tuple(Ref(str(r[0]), str(r[1])) for r in row.releases),
        created_by=row.created_by,
        created_at=row.created_at,
        updated_by=row.updated_by,
        updated_at=row.updated_at,
        version=row.version,
    )


def _values(record: WorkloadRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "document": dict(record.document),
        "releases": [[r.name, r.version] for r in record.releases],
        "created_by": record.created_by,
        "created_at": record.created_at,
        "updated_by": record.updated_by,
        "updated_at": record.updated_at,
        "version": record.version,
    }


class WorkloadRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def find(self, name: str) -> WorkloadRecord | None:
        row = self._c.execute(select(workloads).where(workloads.c.name == name)).first()
        return _to_workload(row) if row else None

    def get(self, name: str) -> WorkloadRecord:
        record = self.find(name)
        if record is None:
            raise NotFound(f"no workload named {name!r}", code="workload_not_found")
        return record

    def all(self) -> list[WorkloadRecord]:
        rows = self._c.execute(select(workloads).order_by(workloads.c.name))
        return [_to_workload(r) for r in rows]

    def insert(self, record: WorkloadRecord) -> WorkloadRecord:
        if self.find(record.name) is not None:
            raise Conflict(f"workload {record.name!r} already exists", code="workload_exists")
        self._c.execute(insert(workloads).values(**_values(record)))
        return record

    def update(self, record: WorkloadRecord) -> WorkloadRecord:
        """Write `record` if nobody changed it since it was read (optimistic check)."""
        values = _values(record)
        values["version"] = record.version + 1
        result = self._c.execute(
            update(workloads)
            .where(workloads.c.name == record.name, workloads.c.version == record.version)
            .values(**values)
        )
        if result.rowcount != 1:
            raise Conflict(f"workload {record.name} was changed concurrently; retry",
                           code="concurrent_update")  # fmt: skip
        return self.get(record.name)

    def delete(self, name: str) -> None:
        self.get(name)
        self._c.execute(delete(workloads).where(workloads.c.name == name))


class PlacementRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def load(self) -> PlacementRecord:
        row = self._c.execute(
            select(placement_state).where(placement_state.c.name == PLACEMENT_ROW)
        ).first()
        if row is None:
            return PlacementRecord()
        return PlacementRecord(
            assignments_from_json(row.assignments, row.generation),
            tuple(row.decisions),
            row.computed_at,
            row.version,
        )

    def save(
        self,
        previous: PlacementRecord,
        placement: Placement,
        decisions: Sequence[Mapping[str, Any]],
        computed_at: datetime,
    ) -> PlacementRecord:
        """Replace the placement read as `previous` (optimistic: Conflict if it changed)."""
        values = {
            "generation": placement.generation,
            "assignments": assignments_to_json(placement),
            "decisions": [dict(d) for d in decisions],
            "computed_at": computed_at,
            "version": previous.version + 1,
        }
        if previous.version == 0:
            exists = self._c.execute(
                select(placement_state.c.name).where(placement_state.c.name == PLACEMENT_ROW)
            ).first()
            if exists is not None:
                raise Conflict("the placement was changed concurrently; retry",
                               code="concurrent_update")  # fmt: skip
            self._c.execute(insert(placement_state).values(name=PLACEMENT_ROW, **values))
        else:
            result = self._c.execute(
                update(placement_state)
                .where(placement_state.c.name == PLACEMENT_ROW,
                       placement_state.c.version == previous.version)
                .values(**values)
            )  # fmt: skip
            if result.rowcount != 1:
                raise Conflict("the placement was changed concurrently; retry",
                               code="concurrent_update")  # fmt: skip
        return PlacementRecord(placement, tuple(decisions), computed_at, previous.version + 1)
