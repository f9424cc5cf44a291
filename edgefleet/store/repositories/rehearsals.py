"""Stored rehearsal reports (`core.rehearsal_record`), the newest few per rollout name."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select

from edgefleet.core.rollouts.rehearsal_record import (
    REHEARSALS_KEPT,
    REHEARSALS_KEPT_PER_ROLLOUT,
    RehearsalRecord,
)
from edgefleet.errors import NotFound
from edgefleet.store.tables import rehearsals

_NEWEST_FIRST = (rehearsals.c.created_at.desc(), rehearsals.c.id.desc())


def _to_record(row: Row[Any], report: bool = True) -> RehearsalRecord:
    return RehearsalRecord(
        id=row.id,
        rollout=row.rollout,
        release=row.release,
        outcome=row.outcome,
        report=row.report if report else {},
        size_bytes=row.size_bytes,
        created_by=row.created_by,
        created_at=row.created_at,
    )


class RehearsalRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def insert(self, record: RehearsalRecord) -> None:
        """Store `record`, then drop what falls beyond the newest kept (per rollout name and
        in all)."""
        self._c.execute(insert(rehearsals).values(
            id=record.id, rollout=record.rollout, release=record.release,
            outcome=record.outcome, report=dict(record.report), size_bytes=record.size_bytes,
            created_by=record.created_by, created_at=record.created_at,
        ))  # fmt: skip
        same_name = select(rehearsals.c.id).where(rehearsals.c.rollout == record.rollout)
        for query, kept in ((same_name, REHEARSALS_KEPT_PER_ROLLOUT),
                            (select(rehearsals.c.id), REHEARSALS_KEPT)):  # fmt: skip
            beyond = self._c.execute(query.order_by(*_NEWEST_FIRST).offset(kept)).scalars().all()
            if beyond:
                self._c.execute(delete(rehearsals).where(rehearsals.c.id.in_(beyond)))

    def get(self, rehearsal_id: str) -> RehearsalRecord:
        row = self._c.execute(select(rehearsals).where(rehearsals.c.id == rehearsal_id)).first()
        if row is None:
            raise NotFound(f"no rehearsal {rehearsal_id!r}", code="rehearsal_not_found")
        return _to_record(row)

    def newest(self, rollout: str | None, limit: int) -> list[RehearsalRecord]:
        """Newest first, without their reports; only those of `rollout` when given."""
        columns = [c for c in rehearsals.c if c.name != "report"]
        query = select(*columns).order_by(*_NEWEST_FIRST).limit(limit)
        if rollout is not None:
            query = query.where(rehearsals.c.rollout == rollout)
        return [_to_record(r, report=False) for r in self._c.execute(query)]
